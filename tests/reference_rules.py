"""A straightforward reference implementation of the data contract's rules, row by row.

Plain Python (re, unicodedata, decimal), one cell at a time, written from the contract
(/work/shared/domains.md and data_sources.yml) rather than from the vectorised code, so that
tests/test_equivalence.py can show the fast path gives the same cleaned rows and the same
rejects. It is deliberately naive: nothing is cached, nothing is vectorised. The benchmark's
naive stack (bench/naive.py) uses it as its row-wise cleansing step.

Where the contract leaves a detail open, the choice the project made is spelt out here:
- money keeps 4 decimals and rates 6, rounded half away from zero (四舍五入); a number
  beyond numeric(18,4) or numeric(10,6) is a reject, "out of range" for the column's type;
- a comma is only a thousands separator: 1-3 digits (not starting with 0), then groups of
  exactly 3 digits, then optional decimals; any other comma (`1,5`, `1.234,5`) is no number;
- a month cell also accepts an Excel date read as text (`2024-11-01 00:00:00`),
  `YYYY/MM/DD`, `YYYY.MM[.DD]` and a 5-digit Excel serial day number; years 1990-2099;
  a day must be a real day of its month (`2024-02-30` is a reject); the period drops it;
  `YYYY.1` is a reject, as ambiguous (Excel keeps the number 2024.10 as 2024.1);
- a null placeholder matches however it is typed: full width (`－`, `Ｎ/Ａ`), other capitals;
- codes and company names lose characters that show as nothing (Unicode's format
  characters: a zero-width space pasted in with them); other text keeps them;
- a number's decimals beyond the 23rd are dropped before it is rounded;
- a code cell that is an Excel date or boolean cell (as the reader writes them:
  `2024-01-01 00:00:00`, `true`, `false`) is a reject, not a code;
- 年 below 100 means 20YY;
- a derived column whose source column already failed reports nothing of its own for
  being empty (the source's reason is the row's reject, not "required value missing").
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from workdatahub.sources.spec import ColumnSpec, DomainSpec


def _visible(text: str) -> str:
    """`text` without Unicode's format characters (Cf: a zero-width space, a byte order
    mark, direction marks, a soft hyphen)."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


ROW = "_row"
EXCEL_EPOCH = date(1899, 12, 30)
MIN_YEAR, MAX_YEAR = 1990, 2099
MONEY_PLACES, MONEY_LIMIT = Decimal("0.0001"), Decimal(10) ** 14  # numeric(18,4)
RATE_PLACES, RATE_LIMIT = Decimal("0.000001"), Decimal(10) ** 4  # numeric(10,6)
INT64 = 2**63

Cell = tuple[Any, str | None]  # (value, reason it is rejected or None)


def quoted(text: str) -> str:
    return f"'{text[:60]}'"


def blank_to_null(raw: str | None, null_values: list[str]) -> str | None:
    if raw is None:
        return None
    text = raw.strip()
    folded = unicodedata.normalize("NFKC", text).strip().lower()
    placeholders = {unicodedata.normalize("NFKC", v).strip().lower() for v in null_values}
    return None if folded == "" or folded in placeholders else text


# -- parsers ------------------------------------------------------------------------------

_ASCII_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number_text(text: str) -> str | None:
    """NFKC; a currency sign dropped, with the spaces beside it, at the start (after a sign
    or an opening parenthesis) or at the end (before a closing one); accounting negatives
    `( 1.5 )`, the spaces inside the parentheses dropped; spaces before a percent sign
    dropped; thousands separators dropped, None where a comma is not one. Any other space
    stays (and makes no number)."""
    text = unicodedata.normalize("NFKC", text)
    opening = 1 if text[:1] in ("+", "-") else 0
    opening += 1 if text[opening : opening + 1] == "(" else 0
    rest = text[opening:].lstrip()
    if rest[:1] in ("¥", "$", "€", "£"):
        text = text[:opening] + rest[1:].lstrip()
    closing = 1 if text.endswith(")") else 0
    rest = text[: len(text) - closing].rstrip()
    if rest[-1:] in ("¥", "$", "€", "£"):
        text = rest[:-1].rstrip() + text[len(text) - closing :]
    if text.startswith("(") and text.endswith(")") and text[1:-1].strip():
        text = "-" + text[1:-1].strip()
    if text.endswith("%"):
        text = text[:-1].rstrip() + "%"
    if "," not in text:
        return text
    digits = text[:-1] if text.endswith("%") else text
    sign = digits[0] if digits[:1] in ("+", "-") else ""
    whole, _, decimals = digits[len(sign) :].partition(".")
    groups = whole.split(",")
    first_ok = 1 <= len(groups[0]) <= 3 and groups[0].isascii() and groups[0].isdigit()
    first_ok = first_ok and not groups[0].startswith("0")
    rest_ok = all(len(g) == 3 and g.isascii() and g.isdigit() for g in groups[1:])
    decimals_ok = decimals == "" or (decimals.isascii() and decimals.isdigit())
    if not (first_ok and rest_ok and decimals_ok):
        return None
    return text.replace(",", "")


def _decimal(text: str | None) -> Decimal | None:
    if text is None or not _ASCII_NUMBER.fullmatch(text):
        return None
    whole, dot, decimals = text.partition(".")
    if dot and len(decimals) > 23 and decimals.isdigit():  # no cell needs more: dropped
        text = f"{whole}.{decimals[:23]}"
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _fit(value: Decimal | None, places: Decimal, limit: Decimal) -> Decimal | None:
    if value is None or abs(value) >= limit:
        return None
    rounded = value.quantize(places, rounding=ROUND_HALF_UP)  # away from zero
    return rounded if abs(rounded) < limit else None


def parse_text(text: str | None) -> Cell:
    return text, None


def parse_code(text: str | None) -> Cell:
    if text is None:
        return None, None
    if re.fullmatch(r"\+?[0-9]{4,}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?", text):
        reason = "a date, not a code (Excel may have turned the code into a date)"
        return None, f"{reason}: {quoted(text)}"
    if text in ("true", "false"):
        return None, f"a TRUE/FALSE cell, not a code: {quoted(text)}"
    code = _visible(unicodedata.normalize("NFKC", text)).strip()
    whole = re.fullmatch(r"(\d+)\.0+", code)
    return (whole[1] if whole else code) or None, None


def parse_money(text: str | None) -> Cell:
    if text is None:
        return None, None
    number = _decimal(_number_text(text))
    if number is None:
        return None, f"not a number: {quoted(text)}"
    value = _fit(number, MONEY_PLACES, MONEY_LIMIT)
    return value, None if value is not None else f"out of range for numeric(18,4): {quoted(text)}"


def parse_rate(text: str | None) -> Cell:
    if text is None:
        return None, None
    number = _number_text(text)
    percent = number is not None and number.endswith("%")
    figure = _decimal(number[:-1] if number is not None and percent else number)
    if figure is None:
        return None, f"not a rate or percentage: {quoted(text)}"
    if percent or abs(figure) > 1:
        figure = figure / 100
    value = _fit(figure, RATE_PLACES, RATE_LIMIT)
    return value, None if value is not None else f"out of range for numeric(10,6): {quoted(text)}"


def parse_integer(text: str | None) -> Cell:
    if text is None:
        return None, None
    number = _number_text(text) or ""
    number = number[:-1].rstrip() if re.fullmatch(r"[+-]?\d+(\.0+)?\s*[年月日]", number) else number
    number = re.sub(r"^([+-]?\d+)\.0+$", r"\1", number)
    value = int(number) if re.fullmatch(r"[+-]?[0-9]+", number) else None
    if value is not None and not -INT64 <= value < INT64:
        value = None
    return value, None if value is not None else f"not a whole number: {quoted(text)}"


_MONTH_FORMATS: list[tuple[str, bool]] = [  # (pattern: year, month, day?; two-digit year)
    (r"(\d{4})-(\d{1,2})(?:-(\d{1,2}))?(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?", False),
    (r"(\d{4})/(\d{1,2})(?:/(\d{1,2}))?", False),
    (r"(\d{4})(\d{2})(\d{2})?", False),
    (r"(\d{4})年(\d{1,2})月(?:(\d{1,2})日)?", False),
    (r"(\d{2})年(\d{1,2})月(?:(\d{1,2})日)?", True),
    (r"(\d{4})\.(\d{1,2})(?:\.(\d{1,2}))?", False),
]


def parse_month(text: str | None) -> Cell:
    if text is None:
        return None, None
    normal = unicodedata.normalize("NFKC", text).strip()
    normal = re.sub(r"\s*([年月日/-])\s*", r"\1", normal)
    normal = re.sub(r"\s+", " ", normal)
    if re.fullmatch(r"\d{4}\.1", normal, re.ASCII):  # January, or 2024.10 stored as a number
        why = "ambiguous month (January, or October typed as a number: Excel keeps 2024.10 as "
        why += "2024.1)"
        return None, f"{why}: {quoted(text)}"
    found: tuple[int, int, int] | None = None
    for pattern, two_digit in _MONTH_FORMATS:
        match = re.fullmatch(pattern, normal, re.ASCII)
        if match:
            year = int(match[1]) + (2000 if two_digit else 0)
            found = (year, int(match[2]), int(match[3]) if match[3] else 1)
            break
    serial = re.fullmatch(r"(\d{5})(?:\.0+)?", normal, re.ASCII)
    if found is None and serial:
        day = EXCEL_EPOCH + timedelta(days=int(serial[1]))
        found = (day.year, day.month, 1)
    if found:
        year, month, day_of_month = found
        real_month = MIN_YEAR <= year <= MAX_YEAR and 1 <= month <= 12
        if real_month and 1 <= day_of_month <= calendar.monthrange(year, month)[1]:
            return date(year, month, 1), None
    return None, f"not a date or month: {quoted(text)}"


PARSERS: dict[str, Callable[[str | None], Cell]] = {
    "text": parse_text,
    "code": parse_code,
    "month": parse_month,
    "money": parse_money,
    "rate": parse_rate,
    "integer": parse_integer,
}
ZERO: dict[str, Any] = {"money": Decimal(0), "rate": Decimal(0), "integer": 0}


# -- rules --------------------------------------------------------------------------------

COLLECTIVE, SINGLE = "集合计划", "单一计划"
STATUS_WORDS = [
    "已转移终止", "转移终止", "已转出", "待转出", "已作废", "已终止", "保留账户",
    "转出", "终止", "保留", "存量", "本部", "未使用", "集合", "原",
]  # fmt: skip
_LONGEST_FIRST = sorted(STATUS_WORDS, key=len, reverse=True)
_SEPARATORS = ("-", "_")


def _without_status_end(name: str) -> str:
    """One status word off the end: the bracket whole, or the word (原 only after - or _),
    and the - or _ before it."""
    rest = name
    for word in _LONGEST_FIRST:
        if name.endswith(f"（{word}）"):
            rest = name[: -len(word) - 2]
            break
    else:
        for word in _LONGEST_FIRST:
            if name.endswith(word) and (word != "原" or name[:-1].endswith(_SEPARATORS)):
                rest = name[: -len(word)]
                break
    return rest[:-1] if rest != name and rest.endswith(_SEPARATORS) else rest


def _without_status_start(name: str) -> str:
    rest = name
    for word in _LONGEST_FIRST:
        if name.startswith(f"（{word}）"):
            rest = name[len(word) + 2 :]
            break
    else:
        for word in _LONGEST_FIRST:
            if name.startswith(word) and (word != "原" or name[1:2] in _SEPARATORS):
                rest = name[len(word) :]
                break
    return rest[1:] if rest != name and rest.startswith(_SEPARATORS) else rest


def company_name(value: str | None) -> str | None:
    if value is None:
        return None
    name = re.sub(r"\s+", "", _visible(unicodedata.normalize("NFKC", value)))
    name = name.replace("(", "（").replace(")", "）").replace("及下属子企业", "")
    for _ in range(2):  # a suffix can hide a status word behind it, and the other way round
        name = _without_status_end(name)
        name = re.sub(r"(?:（团托）|-养老|-福利)$", "", name, count=1)
    name = _without_status_start(name)
    return name or None


def _rule(name: str, value: Any, row: dict[str, Any]) -> Cell:
    """Column rule `name` on `value`; `row` holds the other columns' values."""
    if name == "plan_code_corrections":
        return {"1P0290": "P0290", "1P0807": "P0807"}.get(value, value), None
    if name == "plan_code_default":
        if value is not None:
            return value, None
        plan_type = row.get("plan_type")
        if plan_type == COLLECTIVE:
            return "AN001", None
        if plan_type == SINGLE:
            return "AN002", None
        return None, "plan code empty and plan type is neither 集合计划 nor 单一计划"
    if name == "strip_leading_f":
        return _without_leading("F", value), None
    if name == "portfolio_code_default":
        if value is not None:
            return value, None
        if row.get("business_type") in ("职年受托", "职年投资"):
            return "QTAN003", None
        return {COLLECTIVE: "QTAN001", SINGLE: "QTAN002"}.get(row.get("plan_type")), None
    if name == "company_name":
        return company_name(value), None
    raise KeyError(name)


def _without_leading(letter: str, value: str | None) -> str | None:
    if value is None:
        return None
    return (value[1:] if value.startswith(letter) else value).strip() or None


def _derive(name: str, values: list[Any]) -> Cell:
    if name == "copy":
        return values[0], None
    if name == "strip_leading_c":
        return _without_leading("C", values[0]), None
    if name == "month_from_year_and_month":
        year, month = values
        if year is None or month is None:
            return None, None
        year = year + 2000 if 0 <= year < 100 else year
        if MIN_YEAR <= year <= MAX_YEAR and 1 <= month <= 12:
            return date(year, month, 1), None
        return None, "年/月 do not form a valid month"
    raise KeyError(name)


# -- one sheet ------------------------------------------------------------------------------


@dataclass
class Checked:
    valid: list[dict[str, Any]] = field(default_factory=list)  # ROW + loaded columns
    rejects: list[tuple[int, str, str | None, str]] = field(default_factory=list)
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)  # ROW + raw cells


def _as_text(value: Any) -> str:
    return "" if value is None else value.isoformat() if isinstance(value, date) else str(value)


def cleanse_row(
    raw: dict[str, Any], spec: DomainSpec, period: date | None
) -> tuple[dict[str, Any], dict[str, str], dict[str, str | None]]:
    """(typed values, reason per failing column, raw text per column) of one row."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    raws: dict[str, str | None] = {}
    for column in spec.source_columns:
        cell = raw.get(column.name)
        raws[column.name] = cell
        value, error = PARSERS[column.type](blank_to_null(cell, spec.null_values))
        if value is None and column.null_as_zero:
            value = ZERO[column.type]
        values[column.name] = value
        if error:
            errors[column.name] = error
    for column in spec.columns:
        if column.derive is None:
            continue
        sources = column.derive.from_
        value, error = _derive(column.derive.rule, [values[name] for name in sources])
        values[column.name] = value
        raws[column.name] = " / ".join(raws[name] or "" for name in sources)
        if error:
            errors[column.name] = error
    before_rules = dict(values)  # rules see the other columns as they were before any rule
    for column in spec.columns:
        value = before_rules[column.name]
        for name in column.rules:
            value, error = _rule(name, value, before_rules)
            if error and column.name not in errors:
                errors[column.name] = error
        values[column.name] = value
    part = spec.partition_column
    month = values[part]
    if period is not None and month is not None and month != period and part not in errors:
        errors[part] = f"period mismatch: row is for {month:%Y-%m}, loading {period:%Y-%m}"
    return values, errors, raws


def _schema_failure(column: ColumnSpec, value: Any) -> str | None:
    """What the Pandera schema checks: required columns, accepted values."""
    if value is None:
        return "required value missing" if column.required else None
    if column.allowed and value not in column.allowed:
        return f"not one of {', '.join(column.allowed)}"
    return None


def check_rows(rows: Iterable[dict[str, Any]], spec: DomainSpec, period: date | None) -> Checked:
    """Cleanse and validate the reader's rows (dicts with ROW and raw text cells)."""
    result = Checked()
    seen_keys: set[tuple[Any, ...]] = set()
    loaded = [c.name for c in spec.loaded_columns]
    for raw in rows:
        values, errors, raws = cleanse_row(raw, spec, period)
        failures = dict(errors)  # cleansing's reason wins over the schema's for a cell
        for column in spec.loaded_columns:
            derive = column.derive
            if derive and values[column.name] is None and any(s in errors for s in derive.from_):
                continue  # empty because its source failed: the source's reason says why
            reason = _schema_failure(column, values[column.name])
            if reason and column.name not in failures:
                failures[column.name] = reason
        row = raw[ROW]
        lines = [(row, name, raws.get(name), reason) for name, reason in failures.items()]
        if not failures and spec.key:
            key = tuple(values[k] for k in spec.key)
            if key in seen_keys:
                text = " / ".join(_as_text(v) for v in key)
                lines.append((row, ",".join(spec.key), text, f"duplicate key: {text}"))
            seen_keys.add(key)
        if lines:
            result.rejects += lines
            result.rejected_rows.append(
                {ROW: row, **{c.name: raws[c.name] for c in spec.source_columns}}
            )
        else:
            result.valid.append({ROW: row, **{name: values[name] for name in loaded}})
    result.rejects.sort(key=lambda line: (line[0], line[1]))
    return result
