"""A sheet's own totals row against the rows read (workdatahub/reconcile.py): no database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.workbooks import TRUSTEE_HEADER, write_workbook
from workdatahub.pipeline import check_file
from workdatahub.reconcile import differences
from workdatahub.sources.spec import SourcesFile

ROWS = [
    [2024, 11, "P0001", "C01", "5%", 1.5, 100.25],
    [2024, 11, "P0002", "C01", "5%", 1.5, "200.5"],
    [2024, 11, "P0003", "C01", "5%", 1.5, 300.0001],
]


def _checked(sources: SourcesFile, tmp_path: Path, rows: list[list[Any]]) -> Any:
    path = write_workbook(tmp_path / "受托业绩.xlsx", {"Sheet1": [TRUSTEE_HEADER, *rows]})
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
            "rejected_not_numbers": 0, "difference": "-0.0001", "tolerance": "0.01",
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
        [_totals(300), _totals(600.75)],  # subtotals: which one is the total is not known
        [_totals(None)],  # the row states nothing for the column
    ],
)
def test_without_one_stated_total_nothing_is_checked(
    sources: SourcesFile, tmp_path: Path, totals: list[list[object]]
) -> None:
    assert _checked(sources, tmp_path, [*ROWS, *totals]).totals is None


def test_the_tolerance_grows_with_the_rows_as_a_spreadsheets_float_sum_does() -> None:
    from workdatahub.reconcile import _float_error

    assert _float_error(Decimal("14854610769.11"), 300) == Decimal("0.01")
    assert Decimal("1") < _float_error(Decimal("44832748687269.54"), 500_000) < Decimal("50")
