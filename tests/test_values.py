"""Value rules of the data contract, one case per listed spelling."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from workdatahub.cleansing.values import (
    blank_to_null,
    parse_code,
    parse_integer,
    parse_money,
    parse_month,
    parse_rate,
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
        ("Ｐ０２９０", "P0290"),
    ],
)
def test_codes_are_trimmed_text_without_dot_zero(text: str, expected: str) -> None:
    values, _ = run(parse_code, [text])
    assert values == [expected]


def test_integers() -> None:
    values, errors = run(parse_integer, ["2024", "11.0", "x"])
    assert values == [2024, 11, None]
    assert errors[:2] == [None, None] and "x" in errors[2]
