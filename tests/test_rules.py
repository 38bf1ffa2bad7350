"""The named domain rules, every case the data contract lists."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from workdatahub.cleansing.rules import RULES


def apply(
    rule: str, frame: dict[str, list[object]], column: str = "v"
) -> tuple[list[object], list[object]]:
    df = pl.DataFrame(frame)
    output = RULES[rule](pl.col(column))
    errors = pl.coalesce(list(output.errors)) if output.errors else pl.lit(None, pl.String)
    out = df.select(output.value.alias("value"), errors.alias("error"))
    return out["value"].to_list(), out["error"].to_list()


def test_plan_code_corrections() -> None:
    values, _ = apply("plan_code_corrections", {"v": ["1P0290", "1P0807", "P0290", None]})
    assert values == ["P0290", "P0807", "P0290", None]


def test_plan_code_default_by_plan_type_and_reject_otherwise() -> None:
    values, errors = apply(
        "plan_code_default",
        {
            "v": [None, None, None, None, "P1"],
            "plan_type": ["集合计划", "单一计划", "其他", None, "其他"],
        },
    )
    assert values == ["AN001", "AN002", None, None, "P1"]
    assert errors[:2] == [None, None]
    assert errors[2] and "plan type" in errors[2]
    assert errors[3] and "plan type" in errors[3]
    assert errors[4] is None


def test_portfolio_code_strips_one_leading_f() -> None:
    values, _ = apply(
        "strip_leading_f", {"v": ["F12345", "FF1", "12345", "AF1", None, "F", "F 123"]}
    )
    # a code that was `F` alone is missing (the default applies), never an empty code
    assert values == ["12345", "F1", "12345", "AF1", None, None, "123"]


def test_portfolio_code_defaults() -> None:
    values, _ = apply(
        "portfolio_code_default",
        {
            "v": [None, None, None, None, None, "X1"],
            "business_type": [
                "职年受托",
                "职年投资",
                "企年受托",
                "企年投资",
                "企年受托",
                "职年受托",
            ],
            "plan_type": ["集合计划", "单一计划", "集合计划", "单一计划", "其他", "集合计划"],
        },
    )
    assert values == ["QTAN003", "QTAN003", "QTAN001", "QTAN002", None, "X1"]


def test_account_number_drops_one_leading_c() -> None:
    values, _ = apply("strip_leading_c", {"v": ["C600123", "CC1", "600123", None, "C", "C 60"]})
    assert values == ["600123", "C1", "600123", None, None, "60"]


def test_month_from_year_and_month() -> None:
    df = pl.DataFrame({"y": [2024, 24, 2024, None, -5, 0], "m": [11, 2, 13, 1, 11, 11]})
    output = RULES["month_from_year_and_month"](pl.col("y"), pl.col("m"))
    out = df.select(output.value.alias("v"), pl.coalesce(list(output.errors)).alias("e"))
    assert out["v"].to_list() == [
        date(2024, 11, 1), date(2024, 2, 1), None, None, None, date(2000, 11, 1),
    ]  # fmt: skip
    errors = out["e"].to_list()
    assert errors[:2] == [None, None] and errors[2] is not None and errors[3] is None
    assert errors[4] is not None  # a negative year is no two-digit year (not 1995)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  中国 平安 保险  ", "中国平安保险"),
        ("中国平安保险\u3000集团", "中国平安保险集团"),  # ideographic space
        ("平安银行(深圳)分行", "平安银行（深圳）分行"),
        ("平安银行（深圳）分行", "平安银行（深圳）分行"),
        ("ＡＢＣ有限公司", "ABC有限公司"),  # full-width letters -> half-width
        ("中国石化及下属子企业", "中国石化"),
        ("中国石化(团托)", "中国石化"),
        ("中国石化（团托）", "中国石化"),
        ("中国石化-养老", "中国石化"),
        ("中国石化-福利", "中国石化"),
        ("中国石化已转出", "中国石化"),
        ("中国石化待转出", "中国石化"),
        ("中国石化终止", "中国石化"),
        ("中国石化转出", "中国石化"),
        ("中国石化转移终止", "中国石化"),
        ("中国石化已作废", "中国石化"),
        ("中国石化已终止", "中国石化"),
        ("中国石化保留", "中国石化"),
        ("中国石化保留账户", "中国石化"),
        ("中国石化存量", "中国石化"),
        ("中国石化已转移终止", "中国石化"),
        ("中国石化本部", "中国石化"),
        ("中国石化未使用", "中国石化"),
        ("中国石化集合", "中国石化"),
        ("原-中国石化", "中国石化"),
        ("（原）中国石化", "中国石化"),
        ("中国石化(原)", "中国石化"),
        ("中国石化_原", "中国石化"),
        # 原 glued to the name is the name's own: places (原平市, 太原), words (原子)
        ("原中国石化", "原中国石化"),
        ("原平市人民医院", "原平市人民医院"),
        ("原子高科股份有限公司", "原子高科股份有限公司"),
        ("中原", "中原"),
        # a bracket is dropped whole, when it holds a status word and nothing else
        ("某有限公司（太原）", "某有限公司（太原）"),
        ("某集团（北京本部）", "某集团（北京本部）"),
        ("（存量）-中国石化", "中国石化"),
        ("已转出中国石化", "中国石化"),
        ("中国石化(已转出)", "中国石化"),
        ("中国石化及下属子企业(团托)", "中国石化"),
        # a status word behind a suffix, and a suffix behind a status word: two passes
        ("中国石化（已转出）-养老", "中国石化"),
        ("中国石化（团托）-养老", "中国石化"),
        ("中国原子能", "中国原子能"),  # a status word inside the name stays
        ("中国\u200b石化\ufeff", "中国石化"),  # invisible characters, pasted in with it
        ("\u202a中国石化\u202c", "中国石化"),
        (None, None),
    ],
)
def test_company_name_normalisation(raw: str | None, normalised: str | None) -> None:
    values, _ = apply(
        "company_name",
        {"v": [raw]} if raw is not None else {"v": pl.Series([None], dtype=pl.String)},
    )
    assert values == [normalised]
