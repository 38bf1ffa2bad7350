"""A sheet's own totals row (合计/总计) against the rows read.

Most monthly sheets end with a 合计 row of their amounts. The reader skips it (it is no
data), and here it checks the load: for each money column the row states, the stated total
against the sum of the rows loaded plus the amounts of the rows rejected (those that are
numbers). A rejected row whose amount is no number, a row hidden from the sum, a formula
summing the wrong range, a sheet cut short: each leaves a difference, which the load log
keeps (`audit.loads.totals`) and the load reports as a warning. Amounts agree to the cent
(a workbook shows its totals to two decimals), give or take what the load's rounding of
each amount to four decimals may add up to (half of 0.0001 a row: a sheet of 1,000 amounts
of 100/12 sums to 8,333.33 in the workbook and 8,333.30 once rounded) and what a
spreadsheet's own sum of doubles is off by (each addition rounds by up to 2^-53 of the sum
so far: four times the square root of the rows times 2^-52 of the amounts' absolute sum;
28 for 500,000 rows summing to 45 trillion, where the sample's own sum was off by 0.95).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl

from workdatahub.cleansing.values import blank_to_null, parse_money
from workdatahub.excel.reader import CELL_ISSUE, TOTALS_MARKERS, SheetData
from workdatahub.sources.spec import DomainSpec

CENT = Decimal("0.01")
SHEET = "(sheet)"  # the key of what is said of the whole sheet (no column is named so)


def _money(frame: pl.DataFrame, name: str, null_values: list[str]) -> pl.LazyFrame:
    """The column's cells as money (`value`), and whether each held text that is no number
    (`unparsed`)."""
    parsed = parse_money(blank_to_null(pl.col(name), null_values))
    error = parsed.error if parsed.error is not None else pl.lit(None, dtype=pl.String)
    return parsed.prepare(frame.lazy().select(name)).select(
        parsed.value.alias("value"), error.is_not_null().alias("unparsed")
    )


def _float_error(magnitude: Decimal, rows: int) -> Decimal:
    """How far a sum of `rows` doubles whose absolute values sum to `magnitude` is off (its
    rounding errors adding up as a random walk, four deviations)."""
    return 4 * magnitude * Decimal(rows).sqrt() * Decimal(2) ** -52


def _tolerance(rows: int, magnitude: Decimal) -> Decimal:
    """The difference a correct totals row may show against `rows` amounts whose absolute
    values sum to `magnitude`: a cent, the amounts' rounding to four decimals, a
    spreadsheet's float sum; to the cent above."""
    bound = CENT + rows * Decimal("0.00005") + _float_error(magnitude, rows)
    return bound.quantize(CENT, rounding="ROUND_CEILING")


def _decimal(value: object) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


def totals_check(
    spec: DomainSpec, sheet: SheetData, loaded: pl.DataFrame, rejected_rows: pl.DataFrame
) -> dict[str, dict[str, Any]] | None:
    """Per money column of the sheet's one totals row: the header, what the row states, the
    rows loaded, the rejected rows' amounts (and how many of their cells were no number),
    the difference and the tolerance; a column whose total is no number, and a sheet with
    several totals rows (subtotals: which is the total is not known), say why they are not
    checked (`not_checked`, the sheet's under SHEET); None without a totals row. One query
    per column (the totals row and the rejected rows parsed together, all columns at once)
    and one pass over the rows loaded: a fixed cost of every load."""
    if sheet.totals is None:
        return None
    if sheet.totals.height != 1:
        why = f"{sheet.totals.height} totals rows: which one is the total is not known"
        return {SHEET: {"not_checked": why}}
    names = [
        column.name
        for column in spec.source_columns
        if column.type == "money" and column.name in sheet.totals.columns
        and column.name in loaded.columns
    ]  # fmt: skip
    if not names:
        return None
    # the totals row first, then the rejected rows
    cells = pl.concat([sheet.totals.select(names), rejected_rows.select(names)])
    parsed = pl.collect_all([_money(cells, name, spec.null_values) for name in names])
    sums = loaded.select(
        *[pl.col(n).sum().alias(f"sum{k}") for k, n in enumerate(names)],
        *[pl.col(n).abs().sum().alias(f"abs{k}") for k, n in enumerate(names)],
        *[pl.col(n).count().alias(f"count{k}") for k, n in enumerate(names)],
    ).row(0, named=True)
    checked: dict[str, dict[str, Any]] = {}
    for k, (name, got) in enumerate(zip(names, parsed, strict=True)):
        header = sheet.columns.get(name, name)
        # a total the reader cannot vouch for (a formula the workbook says to recompute, an
        # unsaved one, a merged cell) is no figure to set the rows against
        issue = sheet.totals[CELL_ISSUE + name][0] if CELL_ISSUE + name in sheet.totals else None
        if issue is not None:
            why = f"its total cannot be vouched for ({issue.split(';')[0]})"
            checked[name] = {"header": header, "not_checked": why}
            continue
        if got["value"][0] is None:
            shown = str(sheet.totals[name][0])[:40]
            # (else the row leaves this column empty, or holds its 合计 label there)
            if got["unparsed"][0] and shown.strip() not in TOTALS_MARKERS:
                checked[name] = {
                    "header": header,
                    "not_checked": f"its total {shown!r} is no number",
                }
            continue
        rejected = got.slice(1)
        stated, rows = _decimal(got["value"][0]), _decimal(sums[f"sum{k}"])
        other = _decimal(rejected["value"].sum())
        magnitude = _decimal(sums[f"abs{k}"]) + _decimal(rejected["value"].abs().sum())
        count = int(sums[f"count{k}"]) + rejected["value"].count()
        checked[name] = {
            "header": header,
            "stated": str(stated),
            "loaded": str(rows),
            "rejected": str(other),
            "rejected_not_numbers": int(rejected["unparsed"].sum()),
            "difference": str(stated - rows - other),
            "tolerance": str(_tolerance(count, magnitude)),
        }
    return checked or None


def unchecked(checked: dict[str, dict[str, Any]] | None) -> list[str]:
    """One phrase per column (or the sheet) the totals row could not be checked for."""
    return [
        f"{entry.get('header', 'the sheet')}: {entry['not_checked']}"
        for entry in (checked or {}).values()
        if "not_checked" in entry
    ]


def differences(checked: dict[str, dict[str, Any]] | None) -> list[str]:
    """One phrase per column whose total is off by more than its tolerance."""
    found = []
    for entry in (checked or {}).values():
        if "difference" not in entry:
            continue
        difference = Decimal(entry["difference"])
        if abs(difference) <= Decimal(entry["tolerance"]):
            continue
        cells = entry["rejected_not_numbers"]
        unread = (
            f"; {cells} rejected cell{'s' if cells != 1 else ''} of it no number" if cells else ""
        )
        found.append(
            f"{entry['header']} states {Decimal(entry['stated']):,.2f}, the rows loaded sum "
            f"to {Decimal(entry['loaded']):,.2f} and the rejected rows to "
            f"{Decimal(entry['rejected']):,.2f}: off by {difference:,.2f}{unread}"
        )
    return found
