"""Value rules of the data contract, one case per listed spelling."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from workdatahub.cleansing.values import (
    FAST_PATHS,
    blank_to_null,
    parse_code,
    parse_integer,
    parse_money,
    parse_month,
    parse_rate,
    parse_text,
)

NULLS = ["", "-", "N/A", "null", "无", "暂无"]


def run(parser, values):  # type: ignore[no-untyped-def]
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    text = blank_to_null(pl.col("v"), NULLS)
    parsed = parser(text)
    exprs = [parsed.value.alias("value")]
    exprs.append(
        (parsed.error if parsed.error is not None else pl.lit(None, pl.String)).alias("error")
    )
    out = parsed.prepare(frame.lazy()).select(exprs).collect()
    return out["value"].to_list(), out["error"].to_list()


@pytest.mark.parametrize("placeholder", ["", "  ", "-", "N/A", "null", "无", "暂无", " 无 "])
def test_null_placeholders_become_null_without_error(placeholder: str) -> None:
    values, errors = run(parse_money, [placeholder])
    assert values == [None] and errors == [None]


# as a Chinese input method types them (full width), or in other capitals
@pytest.mark.parametrize(
    "placeholder", ["－", "Ｎ/Ａ", "ｎｕｌｌ", "NULL", "n/a", "\u3000－\u3000"]
)
@pytest.mark.parametrize("parser", [parse_money, parse_rate, parse_code, parse_text, parse_month])
def test_null_placeholders_match_however_they_are_typed(
    parser: Callable[[pl.Expr], Any], placeholder: str
) -> None:
    values, errors = run(parser, [placeholder])
    assert values == [None] and errors == [None]


def test_text_that_only_contains_a_placeholder_is_kept() -> None:
    values, errors = run(parse_text, ["N/A-1", "无锡", " Null Co ", "－1"])
    assert values == ["N/A-1", "无锡", "Null Co", "－1"] and errors == [None] * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-11-01 00:00:00", date(2024, 11, 1)),  # an Excel date cell read as text
        ("202411", date(2024, 11, 1)),
        ("20241115", date(2024, 11, 1)),
        ("2024-11", date(2024, 11, 1)),
        ("2024-11-15", date(2024, 11, 1)),
        ("2024/11", date(2024, 11, 1)),
        ("2024年11月", date(2024, 11, 1)),
        ("2024年1月", date(2024, 1, 1)),
        ("24年11月", date(2024, 11, 1)),
        ("2024年11月15日", date(2024, 11, 1)),
        ("２０２４年１１月", date(2024, 11, 1)),  # full-width digits
        ("45597", date(2024, 11, 1)),  # Excel serial day number in a mixed column
        (" 202411 ", date(2024, 11, 1)),
    ],
)
def test_month_spellings(text: str, expected: date) -> None:
    values, errors = run(parse_month, [text])
    assert values == [expected]
    assert errors == [None]


@pytest.mark.parametrize("text", ["abc", "2024年13月", "202413", "2024-00", "1899-01", "11/2024"])
def test_unparseable_month_rejects_naming_the_value(text: str) -> None:
    values, errors = run(parse_month, [text])
    assert values == [None]
    assert errors[0] is not None and text in errors[0]


def test_a_month_excel_may_have_cut_is_rejected_as_ambiguous() -> None:
    """The number 2024.10 is stored, and read, as 2024.1: January or October cannot be told
    apart, so it is a reject saying so; other dotted months are whole."""
    values, errors = run(parse_month, ["2024.1", "2024.10", "2024.01", "2024.2", "2024.11"])
    assert values == [
        None,
        date(2024, 10, 1),
        date(2024, 1, 1),
        date(2024, 2, 1),
        date(2024, 11, 1),
    ]
    assert errors[0] == (
        "ambiguous month (January, or October typed as a number: Excel keeps 2024.10 as "
        "2024.1): '2024.1'"
    )
    assert errors[1:] == [None] * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.5", Decimal("1234.5")),
        ("1,234.5", Decimal("1234.5")),
        (" 1,234.50 ", Decimal("1234.5")),
        ("¥1,234.5", Decimal("1234.5")),
        ("￥1,234.5", Decimal("1234.5")),
        ("$12", Decimal("12")),
        ("€12", Decimal("12")),
        ("£12", Decimal("12")),
        ("(1,234.5)", Decimal("-1234.5")),
        ("（1,234.5）", Decimal("-1234.5")),
        ("¥ 1,234.5", Decimal("1234.5")),  # the sign's spaces go with it
        ("1,234.5 ¥", Decimal("1234.5")),
        ("-¥ 5", Decimal("-5")),
        ("(¥ 1,234)", Decimal("-1234")),
        ("( 1,234.5 )", Decimal("-1234.5")),  # spaces inside the parentheses
        ("( ¥1,234 )", Decimal("-1234")),
        ("１２３４.５", Decimal("1234.5")),
        ("-3", Decimal("-3")),
        ("1.23456789", Decimal("1.2346")),  # money keeps 4 decimals
        ("1.5E-05", Decimal("0")),
        ("12345678901234.1234", Decimal("12345678901234.1234")),  # no float rounding
    ],
)
def test_money_spellings(text: str, expected: Decimal) -> None:
    values, errors = run(parse_money, [text])
    assert values == [expected]
    assert errors == [None]


# 四舍五入: half away from zero, as Excel's ROUND and Postgres' numeric round (polars rounds
# half to even unless told), on the full parser and on the fast path for plain decimals
@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        (parse_money, "2.00005", "2.0001"),
        (parse_money, "2.00015", "2.0002"),
        (parse_money, "(0.00005)", "-0.0001"),
        (parse_money, "-1234.56785", "-1234.5679"),
        (parse_money, "1.234450", "1.2345"),
        (parse_money, "0.0000499999999999", "0"),  # below half: rounded once, not twice
        (parse_money, "12345678901234.99994", "12345678901234.9999"),
        (parse_money, "5E-05", "0.0001"),  # the float route
        (parse_rate, "0.0350005", "0.035001"),
        (parse_rate, "-0.0000005", "-0.000001"),
        (parse_rate, "3.50005", "0.035001"),  # a percent figure
        (parse_rate, "3.50005%", "0.035001"),
    ],
)
def test_money_and_rates_round_half_away_from_zero(
    parser: Callable[[pl.Expr], Any], text: str, expected: str
) -> None:
    values, errors = run(parser, [text])
    assert values == [Decimal(expected)] and errors == [None]
    fast = FAST_PATHS["money" if parser is parse_money else "rate"]
    if re.fullmatch(fast.pattern, text) and "e" not in text.lower():
        quick = pl.DataFrame({"v": [text]}).select(fast.value(pl.col("v")))
        assert quick.to_series().to_list() == [Decimal(expected)]


def test_money_that_rounds_beyond_the_column_is_out_of_range() -> None:
    values, errors = run(parse_money, ["99999999999999.99995", "999999999999999.9"])
    assert values == [None, None]
    assert errors == [
        "out of range for numeric(18,4): '99999999999999.99995'",
        "out of range for numeric(18,4): '999999999999999.9'",
    ]


@pytest.mark.parametrize("text", ["abc", "12abc", "1,2,3x", "inf", "nan", "--1"])
def test_text_that_is_not_a_number_rejects(text: str) -> None:
    values, errors = run(parse_money, [text])
    assert values == [None]
    assert errors[0] == f"not a number: '{text}'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5%", Decimal("0.05")),
        ("5.5 %", Decimal("0.055")),
        ("(5 %)", Decimal("-0.05")),  # an accounting negative, spaces inside
        ("５％", Decimal("0.05")),
        ("3.5", Decimal("0.035")),
        ("-3.5", Decimal("-0.035")),
        ("0.035", Decimal("0.035")),
        ("1", Decimal("1")),  # not above 1: a rate already
        ("0.0351234567", Decimal("0.035123")),  # rates keep 6 decimals
    ],
)
def test_percentages(text: str, expected: Decimal) -> None:
    values, errors = run(parse_rate, [text])
    assert values == [expected]
    assert errors == [None]


def test_rate_that_is_not_a_number_rejects() -> None:
    values, errors = run(parse_rate, ["x%"])
    assert values == [None] and "x%" in errors[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P0290", "P0290"),
        (" P0290 ", "P0290"),
        ("12345", "12345"),
        ("12345.0", "12345"),
        ("12345.00", "12345"),
        ("Ｐ０２９０", "P0290"),
        # pasted with a zero-width space, a byte order mark, a soft hyphen: shown the same
        ("P0290\u200b", "P0290"),
        ("\ufeffP0290", "P0290"),
        ("P02\u00ad90", "P0290"),
        (" P0290\u2060 ", "P0290"),
        ("\u200eP0290\u200f", "P0290"),
        ("\u202aP0290\u202c", "P0290"),  # a direction embedding, as Windows copies text
        ("\u200b", None),  # nothing else: no code (a required one is missing)
        (" \ufeff ", None),
        ("\u202a\u202c", None),
    ],
)
def test_codes_are_trimmed_text_without_dot_zero(text: str, expected: str | None) -> None:
    values, _ = run(parse_code, [text])
    assert values == [expected]


def test_integers() -> None:
    values, errors = run(parse_integer, ["2024", "11.0", "x"])
    assert values == [2024, 11, None]
    assert errors[:2] == [None, None] and "x" in errors[2]


def test_integers_may_carry_a_unit_of_year_month_or_day() -> None:
    # as operators write the trustee sheet's 年 and 月 columns
    texts = ["2024年", "11月", " 11 月", "１１月", "3日", "年", "11月x"]
    values, errors = run(parse_integer, texts)
    assert values == [2024, 11, 11, 11, 3, None, None]
    assert errors[:5] == [None] * 5 and "年" in errors[5] and "11月x" in errors[6]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", Decimal("1234")),
        ("1,234,567.89", Decimal("1234567.89")),
        ("-1,234", Decimal("-1234")),
        ("+12,345.", Decimal("12345")),
        ("(1,234,567)", Decimal("-1234567")),
        ("¥ 123,456", Decimal("123456")),
        ("１，２３４．５", Decimal("1234.5")),  # full-width digits, comma and point
    ],
)
def test_thousands_separators_in_their_places(text: str, expected: Decimal) -> None:
    values, errors = run(parse_money, [text])
    assert values == [expected]
    assert errors == [None]


def test_rates_and_integers_with_thousands_separators() -> None:
    assert run(parse_rate, ["1,234.5%"]) == ([Decimal("12.345")], [None])
    values, errors = run(parse_integer, ["2,024", "20,24", "1,5"])
    assert values == [2024, None, None]
    assert errors == [None, "not a whole number: '20,24'", "not a whole number: '1,5'"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29", date(2024, 2, 1)),
        ("20240229", date(2024, 2, 1)),
        ("2024年2月29日", date(2024, 2, 1)),
        ("2000-02-29", date(2000, 2, 1)),
        ("2024-12-31", date(2024, 12, 1)),
        ("2024/04/30", date(2024, 4, 1)),
        ("2024-01-31 23:59:59", date(2024, 1, 1)),
    ],
)
def test_real_calendar_days_are_accepted(text: str, expected: date) -> None:
    assert run(parse_month, [text]) == ([expected], [None])


A_DATE = "a date, not a code (Excel may have turned the code into a date)"
A_BOOLEAN = "a TRUE/FALSE cell, not a code"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2024-01-01 00:00:00", A_DATE),  # how the reader writes an Excel date cell
        ("2024-11-30 13:05:07.500", A_DATE),  # a date and time
        ("1899-12-31 12:00:00", A_DATE),  # a time of day
        ("+29279-01-24 00:00:00", A_DATE),  # a date past 9999
        ("true", A_BOOLEAN),  # how the reader writes a boolean cell
        ("false", A_BOOLEAN),
    ],
)
def test_excel_date_and_boolean_cells_are_no_codes(text: str, reason: str) -> None:
    values, errors = run(parse_code, [text, f" {text} "])
    assert values == [None, None]
    assert errors == [f"{reason}: '{text}'"] * 2


@pytest.mark.parametrize(
    "text", ["2024-01-01", "20240101", "2024-01", "TRUE", "True", "true1", "P2024-01-01 00:00:00"]
)
def test_codes_that_only_resemble_dates_or_booleans_are_kept(text: str) -> None:
    assert run(parse_code, [text]) == ([text], [None])


# European decimals and stray commas: read as separators they were silently wrong amounts
MISPLACED_COMMAS = [
    "1.234,5", "1,5", "12,34", "1,234,56", "1234,567", ",123", "1,,234", "0,123", "1,234.5,6",
    "(1,5)", "¥1,5", "1,2345", "1,234e5", "１，５",
]  # fmt: skip


IMPOSSIBLE_DAYS = [
    "2024-02-30", "20240231", "2024年2月31日", "2023-02-29", "2024-04-31", "2024/06/31",
    "2024.02.30", "24年2月30日", "2024-02-30 00:00:00", "2024-11-32", "2024-11-00",
]  # fmt: skip
# a space inside a number: two numbers typed into one cell, or a typo (only a currency
# sign's spaces and those around the number go)
SPACED = ["1 2 3", "12\n34", "12 34", "3. 5", "- 5", "1 234.5", "1$2", "¥1 234"]
REJECTED = [
    *[(parse_money, text, "not a number") for text in MISPLACED_COMMAS + SPACED],
    *[(parse_rate, text, "not a rate or percentage") for text in SPACED],
    *[(parse_integer, text, "not a whole number") for text in SPACED],
    *[(parse_rate, text, "not a rate or percentage") for text in ["1,5%", "1,5", "12,34%", "0,5"]],
    *[(parse_month, text, "not a date or month") for text in IMPOSSIBLE_DAYS],
    *[
        (parse_money, text, "out of range for numeric(18,4)")
        for text in ["1e30", "100000000000000", "-1e14", "(100,000,000,000,000)"]
    ],
    *[
        (parse_rate, text, "out of range for numeric(10,6)")
        for text in ["1e12", "1000000%", "-1,000,000", "1e400"]
    ],
]


@pytest.mark.parametrize(("parser", "text", "why"), REJECTED)
def test_rejected_with_its_reason(parser: Callable[[pl.Expr], Any], text: str, why: str) -> None:
    """Commas that are no thousands separators (read as such, they were silently wrong
    amounts), days their month does not have, numbers beyond their column's type."""
    values, errors = run(parser, [text])
    assert values == [None]
    assert errors == [f"{why}: '{text}'"]
