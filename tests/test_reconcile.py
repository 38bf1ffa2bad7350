"""A sheet's own totals row against the rows read (workdatahub/reconcile.py): no database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests import hostile_corpus as corpus
from tests.workbooks import TRUSTEE_HEADER
from workdatahub.pipeline import check_file
from workdatahub.reconcile import differences, unchecked
from workdatahub.sources.spec import SourcesFile

ROWS = [
    [2024, 11, "P0001", "C01", "5%", 1.5, 100.25],
    [2024, 11, "P0002", "C01", "5%", 1.5, "200.5"],
    [2024, 11, "P0003", "C01", "5%", 1.5, 300.0001],
]


def _checked(sources: SourcesFile, tmp_path: Path, rows: list[list[Any]]) -> Any:
    path = corpus.trustee_book(tmp_path / "受托业绩.xlsx", rows)
    return check_file(sources.domain("trustee_performance"), path)


def _totals(scale: object) -> list[object]:
    return ["合计", None, None, None, None, None, scale]


def test_a_totals_row_that_adds_up_to_the_cent_is_no_warning(
    sources: SourcesFile, tmp_path: Path
) -> None:
    checked = _checked(sources, tmp_path, [*ROWS, _totals(600.75)])
    assert checked.totals == {
        "fund_scale": {
            "header": "规模", "stated": "600.7500", "loaded": "600.7501", "rejected": "0.0000",
            "rejected_not_numbers": 0, "difference": "-0.0001", "tolerance": "0.02",
        }
    }  # fmt: skip
    assert differences(checked.totals) == []


def test_a_totals_row_that_does_not_add_up_is_told_with_its_numbers(
    sources: SourcesFile, tmp_path: Path
) -> None:
    checked = _checked(sources, tmp_path, [*ROWS, _totals("1,000.75")])
    assert differences(checked.totals) == [
        "规模 states 1,000.75, the rows loaded sum to 600.75 and the rejected rows to 0.00: "
        "off by 400.00"
    ]


def test_rejected_rows_count_with_their_amounts_and_cells_that_are_no_number(
    sources: SourcesFile, tmp_path: Path
) -> None:
    rejected = [
        [2024, 11, None, "C01", "5%", 1.5, 50],  # no plan code: rejected, its 50 counted
        [2024, 11, "P0009", "C01", "5%", 1.5, "abc"],  # no number: what it was is unknown
    ]
    checked = _checked(sources, tmp_path, [*ROWS, *rejected, _totals(650.75)])
    assert checked.validated.rows_rejected == 2
    entry = checked.totals["fund_scale"]
    assert (entry["rejected"], entry["rejected_not_numbers"], entry["difference"]) == (
        "50.0000",
        1,
        "-0.0001",
    )
    off = _checked(sources, tmp_path / "off", [*ROWS, *rejected, _totals(700.75)])
    assert differences(off.totals) == [
        "规模 states 700.75, the rows loaded sum to 600.75 and the rejected rows to 50.00: "
        "off by 50.00; 1 rejected cell of it no number"
    ]


@pytest.mark.parametrize(
    "totals",
    [
        [],  # no totals row: nothing to check
        [_totals(None)],  # the row states nothing for the column
    ],
)
def test_without_a_stated_total_nothing_is_checked(
    sources: SourcesFile, tmp_path: Path, totals: list[list[object]]
) -> None:
    assert _checked(sources, tmp_path, [*ROWS, *totals]).totals is None


def test_the_totals_label_in_an_amount_column_is_no_total(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """Columns shuffled: the 合计 label sits in an amount column (净值), which states no
    total; the other amount column (规模) is checked."""
    labelled = [2024, 11, None, None, None, "合计", 600.75]
    checked = _checked(sources, tmp_path, [*ROWS, labelled])
    assert unchecked(checked.totals) == []
    assert checked.totals is not None and set(checked.totals) == {"fund_scale"}
    assert differences(checked.totals) == []


def test_what_cannot_be_checked_says_why(sources: SourcesFile, tmp_path: Path) -> None:
    subtotals = _checked(sources, tmp_path, [*ROWS, _totals(300), _totals(600.75)])
    assert unchecked(subtotals.totals) == [
        "the sheet: 2 totals rows: which one is the total is not known"
    ]
    assert differences(subtotals.totals) == []
    worded = _checked(sources, tmp_path / "worded", [*ROWS, _totals("600.75元")])
    assert unchecked(worded.totals) == ["规模: its total '600.75元' is no number"]


def test_a_total_the_reader_cannot_vouch_for_is_not_checked(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """A workbook that asks for its formulas to be recomputed (as programs write them) has
    its data formulas rejected; its 合计 formula's saved value is no more to be trusted."""

    def total(book: Any, sheet: Any) -> None:
        sheet.write_formula(4, 6, "=SUM(G2:G4)", None, 999999)

    rows = [TRUSTEE_HEADER, *ROWS, _totals(None)]
    saved = corpus.sheet_book(tmp_path / "saved.xlsx", rows, edit=total)
    asks = corpus.patch_zip(
        saved,
        tmp_path / "asks.xlsx",
        {"xl/workbook.xml": lambda xml: xml.replace(b"<calcPr ", b'<calcPr fullCalcOnLoad="1" ')},
    )
    checked = check_file(sources.domain("trustee_performance"), asks)
    assert differences(checked.totals) == []
    assert unchecked(checked.totals) == [
        "规模: its total cannot be vouched for (formula whose saved value the workbook says "
        "to recompute (written by a program))"
    ]
    # once saved by Excel, the same total is checked (and 999999 is off)
    trusted = check_file(sources.domain("trustee_performance"), saved)
    assert differences(trusted.totals)[0].startswith("规模 states 999,999.00")


def test_amounts_with_more_decimals_than_four_do_not_make_a_false_alarm(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """1,000 amounts of 100/12: the workbook sums them to 8,333.33, the load's rounded ones
    to 8,333.30; the rounding is within the tolerance, a missing row is not."""
    rows = [[2024, 11, f"P{i:04d}", "C01", "5%", 1.5, 100 / 12] for i in range(1000)]
    stated = round(sum(100 / 12 for _ in range(1000)), 2)
    checked = _checked(sources, tmp_path, [*rows, _totals(stated)])
    assert checked.totals["fund_scale"]["difference"] == "0.0300"
    assert differences(checked.totals) == []
    short = _checked(sources, tmp_path / "short", [*rows[:-1], _totals(stated)])
    assert differences(short.totals)[0].endswith("off by 8.36")


def test_the_tolerance_grows_with_the_rows_as_a_spreadsheets_float_sum_does() -> None:
    from workdatahub.reconcile import _tolerance

    small = _tolerance(300, Decimal("49515369.2304") * 300)
    assert small == Decimal("0.03")  # a cent and 300 half-units of rounding
    large = _tolerance(500_000, Decimal("89665497.3745") * 500_000)
    assert Decimal("25") < large < Decimal("60")


def test_every_sample_sheets_totals_row_adds_up(sources: SourcesFile, tmp_path: Path) -> None:
    """The sample workbooks' 合计 rows (sums of the amounts as written, text spellings
    included, a rejected row's junk left out, as a SUM leaves text out) against what the
    pipeline reads: every amount parsed, rejected or loaded, is accounted for."""
    from datetime import date

    from workdatahub.samples import write_samples

    files = write_samples(tmp_path, months=[date(2024, 2, 1), date(2024, 3, 1)], rows=400, seed=9)
    checked = 0
    for sample in files:
        result = check_file(sources.domains[sample.domain], sample.path)
        if result.totals is None:
            continue
        assert differences(result.totals) == [], (sample.domain, sample.path.name)
        assert result.validated.rows_rejected > 0  # (rejected rows were accounted for)
        checked += 1
    assert checked >= 4
