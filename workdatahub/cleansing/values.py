"""Parsers from raw cell text to typed values, as polars expressions.

Each parser takes the trimmed cell text (null placeholders already null) and returns a
`Parsed`: the typed value, and an error expression that is a reason string for a cell that
could not be parsed (null otherwise). Everything is vectorised; nothing loops per row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import polars as pl

MONEY = pl.Decimal(18, 4)
RATE = pl.Decimal(10, 6)
EXCEL_EPOCH = date(1899, 12, 30)
MIN_YEAR, MAX_YEAR = 1990, 2099
_CURRENCY = r"[¥$€£\s,]"  # after NFKC, ￥ is ¥ and full-width commas are commas


@dataclass(frozen=True)
class Parsed:
    value: pl.Expr
    error: pl.Expr | None = None


def quoted(expr: pl.Expr) -> pl.Expr:
    """The raw value as it appears in a reason: 'abc' (cut at 60 characters)."""
    text = expr.str.slice(0, 60)
    return pl.concat_str([pl.lit("'"), text, pl.lit("'")])


def _fail(condition: pl.Expr, reason: pl.Expr) -> pl.Expr:
    return pl.when(condition).then(reason).otherwise(pl.lit(None, dtype=pl.String))


def blank_to_null(raw: pl.Expr, null_values: list[str]) -> pl.Expr:
    """Trim; a null placeholder (`-`, `N/A`, `无` …) becomes null."""
    trimmed = raw.str.strip_chars()
    placeholders = [v.strip() for v in null_values] or [""]
    return pl.when(trimmed.is_in(placeholders) | (trimmed == "")).then(None).otherwise(trimmed)


def parse_text(text: pl.Expr) -> Parsed:
    return Parsed(text)


def parse_code(text: pl.Expr) -> Parsed:
    """Codes: NFKC (full-width -> half-width), and a number keeps no `.0`."""
    normal = text.str.normalize("NFKC").str.strip_chars()
    return Parsed(normal.str.replace(r"^(\d+)\.0+$", "${1}"))


def _number_text(text: pl.Expr) -> pl.Expr:
    """`¥1,234.5` -> `1234.5`; `(1,234.5)` -> `-1234.5`; full-width digits to ASCII."""
    cleaned = text.str.normalize("NFKC").str.replace_all(_CURRENCY, "")
    return cleaned.str.replace(r"^\((.+)\)$", "-${1}")


def _as_float(text: pl.Expr) -> pl.Expr:
    # only plain decimal or scientific notation; polars would also accept inf/nan
    ok = text.str.contains(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    return pl.when(ok).then(text.cast(pl.Float64, strict=False)).otherwise(None)


def _money_value(number: pl.Expr, as_float: pl.Expr) -> pl.Expr:
    exact = number.cast(MONEY, strict=False)
    # scientific notation (`1.5E-05`) does not cast straight to Decimal: go through float;
    # beyond numeric(18,4) the cast would raise, so such a value stays null (a reject)
    in_range = pl.when(as_float.abs() < 1e14).then(as_float)
    return pl.coalesce(exact, in_range.round(4).cast(MONEY, strict=False))


def _money_error(text: pl.Expr, value: pl.Expr, label: str) -> pl.Expr:
    return _fail(
        text.is_not_null() & value.is_null(),
        pl.concat_str([pl.lit(f"not {label}: "), quoted(text)]),
    )


def parse_money(text: pl.Expr, label: str = "a number") -> Parsed:
    number = _number_text(text)
    value = _money_value(number, _as_float(number))
    return Parsed(value, _money_error(text, value, label))


def parse_integer(text: pl.Expr) -> Parsed:
    number = _number_text(text).str.replace(r"^([+-]?\d+)\.0+$", "${1}")
    value = number.cast(pl.Int64, strict=False)
    error = _fail(
        text.is_not_null() & value.is_null(),
        pl.concat_str([pl.lit("not a whole number: "), quoted(text)]),
    )
    return Parsed(value, error)


def _rate_value(figure: pl.Expr, has_percent: pl.Expr) -> pl.Expr:
    as_rate = (
        pl.when(has_percent | (figure.abs() > 1)).then(figure / 100).otherwise(figure).round(6)
    )
    # numeric(10,6) holds |x| < 10,000; a larger figure is a reject, not a failed cast
    return pl.when(as_rate.abs() < 1e4).then(as_rate).cast(RATE, strict=False)


def _rate_error(text: pl.Expr, value: pl.Expr) -> pl.Expr:
    return _fail(
        text.is_not_null() & value.is_null(),
        pl.concat_str([pl.lit("not a rate or percentage: "), quoted(text)]),
    )


def parse_rate(text: pl.Expr) -> Parsed:
    """`5%` -> 0.05; a bare number above 1 in absolute value is a percent figure (3.5 -> 0.035)."""
    number = _number_text(text)
    has_percent = number.str.ends_with("%")
    value = _rate_value(_as_float(number.str.strip_suffix("%")), has_percent)
    return Parsed(value, _rate_error(text, value))


# (regex, year group, month group, two-digit year?) over NFKC text
_MONTH_FORMATS: tuple[tuple[str, bool], ...] = (
    # 2024-11, 2024-11-05, 2024-11-01 00:00:00 (an Excel date cell read as text)
    (r"^(\d{4})-(\d{1,2})(?:-(\d{1,2}))?(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$", False),
    (r"^(\d{4})/(\d{1,2})(?:/(\d{1,2}))?$", False),  # 2024/11, 2024/11/05
    (r"^(\d{4})(\d{2})(\d{2})?$", False),  # 202411, 20241105
    (r"^(\d{4})年(\d{1,2})月(?:(\d{1,2})日)?$", False),  # 2024年11月, 2024年11月5日
    (r"^(\d{2})年(\d{1,2})月(?:(\d{1,2})日)?$", True),  # 24年11月 means 2024
    (r"^(\d{4})\.(\d{1,2})(?:\.(\d{1,2}))?$", False),  # 2024.11
)


def parse_month(text: pl.Expr) -> Parsed:
    """Any accepted date spelling -> the first day of its month."""
    normal = (
        text.str.normalize("NFKC")
        .str.strip_chars()
        .str.replace_all(r"\s*([年月日/-])\s*", "${1}")
        .str.replace_all(r"\s+", " ")
    )
    years: list[pl.Expr] = []
    months: list[pl.Expr] = []
    days: list[pl.Expr] = []
    for pattern, two_digit in _MONTH_FORMATS:
        year = normal.str.extract(pattern, 1).cast(pl.Int32, strict=False)
        if two_digit:
            year = year + 2000
        years.append(year)
        months.append(normal.str.extract(pattern, 2).cast(pl.Int32, strict=False))
        days.append(
            pl.when(year.is_not_null())
            .then(normal.str.extract(pattern, 3).cast(pl.Int32, strict=False).fill_null(1))
            .otherwise(None)
        )
    # an Excel serial day number (45597 = 2024-11-01) in a column that mixes text and dates
    serial = (
        normal.str.extract(r"^(\d{5})(?:\.0+)?$", 1).cast(pl.Int64, strict=False).cast(pl.Int32)
    )
    serial_date = pl.lit(EXCEL_EPOCH) + pl.duration(days=serial)
    years.append(serial_date.dt.year())
    months.append(serial_date.dt.month().cast(pl.Int32))
    days.append(pl.when(serial.is_not_null()).then(pl.lit(1)).otherwise(None))

    year = pl.coalesce(years)
    month = pl.coalesce(months)
    day = pl.coalesce(days)
    valid = year.is_between(MIN_YEAR, MAX_YEAR) & month.is_between(1, 12) & day.is_between(1, 31)
    value = (
        pl.when(valid)
        .then(pl.date(year.clip(MIN_YEAR, MAX_YEAR), month.clip(1, 12), 1))
        .otherwise(None)
    )
    error = _fail(
        text.is_not_null() & value.is_null(),
        pl.concat_str([pl.lit("not a date or month: "), quoted(text)]),
    )
    return Parsed(value, error)


PARSERS: dict[str, Callable[[pl.Expr], Parsed]] = {
    "text": parse_text,
    "code": parse_code,
    "month": parse_month,
    "money": parse_money,
    "rate": parse_rate,
    "integer": parse_integer,
}

# -- fast paths ----------------------------------------------------------------------------
# Most amount cells are Excel numbers, which the reader hands over as plain ASCII text
# ("193652.37"). Such a cell holds nothing that trimming, NFKC, the currency and separator
# strip or the accounting-negative rule would change, and it is no null placeholder, so on
# it the full parser reduces to a cast. Skipping the normalisation is what makes amounts
# cheap: NFKC and the regex replaces cost more than everything else in a money column.
# A fast path gives a value or null; a null (e.g. 1E+30, too large) means "not mine", and
# the cell goes through the full parser, which also writes the reason. So a fast path never
# decides a reject. tests/test_equivalence.py checks each one against its full parser.

PLAIN_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


@dataclass(frozen=True)
class FastPath:
    """A cheaper parser equal to the full one wherever it gives a value."""

    pattern: str  # raw (untrimmed) cells it may parse
    value: Callable[[pl.Expr], pl.Expr]

    def handles(self, raw: pl.Expr, null_values: list[str]) -> pl.Expr:
        """Cells this fast path may parse: the pattern, minus any placeholder it matches."""
        matches = raw.str.contains(self.pattern)
        numeric_placeholders = [v.strip() for v in null_values if re.match(self.pattern, v)]
        return matches & ~raw.is_in(numeric_placeholders) if numeric_placeholders else matches


def _plain_money(raw: pl.Expr) -> pl.Expr:
    # where the exact cast fails (exponents, overflow) the full parser's float route decides
    return raw.cast(MONEY, strict=False)


def _plain_rate(raw: pl.Expr) -> pl.Expr:
    return _rate_value(raw.cast(pl.Float64, strict=False), pl.lit(False))


FAST_PATHS = {
    "money": FastPath(PLAIN_NUMBER, _plain_money),
    "rate": FastPath(PLAIN_NUMBER, _plain_rate),
}

DTYPES: dict[str, pl.DataType] = {
    "text": pl.String(),
    "code": pl.String(),
    "month": pl.Date(),
    "money": MONEY,
    "rate": RATE,
    "integer": pl.Int64(),
}
