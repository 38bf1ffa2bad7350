"""Parsers from raw cell text to typed values, as polars expressions.

Each parser takes the trimmed cell text (null placeholders already null) and returns a
`Parsed`: the typed value, and an error expression that is a reason string for a cell that
could not be parsed (null otherwise). Everything is vectorised; nothing loops per row.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Final

import polars as pl

from workdatahub.excel.reader import EXCEL_BOOLEAN_CELLS, EXCEL_DATE_CELL

MONEY = pl.Decimal(18, 4)
RATE = pl.Decimal(10, 6)
# Money keeps 4 decimals and rates 6, rounded half away from zero (四舍五入: `2.00005` ->
# 2.0001, `(0.00005)` -> -0.0001, `16.47095%` -> 0.164710), as Excel's ROUND, Postgres'
# numeric and the legacy warehouse round; polars rounds half to even by default, in `round`
# and in a cast to Decimal alike, and a float cannot hold the half (0.5195015 is stored a
# little below it). A number's text is read as an exact decimal (`_DIGITS`: 23 decimals,
# 14 integer digits, the most numeric(18,4) takes; more integer digits are out of range;
# decimals beyond the 23rd are dropped first, `_CUT`: no cell needs them, and polars'
# cast would round them half to even) and rounded once: rounding it at a first scale and
# again at 4 could turn 0.000049999 into 0.0001. Widened by one digit before rounding, so
# that 99999999999999.99995 rounds to a value that does not fit rather than failing the
# round. (A number Excel wrote with 17 digits, `2.0000499999999999` for a typed 2.00005,
# comes from the reader to 15, as Excel shows it, `2.00005`; only a text cell holding such
# digits is rounded as written, down.)
ROUNDING: Final = "half_away_from_zero"
_DIGITS = pl.Decimal(37, 23)
_CUT = r"^([+-]?[0-9]*\.[0-9]{23})[0-9]+$"  # decimals beyond the 23rd (plain decimals only)
# the fast paths' cells: plain decimals (or exponent form) with at most 23 decimals; a
# longer one goes to the full parser, which cuts it first
_FAST_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]{0,23}|\.[0-9]{1,23})(?:[eE][+-]?[0-9]+)?$"
EXCEL_EPOCH = date(1899, 12, 30)
MIN_YEAR, MAX_YEAR = 1990, 2099
# a currency sign (after NFKC, ￥ is ¥) and the spaces beside it, before the number (after
# its sign or accounting parenthesis) or after it; a space elsewhere in a number (`1 234`,
# `12 34`: two numbers in a cell?) leaves no number, except before a percent sign
_CURRENCY_FIRST = r"^([+-]?\(?)\s*[¥$€£]\s*"
_CURRENCY_LAST = r"\s*[¥$€£]\s*(\)?)$"
# commas only as thousands separators: 1-3 digits (no leading 0), then groups of exactly 3
# digits, then optional decimals (and a percent sign, for rates); `1.234,5`, `1,5`, `12,34`
# or `0,5` are no number: read as thousands they would be silently wrong amounts
_GROUPED = r"^[+-]?[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]*)?%?$"
_EXCEL_CELL = f"^(?:{EXCEL_DATE_CELL[1:-1]}|{'|'.join(EXCEL_BOOLEAN_CELLS)})$"  # either
# characters that show as nothing, Unicode's format characters (Cf: zero-width space and
# joiners, direction marks and embeddings as Windows copies them, word joiner, byte order
# mark, soft hyphen), pasted in with a code or a name from a web page or a chat: NFKC keeps
# them, and a key holding one silently differs from the same key without it. Removed from
# codes and company names (rules.company_name); other text keeps them.
INVISIBLE = r"\p{Cf}"


@dataclass(frozen=True)
class Parsed:
    value: pl.Expr
    error: pl.Expr | None = None
    # columns computed first, step by step (name -> expression over the cell and the steps
    # before), which `value` and `error` read by name: a part that several expressions share
    # is then evaluated once, not once per use (a polars expression tree repeats it)
    steps: tuple[dict[str, pl.Expr], ...] = ()

    def prepare(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """`frame` with the steps' columns, ready for `value` and `error`."""
        for step in self.steps:
            frame = frame.with_columns(**step)
        return frame


def quoted(expr: pl.Expr) -> pl.Expr:
    """The raw value as it appears in a reason: 'abc' (cut at 60 characters)."""
    text = expr.str.slice(0, 60)
    return pl.concat_str([pl.lit("'"), text, pl.lit("'")])


def _fail(condition: pl.Expr, why: str | pl.Expr, text: pl.Expr) -> pl.Expr:
    """`why` and the value quoted where `condition` holds, else null. The value is quoted
    only there: a reason built for every cell and then mostly dropped costs a string per
    value (a tenth of a code column's parsing)."""
    prefix = pl.lit(why) if isinstance(why, str) else why
    return pl.concat_str([prefix, quoted(pl.when(condition).then(text))])


def fold_placeholder(text: str) -> str:
    """A null placeholder as cells are compared with it: NFKC, trimmed, lower case."""
    return unicodedata.normalize("NFKC", text).strip().lower()


def blank_to_null(raw: pl.Expr, null_values: list[str]) -> pl.Expr:
    """Trim; a null placeholder (`-`, `N/A`, `无` …) becomes null, however it is typed:
    full width (`－`, `Ｎ/Ａ`, as a Chinese input method types them) or in other capitals
    (`NULL`, `n/a`). Other text stays as it was typed (trimmed): the parsers normalise it."""
    trimmed = raw.str.strip_chars()
    placeholders = sorted({fold_placeholder(v) for v in null_values} | {""})
    folded = trimmed.str.normalize("NFKC").str.strip_chars().str.to_lowercase()
    return pl.when(folded.is_in(placeholders)).then(None).otherwise(trimmed)


def parse_text(text: pl.Expr) -> Parsed:
    return Parsed(text)


def parse_code(text: pl.Expr) -> Parsed:
    """Codes: NFKC (full-width -> half-width), no invisible characters, and a number keeps
    no `.0`.

    An Excel date or boolean cell is no code (Excel turns a code typed as `2024-01` or
    `1-2` into a date): it is rejected, not kept as the code. Only the reader's exact
    spellings of such cells (`2024-01-01 00:00:00`, `true`, `false`) are caught.
    """
    is_cell = text.str.contains(_EXCEL_CELL)  # (one regex: a tenth of a code's parsing)
    normal = text.str.normalize("NFKC").str.replace_all(INVISIBLE, "").str.strip_chars()
    code = normal.str.replace(r"^(\d+)\.0+$", "${1}")
    code = pl.when(code != "").then(code)  # (a cell of invisible characters alone: none)
    why = (
        pl.when(text.str.len_bytes() > max(map(len, EXCEL_BOOLEAN_CELLS)))
        .then(pl.lit("a date, not a code (Excel may have turned the code into a date): "))
        .otherwise(pl.lit("a TRUE/FALSE cell, not a code: "))
    )
    return Parsed(pl.when(~is_cell).then(code), _fail(is_cell, why, text))


_NUMBER = "__number__"  # the number parsers' intermediate columns: __number__text, …


def _number(name: str) -> pl.Expr:
    return pl.col(_NUMBER + name)


def _number_text(text: pl.Expr) -> tuple[dict[str, pl.Expr], ...]:
    """Steps to `__number__text`: `¥ 1,234.5` -> `1234.5`; `( 1,234.5 )` -> `-1234.5`;
    `5 %` -> `5%`; full-width digits to ASCII; null where a comma is no thousands separator
    (`1,5`)."""
    cleaned = (
        text.str.normalize("NFKC")
        .str.replace(_CURRENCY_FIRST, "${1}")
        .str.replace(_CURRENCY_LAST, "${1}")
    )
    signed = _number("signed")
    misplaced = signed.str.contains(",", literal=True) & ~signed.str.contains(_GROUPED)
    # an accounting negative's parentheses, with the spaces inside them
    negative = cleaned.str.replace(r"^\(\s*(.+?)\s*\)$", "-${1}")
    return (
        {_NUMBER + "signed": negative.str.replace(r"\s+%$", "%")},
        {
            _NUMBER + "text": pl.when(misplaced)
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(signed.str.replace_all(",", "", literal=True))
        },
    )


def _as_float(text: pl.Expr) -> pl.Expr:
    # only plain decimal or scientific notation; polars would also accept inf/nan
    ok = text.str.contains(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    return pl.when(ok).then(text.cast(pl.Float64, strict=False)).otherwise(None)


def _digits(number: pl.Expr, cut: bool = True) -> pl.Expr:
    """A number's text (`-1234.56785`, `1.5E-05`) as an exact decimal, widened by one
    integer digit (see _DIGITS); null where it does not fit. `cut`: drop the decimals
    beyond the 23rd first (the fast paths' cells have none)."""
    exact = (number.str.replace(_CUT, "${1}") if cut else number).cast(_DIGITS, strict=False)
    return exact.cast(pl.Decimal(_DIGITS.precision + 1, _DIGITS.scale))


def _exact_money(number: pl.Expr, cut: bool = True) -> pl.Expr:
    """A number's text as money, rounded once, half away from zero; null where the exact
    decimal does not fit (too many digits, an exponent beyond it)."""
    return _digits(number, cut).round(MONEY.scale, mode=ROUNDING).cast(MONEY, strict=False)


def _percent_figure(figure: pl.Expr, has_percent: pl.Expr) -> pl.Expr:
    """`5%`, or a bare number above 1 in absolute value (3.5): a figure in percent."""
    return has_percent | (figure.abs() > 1)


def _exact_rate(number: pl.Expr, has_percent: pl.Expr, cut: bool = True) -> pl.Expr:
    """A number's text (without its %) as a rate, rounded once, half away from zero: a
    percent figure (`5%`; a bare number above 1, `3.5`) is rounded to 4 decimals and then
    divided by 100, exactly (the same as rounding the rate to 6); null where the exact
    decimal does not fit, and beyond numeric(10,6)."""
    figure = _digits(number, cut)
    shifted = figure.round(RATE.scale - 2, mode=ROUNDING) * pl.lit(Decimal("0.01"))
    as_rate = (
        pl.when(_percent_figure(figure, has_percent))
        .then(shifted)
        .otherwise(figure.round(RATE.scale, mode=ROUNDING))
    )
    return as_rate.cast(RATE, strict=False)


def _money_value(number: pl.Expr, as_float: pl.Expr) -> pl.Expr:
    exact = _exact_money(number)
    # an exponent form beyond the exact decimal (`1E-30`) goes through float; beyond
    # numeric(18,4) the cast would raise, so such a value stays null (a reject)
    in_range = pl.when(as_float.abs() < 1e14).then(as_float)
    return pl.coalesce(exact, in_range.round(MONEY.scale, mode=ROUNDING).cast(MONEY, strict=False))


def _number_error(
    text: pl.Expr, value: pl.Expr, as_float: pl.Expr, label: str, dtype: pl.Decimal
) -> pl.Expr:
    """A number that does not fit the column is out of range, anything else no number."""
    sql_type = f"numeric({dtype.precision},{dtype.scale})"  # the warehouse column's type
    why = (
        pl.when(as_float.is_not_null())
        .then(pl.lit(f"out of range for {sql_type}: "))
        .otherwise(pl.lit(f"not {label}: "))
    )
    return _fail(text.is_not_null() & value.is_null(), why, text)


def parse_money(text: pl.Expr, label: str = "a number") -> Parsed:
    number, as_float, value = _number("text"), _number("float"), _number("value")
    steps = (
        *_number_text(text),
        {_NUMBER + "float": _as_float(number)},
        {_NUMBER + "value": _money_value(number, as_float)},
    )
    return Parsed(value, _number_error(text, value, as_float, label, MONEY), steps)


def parse_integer(text: pl.Expr) -> Parsed:
    """A whole number (`11.0` is 11); one unit 年, 月 or 日 after it is dropped, as operators
    write the 年 and 月 columns (`2024年`, `11月`)."""
    whole = _number("text").str.replace(r"^([+-]?\d+(?:\.0+)?)\s*[年月日]$", "${1}")
    number = whole.str.replace(r"^([+-]?\d+)\.0+$", "${1}")
    value = _number("value")
    error = _fail(
        text.is_not_null() & value.is_null(),
        "not a whole number: ",
        text,
    )
    steps = (*_number_text(text), {_NUMBER + "value": number.cast(pl.Int64, strict=False)})
    return Parsed(value, error, steps)


def _rate_value(number: pl.Expr, figure: pl.Expr, has_percent: pl.Expr) -> pl.Expr:
    """The exact rate; where the text's exact decimal does not fit (`1E-300`), its float
    (`figure`), as money does."""
    as_rate = (
        pl.when(_percent_figure(figure, has_percent))
        .then(figure / 100)
        .otherwise(figure)
        .round(RATE.scale, mode=ROUNDING)
    )
    # numeric(10,6) holds |x| < 10,000; a larger figure is a reject, not a failed cast
    inexact = pl.when(as_rate.abs() < 1e4).then(as_rate).cast(RATE, strict=False)
    return pl.coalesce(_exact_rate(number, has_percent), inexact)


def parse_rate(text: pl.Expr) -> Parsed:
    """`5%` -> 0.05; a bare number above 1 in absolute value is a percent figure (3.5 -> 0.035)."""
    number, value = _number("text"), _number("value")
    steps = (
        *_number_text(text),
        {
            _NUMBER + "percent": number.str.ends_with("%"),
            _NUMBER + "float": _as_float(number.str.strip_suffix("%")),
        },
        {
            _NUMBER + "value": _rate_value(
                number.str.strip_suffix("%"), _number("float"), _number("percent")
            )
        },
    )
    error = _number_error(text, value, _number("float"), "a rate or percentage", RATE)
    return Parsed(value, error, steps)


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
# 2024.1 is January, or October typed as a number: Excel keeps 2024.10 as 2024.1
_AMBIGUOUS_MONTH = r"^\d{4}\.1$"
AMBIGUOUS_MONTH_REASON = (
    "ambiguous month (January, or October typed as a number: Excel keeps 2024.10 as 2024.1): "
)


_MONTH = "__month__"  # the month parser's intermediate columns: __month__text, …


def parse_month(text: pl.Expr) -> Parsed:
    """Any accepted date spelling -> the first day of its month.

    In steps: the normalised text, then every format's year, month and day, then the first
    format that matched. As one expression the normalised text and the years were repeated
    in every use (~10 ms for a handful of cells, against ~1.5 ms in steps).
    """

    def col(name: str) -> pl.Expr:
        return pl.col(_MONTH + name)

    normal = (
        text.str.normalize("NFKC")
        .str.strip_chars()
        .str.replace_all(r"\s*([年月日/-])\s*", "${1}")
        .str.replace_all(r"\s+", " ")
    )
    parts: dict[str, pl.Expr] = {}
    years: list[pl.Expr] = []
    months: list[pl.Expr] = []
    days: list[pl.Expr] = []
    for i, (pattern, two_digit) in enumerate(_MONTH_FORMATS):
        found = {
            f"{part}{i}": col("text").str.extract(pattern, group).cast(pl.Int32, strict=False)
            for group, part in enumerate("ymd", start=1)
        }
        parts.update({_MONTH + name: expr for name, expr in found.items()})
        year = col(f"y{i}") + 2000 if two_digit else col(f"y{i}")
        years.append(year)
        months.append(col(f"m{i}"))
        days.append(pl.when(year.is_not_null()).then(col(f"d{i}").fill_null(1)))
    # an Excel serial day number (45597 = 2024-11-01) in a column that mixes text and dates
    parts[_MONTH + "serial"] = pl.lit(EXCEL_EPOCH) + pl.duration(
        days=col("text")
        .str.extract(r"^(\d{5})(?:\.0+)?$", 1)
        .cast(pl.Int64, strict=False)
        .cast(pl.Int32)
    )
    parts[_MONTH + "ambiguous"] = col("text").str.contains(_AMBIGUOUS_MONTH)
    serial_date = col("serial")
    years.append(serial_date.dt.year())
    months.append(serial_date.dt.month().cast(pl.Int32))
    days.append(pl.when(serial_date.is_not_null()).then(pl.lit(1, dtype=pl.Int32)))

    year, month, day = col("year"), col("month"), col("day")
    # a day must be one of its month's (2024-02-30 is no date); the period drops it
    start = col("start")
    days_in_month = start.dt.month_end().dt.day()
    valid = (
        year.is_between(MIN_YEAR, MAX_YEAR)
        & month.is_between(1, 12)
        & day.is_between(1, days_in_month)
    )
    value = col("value")
    why = (
        pl.when(col("ambiguous"))
        .then(pl.lit(AMBIGUOUS_MONTH_REASON))
        .otherwise(pl.lit("not a date or month: "))
    )
    error = _fail(text.is_not_null() & value.is_null(), why, text)
    steps = (
        {_MONTH + "text": normal},
        parts,
        {
            _MONTH + "year": pl.coalesce(years),
            _MONTH + "month": pl.coalesce(months),
            _MONTH + "day": pl.coalesce(days),
        },
        {_MONTH + "start": pl.date(year.clip(MIN_YEAR, MAX_YEAR), month.clip(1, 12), 1)},
        {_MONTH + "value": pl.when(valid & ~col("ambiguous")).then(start).otherwise(None)},
    )
    return Parsed(value, error, steps)


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


@dataclass(frozen=True)
class FastPath:
    """A cheaper parser equal to the full one wherever it gives a value."""

    pattern: str  # raw (untrimmed) cells it may parse
    value: Callable[[pl.Expr], pl.Expr]

    def handles(self, raw: pl.Expr, null_values: list[str]) -> pl.Expr:
        """Cells this fast path may parse: the pattern, minus any placeholder it matches."""
        matches = raw.str.contains(self.pattern)
        folded = {fold_placeholder(v) for v in null_values}
        numeric_placeholders = sorted(v for v in folded if re.match(self.pattern, v))
        if not numeric_placeholders:
            return matches
        # (cells it matches are ASCII: folding them is lower case, `1E5` -> `1e5`)
        return matches & ~raw.str.to_lowercase().is_in(numeric_placeholders)


def _plain_money(raw: pl.Expr) -> pl.Expr:
    # where the exact cast fails (exponents, overflow) the full parser's float route decides
    return _exact_money(raw, cut=False)


def _plain_rate(raw: pl.Expr) -> pl.Expr:
    # where the exact cast fails (an exponent beyond it) the full parser's float route decides
    return _exact_rate(raw, pl.lit(False), cut=False)


FAST_PATHS = {
    "money": FastPath(_FAST_NUMBER, _plain_money),
    "rate": FastPath(_FAST_NUMBER, _plain_rate),
}

DTYPES: dict[str, pl.DataType] = {
    "text": pl.String(),
    "code": pl.String(),
    "month": pl.Date(),
    "money": MONEY,
    "rate": RATE,
    "integer": pl.Int64(),
}
