"""Named, registered domain rules: what `data_sources.yml` cannot say as plain config.

A rule maps input expressions to a `RuleOutput`: the new value, and reasons (a string
expression, null where the row is fine) for rows the rule rejects. Rules are vectorised
polars expressions; they may read other columns of the row by name.

`data_sources.yml` refers to them by name, as a column's `rules: [...]` (input: the
column's current value) or `derive: {rule: ..., from: [...]}` (inputs: those columns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from workdatahub.cleansing.values import INVISIBLE


@dataclass(frozen=True)
class RuleOutput:
    value: pl.Expr
    errors: tuple[pl.Expr, ...] = field(default_factory=tuple)


RuleFn = Callable[..., RuleOutput]
RULES: dict[str, RuleFn] = {}


def rule(name: str) -> Callable[[RuleFn], RuleFn]:
    def register(fn: RuleFn) -> RuleFn:
        if name in RULES:
            raise ValueError(f"rule {name!r} registered twice")
        RULES[name] = fn
        return fn

    return register


def _reason(condition: pl.Expr, text: str) -> pl.Expr:
    return pl.when(condition).then(pl.lit(text)).otherwise(pl.lit(None, dtype=pl.String))


# -- generic --------------------------------------------------------------------------------


@rule("copy")
def copy(value: pl.Expr) -> RuleOutput:
    """The source value as it is (trimmed), before that column's own rules run."""
    return RuleOutput(value)


@rule("month_from_year_and_month")
def month_from_year_and_month(year: pl.Expr, month: pl.Expr) -> RuleOutput:
    """年 + 月 -> the first day of that month."""
    full_year = pl.when(year.is_between(0, 99)).then(year + 2000).otherwise(year)  # 24: 2024
    ok = full_year.is_between(1990, 2099) & month.is_between(1, 12)
    value = pl.when(ok).then(pl.date(full_year.clip(1990, 2099), month.clip(1, 12), 1))
    bad = year.is_not_null() & month.is_not_null() & ~ok
    return RuleOutput(value, (_reason(bad, "年/月 do not form a valid month"),))


# -- annuity: plan and portfolio codes ----------------------------------------------------

PLAN_CODE_CORRECTIONS = {"1P0290": "P0290", "1P0807": "P0807"}
COLLECTIVE, SINGLE = "集合计划", "单一计划"
OCCUPATIONAL = ("职年受托", "职年投资")


@rule("plan_code_corrections")
def plan_code_corrections(value: pl.Expr) -> RuleOutput:
    """Known typos in plan codes: 1P0290 -> P0290, 1P0807 -> P0807."""
    return RuleOutput(value.replace(PLAN_CODE_CORRECTIONS))


@rule("plan_code_default")
def plan_code_default(value: pl.Expr) -> RuleOutput:
    """Empty plan code: AN001 for 集合计划, AN002 for 单一计划; any other plan type rejects."""
    plan_type = pl.col("plan_type")
    filled = (
        pl.when(value.is_null() & (plan_type == COLLECTIVE))
        .then(pl.lit("AN001"))
        .when(value.is_null() & (plan_type == SINGLE))
        .then(pl.lit("AN002"))
        .otherwise(value)
    )
    bad = value.is_null() & ~plan_type.is_in([COLLECTIVE, SINGLE]).fill_null(False)
    return RuleOutput(
        filled, (_reason(bad, "plan code empty and plan type is neither 集合计划 nor 单一计划"),)
    )


def _without_leading(letter: str, value: pl.Expr) -> pl.Expr:
    """`value` without one leading `letter`, trimmed again (`F 123` -> `123`); a code that was
    the letter alone is then empty: null, so a default applies (never an empty code)."""
    rest = value.str.strip_prefix(letter).str.strip_chars()
    return pl.when(rest != "").then(rest)


@rule("strip_leading_f")
def strip_leading_f(value: pl.Expr) -> RuleOutput:
    """Portfolio codes: one leading `F` is dropped (F12345 -> 12345)."""
    return RuleOutput(_without_leading("F", value))


@rule("portfolio_code_default")
def portfolio_code_default(value: pl.Expr) -> RuleOutput:
    """Empty portfolio code: QTAN003 for 职年受托/职年投资, else QTAN001 (集合) / QTAN002 (单一)."""
    business = pl.col("business_type")
    plan_type = pl.col("plan_type")
    filled = (
        pl.when(value.is_not_null())
        .then(value)
        .when(business.is_in(OCCUPATIONAL))
        .then(pl.lit("QTAN003"))
        .when(plan_type == COLLECTIVE)
        .then(pl.lit("QTAN001"))
        .when(plan_type == SINGLE)
        .then(pl.lit("QTAN002"))
        .otherwise(None)
    )
    return RuleOutput(filled)


@rule("strip_leading_c")
def strip_leading_c(value: pl.Expr) -> RuleOutput:
    """Annuity account number: 集团企业客户号 with one leading `C` removed."""
    return RuleOutput(_without_leading("C", value))


# -- company names --------------------------------------------------------------------------

STATUS_WORDS = (
    "已转移终止", "转移终止", "已转出", "待转出", "已作废", "已终止", "保留账户",
    "转出", "终止", "保留", "存量", "本部", "未使用", "集合", "原",
)  # fmt: skip
# 原 ("formerly") is a status word only set apart: bracketed or after/before a - or _. Glued,
# it is the name's own: 原平市, 原阳县 (places), 原子 (atom), 太原 and 中原 (a name's end)
SET_APART_ONLY = ("原",)
_STATUS = "|".join(sorted(STATUS_WORDS, key=len, reverse=True))
_GLUED = "|".join(sorted(set(STATUS_WORDS) - set(SET_APART_ONLY), key=len, reverse=True))
_STATUS_END = rf"(?:[-_]?（(?:{_STATUS})）|[-_](?:{_STATUS})|(?:{_GLUED}))$"
_STATUS_START = rf"^(?:（(?:{_STATUS})）[-_]?|(?:{_STATUS})[-_]|(?:{_GLUED}))"
_TRAILING_SUFFIX = r"(?:（团托）|-养老|-福利)$"


@rule("company_name")
def company_name(value: pl.Expr) -> RuleOutput:
    """Normalise a customer's company name so the same company always reads the same.

    Remove all whitespace and invisible characters (a zero-width space); full-width ->
    half-width (NFKC) and then brackets written full-width; drop 及下属子企业; drop a
    trailing (团托), -养老 or -福利; drop status words (已转出, 存量, 本部 …) at the start or
    end: bracketed (the whole bracket: `（太原）` is a place), after or before a - or _, or
    glued to the name (all but 原, which names too begin and end with).
    """
    name = value.str.normalize("NFKC").str.replace_all(rf"(?:\s|{INVISIBLE})+", "")
    name = name.str.replace_all("(", "（", literal=True).str.replace_all(")", "）", literal=True)
    name = name.str.replace_all("及下属子企业", "", literal=True)
    for _ in range(2):  # a suffix can hide a status word behind it, and the other way round
        name = name.str.replace(_STATUS_END, "").str.replace(_TRAILING_SUFFIX, "")
    name = name.str.replace(_STATUS_START, "")
    return RuleOutput(pl.when(name == "").then(None).otherwise(name))
