"""Hostile workbooks: each gives quarantined rows with reasons, or one clear error line
(exit code 2) naming the file and, where there is one, the sheet, row and column; never a
traceback and never a partial load (a month in the warehouse is the month in the workbook,
or the previous month untouched).

The corpus is generated (tests/hostile_corpus.py). Outcomes are asserted exactly through
the operator's entry point, `wdh check` (in-process, the same `workdatahub.cli.main`; a
few in a real process to prove no traceback and no crash), and `run_partition` against
the warehouse for what a load does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import hostile_corpus as corpus
from tests.hostile_corpus import trustee_book, trustee_rows
from tests.test_cli import ROOT, wdh
from tests.workbooks import (
    ANNUITY_INCOME_HEADER,
    TRUSTEE_HEADER,
    trustee_folder,
    write_workbook,
)
from workdatahub.errors import InputError
from workdatahub.excel.reader import CELL_ISSUE, ROW, read_sheet
from workdatahub.sources.spec import SourcesFile

NOV = date(2024, 11, 1)
PROCESS = {"cwd": ROOT, "env": dict(os.environ), "text": True, "stdout": -1, "stderr": -1}
H = TRUSTEE_HEADER
UNSAVED = "formula without a saved value; open and save the workbook in Excel"
STALE = (
    "formula whose saved value the workbook says to recompute (written by a program); open and "
    "save the workbook in Excel"
)


def check(path: Path, domain: str = "trustee_performance") -> tuple[int, Any]:
    """`wdh check DOMAIN FILE --period 2024-11 --json`: (exit code, payload or error line).
    Any share of rejected rows is accepted: these sheets are a few rows, some rejected."""
    done = wdh(
        "check", domain, str(path), "--period", "2024-11", "--json", "--max-reject-rate", "1"
    )
    assert "Traceback" not in done.stderr
    if done.returncode:
        assert done.stderr.count("\n") == 1, done.stderr  # one line
        return done.returncode, done.stderr.removeprefix("wdh: error: ").rstrip("\n")
    return 0, json.loads(done.stdout)


def rejects(payload: dict[str, Any]) -> list[tuple[int, str, str | None, str]]:
    return [(r["row"], r["column"], r["value"], r["reason"]) for r in payload["rejects"]]


# --------------------------------------------------------------------------- whole-file errors


def _text(content: bytes) -> Callable[[Path, Path], Path]:
    def build(path: Path, tmp: Path) -> Path:
        path.write_bytes(content)
        return path

    return build


def _hidden_first(book: Any, sheet: Any) -> None:
    book.worksheets()[0].hide()
    sheet.activate()


def _far_cell(book: Any, sheet: Any) -> None:
    sheet.write_string(1_048_575, 16_383, "x")  # XFD1048576: Ctrl+End, then a stray keystroke


def _build_annuity(sheets: dict[str, list[Any]]) -> Callable[[Path, Path], Path]:
    return lambda path, tmp: write_workbook(path, sheets)


FILE_ERRORS: dict[str, tuple[Callable[[Path, Path], Path], str, str]] = {
    # name: (builder, domain, message after "<path>: ")
    "not_a_zip": (
        _text(b"plan,company\nP1,C1\n"),
        "trustee_performance",
        "not a readable workbook (not an .xlsx zip container; an old .xls or a "
        "password-protected file must be re-saved as .xlsx)",
    ),
    "empty_file": (
        _text(b""),
        "trustee_performance",
        "not a readable workbook (the file is empty, 0 bytes)",
    ),
    "truncated_copy": (
        corpus.truncated,
        "trustee_performance",
        "not a readable workbook (the zip container is damaged or cut short: an incomplete copy?)",
    ),
    "zip_not_a_workbook": (
        lambda p, t: corpus.zip_of(p, {"notes/readme.txt": b"hello"}),
        "trustee_performance",
        "not a readable workbook (a zip archive with no Excel workbook inside)",
    ),
    "word_document_renamed": (
        lambda p, t: corpus.zip_of(
            p,
            {
                "_rels/.rels": b'<Relationships xmlns="http://schemas.openxmlformats.org/package/'
                b'2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxml'
                b'formats.org/officeDocument/2006/relationships/officeDocument" '
                b'Target="word/document.xml"/></Relationships>',
                "word/document.xml": b'<document xmlns="http://schemas.openxmlformats.org/'
                b'wordprocessingml/2006/main"/>',
            },
        ),
        "trustee_performance",
        "not a readable workbook (a zip archive with no Excel workbook inside)",
    ),
    "ods_renamed": (
        lambda p, t: corpus.zip_of(
            p,
            {"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b"<x/>"},
        ),
        "trustee_performance",
        "is an OpenDocument spreadsheet (.ods) named .xlsx; save it as .xlsx",
    ),
    "xlsb_renamed": (
        lambda p, t: corpus.zip_of(
            p,
            {
                "_rels/.rels": b'<Relationships><Relationship Id="rId1" Type="http://schemas.'
                b"openxmlformats.org/officeDocument/2006/relationships/officeDocument"
                b'" Target="xl/workbook.bin"/></Relationships>',
                "xl/workbook.bin": b"\x83\x01\x00",
            },
        ),
        "trustee_performance",
        "is an Excel binary workbook (.xlsb) named .xlsx; save it as .xlsx",
    ),
    "old_xls_renamed": (
        lambda p, t: corpus.old_xls(p),
        "trustee_performance",
        "is an old Excel 97-2003 .xls workbook named .xlsx; open it in Excel and save it as .xlsx",
    ),
    "password_protected": (
        lambda p, t: corpus.encrypted_workbook(p),
        "trustee_performance",
        "is password-protected (an encrypted workbook cannot be read); remove the password in "
        "Excel and save it again as .xlsx",
    ),
    "unknown_ole_container": (
        lambda p, t: corpus.ole_file(p, {"Contents": b"x"}),
        "trustee_performance",
        "is password-protected or an old .xls workbook (an OLE container, not .xlsx); remove any "
        "password and save it as .xlsx",
    ),
    "xml_entities_in_workbook": (
        corpus.with_dtd,
        "trustee_performance",
        "not a readable workbook (xl/workbook.xml declares a DTD)",
    ),
    "workbook_without_sheets": (
        corpus.without_sheets,
        "trustee_performance",
        "the workbook has no sheets",
    ),
    "sheet_xml_corrupt": (
        corpus.corrupt_sheet_xml,
        "trustee_performance",
        "sheet 'Sheet1': unreadable (calamine error: Xlsx error: Xml error: syntax error: tag "
        "not closed: `>` not found before end of input)",
    ),
    "empty_sheet": (
        lambda p, t: corpus.sheet_book(p, []),
        "trustee_performance",
        "sheet 'Sheet1' is empty",
    ),
    "sheet_missing": (
        _build_annuity({"收入明细": [["月度"]], "其他": [["x"]]}),
        "annuity_performance",
        "sheet '规模明细' not found (sheets: 收入明细, 其他)",
    ),
    "two_sheets_match_the_name": (
        _build_annuity({"规模明细": [["月度"]], "规模明细 ": [["月度"]]}),
        "annuity_performance",
        "sheets '规模明细' and '规模明细 ' both match '规模明细'; rename one of them",
    ),
    "header_row_missing": (
        lambda p, t: corpus.sheet_book(p, [["计划", "公司"], ["P1", "C1"]]),
        "trustee_performance",
        "sheet 'Sheet1': no header row found in the first 2 rows (expected headers: 年, 月, "
        "计划代码, 公司代码, 收益率, 净值, 规模)",
    ),
    "header_below_row_50": (
        lambda p, t: corpus.sheet_book(p, [*[["标题"]] * 55, H, *trustee_rows(1)]),
        "trustee_performance",
        "sheet 'Sheet1': no header row found in the first 50 rows (expected headers: 年, 月, "
        "计划代码, 公司代码, 收益率, 净值, 规模)",
    ),
    "required_column_missing": (
        lambda p, t: corpus.sheet_book(
            p, [[h for h in H if h != "公司代码"], [2024, 11, "P1", "5%", 1, 2]]
        ),
        "trustee_performance",
        "sheet 'Sheet1': required column missing: 公司代码 (header row 1)",
    ),
    "amounts_in_wan_yuan": (
        lambda p, t: corpus.sheet_book(p, [["单位：万元"], H, *trustee_rows(1)]),
        "trustee_performance",
        "sheet 'Sheet1': row 1: the sheet states '单位：万元'; amounts load as 元, as the "
        "contract has them: convert the sheet to 元 (or correct that line) and load it again",
    ),
    "duplicate_header_off_origin": (
        lambda p, t: write_workbook(
            p,
            {"S": [["2024年11月"], [*H, "计划代码"], [2024, 11, "P1", "C1", 1, 2, 3, "P2"]]},
            first_row=2,
            first_col=2,
        ),
        "trustee_performance",
        "sheet 'S': row 4: header '计划代码' appears twice (columns E and J) for plan_code",
    ),
    "duplicate_header_by_alias": (
        _build_annuity({"收入明细": [[*ANNUITY_INCOME_HEADER, "计划号"], ["202411"] * 15]}),
        "annuity_income",
        "sheet '收入明细': row 1: headers '计划代码' (column D) and '计划号' (column O) both name "
        "the same column for plan_code",
    ),
    "duplicate_header_in_an_annuity_sheet": (
        _build_annuity({"收入明细": [[*ANNUITY_INCOME_HEADER, "计划代码"], ["202411"] * 15]}),
        "annuity_income",
        "sheet '收入明细': row 1: header '计划代码' appears twice (columns D and O) for plan_code",
    ),
    "header_only": (
        lambda p, t: trustee_book(p, []),
        "trustee_performance",
        "sheet 'Sheet1': no data rows below the header (row 1)",
    ),
    "only_blank_and_totals_rows": (
        lambda p, t: trustee_book(p, [None, [" ", None], ["合计", None, None, None, None, 1, 2]]),
        "trustee_performance",
        "sheet 'Sheet1': no data rows below the header (row 1); 2 blank and 1 totals rows skipped",
    ),
    "only_totals_and_a_footer": (
        lambda p, t: trustee_book(p, [["合计", None, None, None, None, 1, 2], ["制表人：张三"]]),
        "trustee_performance",
        "sheet 'Sheet1': no data rows below the header (row 1); 0 blank, 1 totals and 1 footer "
        "rows skipped",
    ),
    "stray_cell_at_xfd1048576": (
        lambda p, t: corpus.sheet_book(p, [H, *trustee_rows(2)], edit=_far_cell),
        "trustee_performance",
        "sheet 'Sheet1': cells are used up to XFD1048576 (1,048,576 rows × 16,384 columns), more "
        "than the 64,000,000 cells a sheet may span; delete the rows and columns beyond the "
        "table (Ctrl+End shows the last used cell) and save",
    ),
    "spill_error_cell": (
        corpus.spill_error,
        "trustee_performance",
        "sheet 'Sheet1': cell F3 holds the Excel error #SPILL!, which cannot be read; correct "
        "the formula or paste the values, then save",
    ),
}


@pytest.mark.parametrize("case", list(FILE_ERRORS))
def test_file_error_is_one_line_naming_the_file_exit_2(case: str, tmp_path: Path) -> None:
    build, domain, message = FILE_ERRORS[case]
    path = build(tmp_path / f"{case}.xlsx", tmp_path)
    code, line = check(path, domain)
    assert (code, line) == (2, f"{path}: {message}")


def test_real_processes_print_one_line_and_exit_2(tmp_path: Path) -> None:
    """The real command, each in a process of its own (started together: start-up is most of
    the time): no traceback, and for XFD1048576 no abort inside calamine, which would try to
    allocate 17 billion cells and kill the process."""
    cases = ["stray_cell_at_xfd1048576", "password_protected"]
    running = {}
    for case in cases:
        build, domain, message = FILE_ERRORS[case]
        path = build(tmp_path / f"{case}.xlsx", tmp_path)
        command = [sys.executable, "-m", "workdatahub.cli", "check", domain, str(path)]
        running[case] = (path, message, subprocess.Popen(command, **PROCESS))  # type: ignore[call-overload]
    for case, (path, message, process) in running.items():
        stdout, stderr = process.communicate(timeout=120)
        assert (case, process.returncode, stdout) == (case, 2, "")
        assert stderr == f"wdh: error: {path}: {message}\n"


# --------------------------------------------------------------------------- rows: rejects


def test_dates_as_serial_numbers_and_text_in_one_column(tmp_path: Path) -> None:
    def row(period: object) -> list[object]:
        return [period, "企年受托", "集合计划", "P1", "n", "t", "F1", "p", "c", "北京", 1, 2, 3, 4]

    periods: list[object] = [
        date(2024, 11, 1),  # row 2: a date cell
        45597,  # row 3: the serial number of 2024-11-01, stored as a number
        "45597",  # row 4: the same typed as text
        "2024-11", "2024年11月", "202411", "24年11月", "2024/11", "20241130",  # rows 5-10
        45627,  # row 11: 2024-12-01
        "2024-13",  # row 12
        "11/2024",  # row 13: month first is not an accepted spelling
        "上月",  # row 14
    ]  # fmt: skip
    path = write_workbook(
        tmp_path / "a.xlsx", {"收入明细": [ANNUITY_INCOME_HEADER, *[row(p) for p in periods]]}
    )
    code, payload = check(path, "annuity_income")
    assert code == 0
    assert (payload["rows_read"], payload["rows_valid"]) == (13, 9)
    assert rejects(payload) == [
        (11, "period", "45627", "period mismatch: row is for 2024-12, loading 2024-11"),
        (12, "period", "2024-13", "not a date or month: '2024-13'"),
        (13, "period", "11/2024", "not a date or month: '11/2024'"),
        (14, "period", "上月", "not a date or month: '上月'"),
    ]


def test_numbers_with_stray_text(tmp_path: Path) -> None:
    values: list[object] = [
        "1,234.5元", "约100", "1.2.3", "100 (估)", True, "NaN", "inf",  # rows 2-8: rejected
        "¥1,000", "(500)", "１２３", " 7 ", "1e3",  # rows 9-13: numbers as operators write them
    ]  # fmt: skip
    rows = [[2024, 11, f"P{i}", "C01", "5%", v, 1] for i, v in enumerate(values)]
    code, payload = check(trustee_book(tmp_path / "t.xlsx", rows))
    assert code == 0
    assert rejects(payload) == [
        (2, "net_value", "1,234.5元", "not a number: '1,234.5元'"),
        (3, "net_value", "约100", "not a number: '约100'"),
        (4, "net_value", "1.2.3", "not a number: '1.2.3'"),
        (5, "net_value", "100 (估)", "not a number: '100 (估)'"),
        (6, "net_value", "true", "not a number: 'true'"),  # a TRUE cell
        (7, "net_value", "NaN", "not a number: 'NaN'"),
        (8, "net_value", "inf", "not a number: 'inf'"),
    ]
    assert payload["rows_valid"] == 5


def test_number_too_large_for_the_column_is_a_reject(tmp_path: Path) -> None:
    rows = [[2024, 11, "P1", "C01", "5%", 1e20, 1], [2024, 11, "P2", "C01", "1e10", 1, 1]]
    code, payload = check(trustee_book(tmp_path / "t.xlsx", rows))
    assert code == 0, payload
    assert rejects(payload) == [
        (
            2,
            "net_value",
            "100000000000000000000",
            "out of range for numeric(18,4): '100000000000000000000'",
        ),
        (3, "return_rate", "1e10", "out of range for numeric(10,6): '1e10'"),
    ]


def test_ten_thousand_character_cells(tmp_path: Path) -> None:
    long_code, long_number = "P" * 10_000, "9" * 10_000
    rows = [[2024, 11, long_code, "C01", "5%", 1, 2], [2024, 11, "P2", "C01", "5%", long_number, 2]]
    code, payload = check(trustee_book(tmp_path / "t.xlsx", rows))
    assert code == 0
    # text is kept whole; a reason quotes at most 60 characters, the value is kept whole
    assert (payload["rows_valid"], rejects(payload)) == (
        1,
        [(3, "net_value", long_number, f"out of range for numeric(18,4): '{'9' * 60}'")],
    )


def test_sql_looking_cells_are_only_text(tmp_path: Path) -> None:
    attack = "'); DROP TABLE raw.trustee_performance; --"
    rows = [[2024, 11, attack, "C01", "5%", 1, 2], [2024, 11, "P2", "C01", "5%", attack, 2]]
    code, payload = check(trustee_book(tmp_path / "t.xlsx", rows))
    assert code == 0
    assert rejects(payload) == [(3, "net_value", attack, f"not a number: '{attack}'")]


def test_header_repeated_inside_the_data(tmp_path: Path) -> None:
    """Two blocks pasted one under the other: the second header row is a rejected row."""
    path = trustee_book(tmp_path / "t.xlsx", [*trustee_rows(2), H, *trustee_rows(2, start=3)])
    code, payload = check(path)
    assert code == 0
    assert (payload["rows_read"], payload["rows_valid"]) == (5, 4)
    assert rejects(payload) == [
        (4, "fund_scale", "规模", "not a number: '规模'"),
        (4, "net_value", "净值", "not a number: '净值'"),
        (4, "report_month", "月", "not a whole number: '月'"),
        (4, "report_year", "年", "not a whole number: '年'"),
        (4, "return_rate", "收益率", "not a rate or percentage: '收益率'"),
    ]


def test_hidden_rows_are_data(tmp_path: Path) -> None:
    """A filter hides rows from view, not from the month: they are read like the others."""
    path = corpus.sheet_book(
        tmp_path / "t.xlsx",
        [H, *trustee_rows(4)],
        edit=lambda book, sheet: [sheet.set_row(r, None, None, {"hidden": True}) for r in (2, 3)],
    )
    code, payload = check(path)
    assert (code, payload["rows_read"], payload["rows_valid"], payload["rejects"]) == (0, 4, 4, [])


def test_hidden_first_sheet_is_not_the_first_sheet(tmp_path: Path) -> None:
    """`sheet: 0` is the first visible tab, as the operator sees the workbook."""
    path = corpus.sheet_book(
        tmp_path / "t.xlsx",
        [H, *trustee_rows(2)],
        sheet="11月",
        before=[("模板", [H, ["年份", "月份", "代码", "公司", "率", "值", "规模"]])],
        edit=_hidden_first,
    )
    code, payload = check(path)
    assert (code, payload["sheet"], payload["rows_valid"]) == (0, "11月", 2)


def test_hidden_sheet_named_in_the_spec_is_read(sources: SourcesFile, tmp_path: Path) -> None:
    """The spec names 收入明细: the name is explicit, so hiding the tab changes nothing."""
    row = ["202411", "企年受托", "集合计划", "P1", "n", "t", "F1", "p", "c", "北京", 1, 2, 3, 4]
    path = corpus.sheet_book(
        tmp_path / "a.xlsx",
        [ANNUITY_INCOME_HEADER, row],
        sheet="收入明细",
        before=[("封面", [["2024年11月"]])],
        edit=lambda book, sheet: sheet.hide(),
    )
    sheet = read_sheet(path, sources.domain("annuity_income"))
    assert (sheet.sheet, sheet.hidden, sheet.rows_read) == ("收入明细", True, 1)


def test_control_characters_and_emoji_are_kept_nul_removed(
    sources: SourcesFile, tmp_path: Path
) -> None:
    codes = ["P\x01\x1f😀", 'a,b"c\r\nd\te', "C\x00\x0b1", "\\N", "𠀀𝄞"]
    rows = [[2024, 11, code, "C01", "5%", 1, 2] for code in codes]
    sheet = read_sheet(
        trustee_book(tmp_path / "t.xlsx", rows), sources.domain("trustee_performance")
    )
    assert sheet.frame["plan_code"].to_list() == [
        "P\x01\x1f😀",
        'a,b"c\r\nd\te',
        "C\x0b1",
        "\\N",
        "𠀀𝄞",
    ]


# --------------------------------------------------------------------------- rows: cell issues


def _errors(book: Any, sheet: Any) -> None:
    sheet.write_formula(1, 5, "1/0", None, "#DIV/0!")  # F2 净值
    sheet.write_formula(2, 2, "VLOOKUP(1,Z:Z,1,0)", None, "#N/A")  # C3 计划代码
    sheet.write_formula(3, 4, '1+"a"', None, "#VALUE!")  # E4 收益率
    sheet.write_formula(4, 0, "#REF!+1", None, "#REF!")  # A5 年
    sheet.write_formula(4, 7, "1/0", None, "#DIV/0!")  # H5: not a column we read


def _merged(book: Any, sheet: Any) -> None:
    sheet.merge_range(2, 2, 4, 2, "P0002")  # C3:C5 计划代码 over three rows
    sheet.merge_range(6, 0, 6, 6, "北京分公司")  # A7:G7 a section title inside the data
    sheet.merge_range(8, 5, 8, 6, 300)  # F9:G9 净值 and 规模 as one amount


def _merged_rows() -> list[list[object] | None]:
    rows: list[list[object] | None] = [list(r) for r in trustee_rows(8)]
    for r in (rows[2], rows[3]):  # rows 4, 5 under the merged C3
        assert r is not None
        r[2] = None
    rows[5] = None  # row 7 is the section title
    rows[7] = [2024, 11, "P0008", "C01", "5%"]  # row 9: F9:G9 merged
    return rows


def test_reader_flags_error_cells_merged_cells_and_unsaved_formulas(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    errors = read_sheet(
        corpus.sheet_book(tmp_path / "e.xlsx", [H, *trustee_rows(4)], edit=_errors), spec
    )
    issues = [c for c in errors.frame.columns if c.startswith(CELL_ISSUE)]
    assert sorted(issues) == [
        CELL_ISSUE + c for c in ("net_value", "plan_code", "report_year", "return_rate")
    ]
    flagged = errors.frame.select(
        ROW,
        *[
            pl.concat_str(pl.lit(c.removeprefix(CELL_ISSUE) + "="), pl.col(c)).alias(c)
            for c in issues
        ],
    ).rows()
    assert [tuple(v for v in row if v is not None) for row in flagged] == [
        (2, "net_value=Excel error #DIV/0!"),
        (3, "plan_code=Excel error #N/A"),
        (4, "return_rate=Excel error #VALUE!"),
        (5, "report_year=Excel error #REF!"),
    ]
    # the cell shows the error literal, never a silent null
    assert errors.frame["net_value"][0] == "#DIV/0!" and errors.frame["plan_code"][1] == "#N/A"
    assert errors.cell_issues == 4

    merged = read_sheet(
        corpus.sheet_book(tmp_path / "m.xlsx", [H, *_merged_rows()], edit=_merged), spec
    )
    by_row = {
        row[ROW]: {k.removeprefix(CELL_ISSUE) for k, v in row.items() if v and k != ROW}
        for row in merged.frame.select(ROW, pl.col(f"^{CELL_ISSUE}.*$")).iter_rows(named=True)
    }
    everything = {c.name for c in sources.domain("trustee_performance").source_columns}
    assert by_row == {
        2: set(), 3: {"plan_code"}, 4: {"plan_code"}, 5: {"plan_code"}, 6: set(),
        7: everything, 8: set(), 9: {"net_value", "fund_scale"},
    }  # fmt: skip
    assert merged.frame.filter(pl.col(ROW) == 4)[CELL_ISSUE + "plan_code"].item() == (
        "part of merged cells C3:C5; unmerge them and fill each cell"
    )

    unsaved = read_sheet(corpus.unsaved_formulas(tmp_path / "u.xlsx"), spec)
    flagged_cells = unsaved.frame.select(ROW, f"{CELL_ISSUE}net_value", f"{CELL_ISSUE}fund_scale")
    assert flagged_cells.rows() == [(2, None, None), (3, UNSAVED, None), (4, None, UNSAVED)]


def test_excel_error_values_are_rejects(tmp_path: Path) -> None:
    path = corpus.sheet_book(tmp_path / "t.xlsx", [H, *trustee_rows(5)], edit=_errors)
    code, payload = check(path)
    assert code == 0
    assert (payload["rows_read"], payload["rows_valid"]) == (5, 1)
    assert rejects(payload) == [
        (2, "net_value", "#DIV/0!", "Excel error #DIV/0!"),
        (3, "plan_code", "#N/A", "Excel error #N/A"),
        (4, "return_rate", "#VALUE!", "Excel error #VALUE!"),
        (5, "report_year", "#REF!", "Excel error #REF!"),
    ]


def test_merged_cells_across_data_rows_are_rejects(tmp_path: Path) -> None:
    path = corpus.sheet_book(tmp_path / "t.xlsx", [H, *_merged_rows()], edit=_merged)
    code, payload = check(path)
    assert code == 0
    found = {(row, column): reason for row, column, _, reason in rejects(payload)}
    assert sorted(row for row, column in found if column == "plan_code") == [3, 4, 5, 7]
    assert found[(4, "plan_code")] == "part of merged cells C3:C5; unmerge them and fill each cell"
    assert (
        found[(7, "company_code")] == "part of merged cells A7:G7; unmerge them and fill each cell"
    )
    assert found[(9, "fund_scale")] == "part of merged cells F9:G9; unmerge them and fill each cell"
    assert (payload["rows_read"], payload["rows_valid"]) == (8, 3)  # rows 2, 6, 8


def test_a_sheet_part_named_in_other_capitals_gets_every_check(tmp_path: Path) -> None:
    """Part names are case-insensitive: a workbook whose relationship names
    `worksheets/Sheet1.xml` for the entry `worksheets/sheet1.xml` is read (calamine finds
    it) with the reader's own checks too (merged cells, the extent), not without them."""
    path = corpus.sheet_book(tmp_path / "t.xlsx", [H, *_merged_rows()], edit=_merged)
    rels = "xl/_rels/workbook.xml.rels"
    renamed = corpus.patch_zip(
        path,
        tmp_path / "r.xlsx",
        {rels: lambda data: data.replace(b"worksheets/sheet1.xml", b"worksheets/Sheet1.xml")},
    )
    with zipfile.ZipFile(renamed) as archive:
        assert b"worksheets/Sheet1.xml" in archive.read(rels)
    (code, payload), (_, original) = check(renamed), check(path)
    assert code == 0 and len(rejects(payload)) == 12
    assert rejects(payload) == rejects(original)
    assert payload["rows_valid"] == original["rows_valid"] == 3


def test_formulas_without_a_saved_value_are_rejects(tmp_path: Path) -> None:
    code, payload = check(corpus.unsaved_formulas(tmp_path / "t.xlsx"))
    assert code == 0
    assert rejects(payload) == [(3, "net_value", None, UNSAVED), (4, "fund_scale", None, UNSAVED)]


SHEET = "xl/worksheets/sheet1.xml"


def _prefixed(xml: bytes) -> bytes:
    """The sheet's elements written with an `x:` prefix, as .NET's OpenXML SDK writes them."""
    xml = re.sub(rb"<(/?)([A-Za-z]\w*)([ >/])", rb"<\1x:\2\3", xml)
    return xml.replace(b"<x:worksheet xmlns=", b"<x:worksheet xmlns:x=")


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(lambda xml: xml.replace(b"<v />", b"<v></v>"), id="an empty value"),
        pytest.param(lambda xml: xml.replace(b"<v />", b"<v/>"), id="no space"),
    ],
)
def test_formulas_without_a_saved_value_however_written(
    tmp_path: Path, respell: Callable[[bytes], bytes]
) -> None:
    written = corpus.unsaved_formulas(tmp_path / "t.xlsx")
    path = corpus.patch_zip(written, tmp_path / "r.xlsx", {SHEET: respell})
    with zipfile.ZipFile(path) as archive:
        assert archive.read(SHEET) != zipfile.ZipFile(written).read(SHEET)
    code, payload = check(path)
    assert code == 0
    assert rejects(payload) == [(3, "net_value", None, UNSAVED), (4, "fund_scale", None, UNSAVED)]


@pytest.mark.parametrize(
    "respell",
    [
        pytest.param(
            lambda xml: re.sub(rb'<mergeCell ref="([^"]+)"', rb"<mergeCell ref='\1'", xml),
            id="single quotes",
        ),
        pytest.param(lambda xml: xml.replace(b"<mergeCell ", b"<mergeCell\n  "), id="a newline"),
    ],
)
def test_merged_cells_however_written(tmp_path: Path, respell: Callable[[bytes], bytes]) -> None:
    written = corpus.sheet_book(tmp_path / "t.xlsx", [H, *_merged_rows()], edit=_merged)
    path = corpus.patch_zip(written, tmp_path / "r.xlsx", {SHEET: respell})
    (code, payload), (_, original) = check(path), check(written)
    assert code == 0 and len(rejects(payload)) == 12
    assert rejects(payload) == rejects(original)


def test_formulas_of_a_workbook_that_asks_to_recompute_them_are_rejects(tmp_path: Path) -> None:
    """xlsxwriter (and other programs) save a placeholder result with each formula (0,
    unless told otherwise) and ask Excel to recompute them all on opening
    (`fullCalcOnLoad`): no formula's saved result is to be trusted. Once Excel saved the
    workbook, the same cells are read."""

    def formulas(book: Any, sheet: Any) -> None:
        sheet.write_formula(2, 5, "=F2*2")  # F3 净值: saved as 0
        sheet.write_formula(2, 6, "=G2+1", None, 101)  # G3 规模: saved as 101

    rows = [H, [2024, 11, "P0001", "C01", "5%", 1.5, 100], [2024, 11, "P0002", "C01", "5%"]]
    saved = corpus.sheet_book(tmp_path / "saved.xlsx", rows, edit=formulas)
    asks = corpus.patch_zip(
        saved,
        tmp_path / "asks.xlsx",
        {"xl/workbook.xml": lambda xml: xml.replace(b"<calcPr ", b'<calcPr fullCalcOnLoad="1" ')},
    )
    code, payload = check(asks)
    assert code == 0
    assert rejects(payload) == [
        (3, "fund_scale", "101", STALE),
        (3, "net_value", "0", STALE),
    ]
    code, payload = check(saved)
    assert code == 0 and rejects(payload) == [] and payload["rows_valid"] == 2


def test_a_workbook_that_asks_to_recompute_but_holds_no_formula_is_read_once(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What programs write (xlsxwriter, openpyxl: `fullCalcOnLoad`) mostly holds no formula:
    the read's own scan says so, and the sheet is not gone over again for formulas."""
    from workdatahub.excel import reader

    rows = [H, *trustee_rows(5)]
    saved = corpus.sheet_book(tmp_path / "saved.xlsx", rows)
    asks = corpus.patch_zip(
        saved,
        tmp_path / "asks.xlsx",
        {"xl/workbook.xml": lambda xml: xml.replace(b"<calcPr ", b'<calcPr fullCalcOnLoad="1" ')},
    )

    def second_pass(*args: Any) -> Any:
        raise AssertionError("the sheet was scanned again for formulas")

    monkeypatch.setattr(reader, "formula_cells", second_pass)
    book = reader.open_workbook(asks)
    assert book.recalculates
    book.archive.close()
    sheet = read_sheet(asks, sources.domain("trustee_performance"))
    assert sheet.frame.height == 5


def test_a_sheet_written_with_a_namespace_prefix_gets_every_check(tmp_path: Path) -> None:
    """`<x:c r="A1">…`, as .NET's OpenXML SDK writes sheets (read by fastexcel: the scan
    leaves such XML to it): formulas without a saved value and merged cells found as in
    any other sheet."""
    formulas = corpus.unsaved_formulas(tmp_path / "f.xlsx")
    path = corpus.patch_zip(formulas, tmp_path / "fx.xlsx", {SHEET: _prefixed})
    with zipfile.ZipFile(path) as archive:
        assert b"<x:c r=" in archive.read(SHEET)
    code, payload = check(path)
    assert code == 0
    assert rejects(payload) == [(3, "net_value", None, UNSAVED), (4, "fund_scale", None, UNSAVED)]

    merged = corpus.sheet_book(tmp_path / "m.xlsx", [H, *_merged_rows()], edit=_merged)
    path = corpus.patch_zip(merged, tmp_path / "mx.xlsx", {SHEET: _prefixed})
    (code, payload), (_, original) = check(path), check(merged)
    assert code == 0 and len(rejects(payload)) == 12
    assert rejects(payload) == rejects(original)


# --------------------------------------------------------------------------- a full-height sheet


def test_a_sheet_of_1048576_rows(sources: SourcesFile, tmp_path: Path) -> None:
    """Data in the last row Excel has: read with its row number, in seconds and modest memory."""

    def last_row(book: Any, sheet: Any) -> None:
        sheet.write_row(1_048_575, 0, [2024, 11, "PLAST", "C01", "5%", 1, 2])

    path = corpus.sheet_book(tmp_path / "t.xlsx", [H, *trustee_rows(3)], edit=last_row)
    start = time.perf_counter()
    sheet = read_sheet(path, sources.domain("trustee_performance"))
    assert time.perf_counter() - start < 15
    assert sheet.frame[ROW].to_list() == [2, 3, 4, 1_048_576]
    assert sheet.skipped_blank == 1_048_576 - 5


def test_a_sheet_larger_than_a_read_may_hold_is_refused_before_it_is_unzipped(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip member may inflate a thousand-fold: the sheet's declared size is checked before
    any reader unzips it (here with the limit lowered to a small sheet's)."""
    from workdatahub.excel import reader

    path = corpus.sheet_book(tmp_path / "t.xlsx", [H, *trustee_rows(50)])
    monkeypatch.setattr(reader, "MAX_SHEET_BYTES", 2**20 // 4)  # 0.25 MB
    read_sheet(path, sources.domain("trustee_performance"))  # this one is smaller
    monkeypatch.setattr(reader, "MAX_SHEET_BYTES", 1024)
    with pytest.raises(InputError, match=r"MB of XML once unzipped, more than the 0 MB a sheet"):
        read_sheet(path, sources.domain("trustee_performance"))


def test_a_sheet_that_unzips_to_more_than_its_zip_declares_is_cut_off(tmp_path: Path) -> None:
    """The inflation stops at the size the zip declares (plus a byte to see it lied)."""
    from workdatahub.excel import reader

    stored = corpus.sheet_book(tmp_path / "t.xlsx", [H, *trustee_rows(2000)])
    path = tmp_path / "deflated.xlsx"  # as Excel writes it (the corpus stores its parts)
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            target.writestr(item.filename, source.read(item), zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        part = "xl/worksheets/sheet1.xml"
        assert archive.getinfo(part).compress_type == zipfile.ZIP_DEFLATED
        whole = reader.inflate(archive, part)
        archive.getinfo(part).file_size = 1000  # as a lying header would say
        tracing = tracemalloc.is_tracing()  # (-X tracemalloc: left on, and counted from here)
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            with pytest.raises(zipfile.BadZipFile, match="bad CRC or size"):
                reader.inflate(archive, part)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            if not tracing:
                tracemalloc.stop()
    # the compressed bytes, and no more than the declared size: not the whole sheet first
    assert len(whole) > 200_000 and peak < len(whole)


# --------------------------------------------------------------------------- the warehouse

pytest_db = pytest.mark.db


def _month(data_dir: Path, rows: list[list[object]]) -> Path:
    folder = trustee_folder(data_dir, "202411", "受托部")
    return trustee_book(folder / "2024年11月受托业绩.xlsx", rows)


def _resent(data_dir: Path) -> Path:
    """Where an operator drops a corrected file: it wins over the base folder."""
    return trustee_folder(data_dir, "202411", "V1", "受托部", "2024年11月受托业绩.xlsx")


def _state(pg: Any) -> list[tuple[Any, ...]]:
    return pg.execute(
        "select report_date, plan_code, company_code, return_rate, net_value, fund_scale, "
        "source_file from raw.trustee_performance order by plan_code"
    ).fetchall()


def _log(pg: Any) -> list[tuple[Any, ...]]:
    return pg.execute(
        "select status, rows_loaded, rows_rejected, message from wdh.load_log order by started_at"
    ).fetchall()


RESENT_BROKEN = [
    "password_protected", "truncated_copy", "spill_error_cell", "stray_cell_at_xfd1048576",
    "header_only", "required_column_missing",
]  # fmt: skip


@pytest_db
@pytest.mark.parametrize("case", RESENT_BROKEN)
def test_a_broken_resend_leaves_the_month_untouched(
    case: str, sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    from workdatahub.pipeline import run_partition

    spec = sources.domain("trustee_performance")
    _month(tmp_path, trustee_rows(5))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    before, log = _state(pg), _log(pg)
    path = _resent(tmp_path)
    path.parent.mkdir(parents=True)
    FILE_ERRORS[case][0](path, tmp_path)
    with pytest.raises(InputError) as error:
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert str(error.value) == f"{path}: {FILE_ERRORS[case][2]}"
    assert _state(pg) == before and len(before) == 5
    # the attempt is recorded as failed, with the reason; the successful load stays
    assert _log(pg) == [*log, ("failed", None, None, f"{path}: {FILE_ERRORS[case][2]}")]


@pytest_db
def test_a_broken_resend_is_in_the_load_log(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    from workdatahub.pipeline import run_partition

    spec = sources.domain("trustee_performance")
    path = _resent(tmp_path)
    path.parent.mkdir(parents=True)
    corpus.encrypted_workbook(path)
    with pytest.raises(InputError):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert _log(pg) == [("failed", None, None, f"{path}: {FILE_ERRORS['password_protected'][2]}")]


@pytest_db
def test_hostile_text_round_trips_through_copy(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """Control characters, CSV metacharacters, COPY's null marker, emoji, 10,000 characters
    and SQL arrive in the table exactly as typed (only NUL, which text cannot hold, goes)."""
    from workdatahub.pipeline import run_partition

    attack = "'); DROP TABLE raw.trustee_performance; --"
    codes = {
        "P01": "P\x01\x1f😀",
        "P02": 'a,b"c\r\nd\te',
        "P03": "C\x00\x0b1",
        "P04": "\\N",
        "P05": "\\.",
        "P06": "𠀀𝄞" + "长" * 10_000,
        "P07": attack,
        "P08": '""',
    }
    rows = [[2024, 11, plan, company, "5%", 1, 2] for plan, company in codes.items()]
    _month(tmp_path, [*rows, [2024, 11, "P09", "C01", "5%", attack, 2]])
    spec = sources.domain("trustee_performance")
    result = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert result.outcome and (result.outcome.rows_loaded, result.outcome.rows_rejected) == (8, 1)
    loaded = dict(
        pg.execute("select plan_code, company_code from raw.trustee_performance").fetchall()
    )
    assert loaded == {**codes, "P03": "C\x0b1"}
    quarantined = pg.execute(
        "select source_row, column_name, value, reason, raw_row->>'net_value' "
        "from wdh.rejected_rows where domain = %s",
        [spec.name],
    ).fetchall()
    assert quarantined == [(10, "net_value", attack, f"not a number: '{attack}'", attack)]


@pytest_db
def test_too_many_rejected_rows_refuse_the_load(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """A resend whose every amount is text: the month stays as it was, the rejects are kept
    and the load log says why."""
    from workdatahub.errors import RejectThresholdExceeded
    from workdatahub.pipeline import run_partition

    spec = sources.domain("trustee_performance")
    _month(tmp_path, trustee_rows(5))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    before = _state(pg)
    path = _resent(tmp_path)
    trustee_book(path, [[2024, 11, f"P{i}", "C01", "5%", "见附件", 1] for i in range(4)])
    with pytest.raises(RejectThresholdExceeded):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert _state(pg) == before
    status, loaded, rejected, message = _log(pg)[-1]
    assert (status, loaded, rejected) == ("refused", None, 4)
    assert message.startswith("trustee_performance 2024-11: 4 of 4 rows rejected (100.0%)")
    reasons = pg.execute("select distinct reason from wdh.rejected_rows").fetchall()
    assert reasons == [("not a number: '见附件'",)]


@pytest_db
def test_error_cells_are_quarantined_with_their_excel_error(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    from workdatahub.pipeline import run_partition

    spec = sources.domain("trustee_performance")
    corpus.sheet_book(
        trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx"),
        [H, *trustee_rows(5)],
        edit=_errors,
    )
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url, max_reject_rate=1)
    assert [r[1] for r in _state(pg)] == ["P0005"]
    quarantined = pg.execute(
        "select source_row, column_name, value, reason from wdh.rejected_rows "
        "where reason like 'Excel error%%' order by source_row"
    ).fetchall()
    assert quarantined == [
        (2, "net_value", "#DIV/0!", "Excel error #DIV/0!"),
        (3, "plan_code", "#N/A", "Excel error #N/A"),
        (4, "return_rate", "#VALUE!", "Excel error #VALUE!"),
        (5, "report_year", "#REF!", "Excel error #REF!"),
    ]


def test_a_failing_native_scan_is_said_and_the_sheet_read_all_the_same(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the scanner sent every sheet to fastexcel (~10x slower at 500,000 rows)
    without a word: the same rows, and a warning naming the file, sheet and error."""
    import structlog

    from workdatahub.excel import native, reader
    from workdatahub.logs import configure_logging

    if native.library() is None:
        pytest.skip("no compiled scanner on this machine")
    monkeypatch.setattr(reader, "NATIVE_MIN_BYTES", 0)  # (as outside the tests)
    spec = sources.domain("trustee_performance")
    path = write_workbook(tmp_path / "t.xlsx", {"Sheet1": [TRUSTEE_HEADER, *trustee_rows(3)]})
    expected = read_sheet(path, spec).frame

    def broken(*args: Any) -> None:
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(native, "read_xml", broken)
    configure_logging()
    with structlog.testing.capture_logs() as events:
        assert read_sheet(path, spec).frame.equals(expected)
    (said,) = [e for e in events if e["event"].startswith("the native scan failed")]
    assert (said["file"], said["sheet"], said["log_level"]) == ("t.xlsx", "Sheet1", "warning")
    assert said["error"] == "IndexError: index 7 is out of bounds"


@pytest.mark.parametrize("native", [False, True], ids=["fastexcel", "native"])
def test_a_header_merged_down_over_the_row_below_is_the_header(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """A template's tall header (each header cell merged with the blank row under it): that
    row was a data row, every cell of it rejected as "part of merged cells A1:A2". A row
    the merge reaches that holds a value is data, its merged cell flagged as before."""
    import xlsxwriter

    from workdatahub.excel import reader
    from workdatahub.excel.reader import CELL_ISSUE

    if native:
        monkeypatch.setattr(reader, "NATIVE_MIN_BYTES", 0)
    spec = sources.domain("trustee_performance")

    def book(name: str, second_row: list[Any] | None, rows: int = 2) -> Path:
        path = tmp_path / name
        workbook = xlsxwriter.Workbook(str(path))
        sheet = workbook.add_worksheet("S")
        sheet.write(0, 0, "2024年11月受托业绩")  # a title
        for c, header in enumerate(TRUSTEE_HEADER):
            sheet.merge_range(1, c, 2, c, header)  # rows 2 and 3
        if second_row is not None:
            sheet.write_row(2, len(TRUSTEE_HEADER), second_row)  # beside the merges
        for r, row in enumerate(trustee_rows(rows, start=0)):
            sheet.write_row(3 + r, 0, row)
        sheet.write_row(3 + rows, 0, ["合计", None, None, None, None, None, 0])
        workbook.close()
        corpus.as_excel_saved(path)
        return path

    with pytest.raises(InputError, match=r"no data rows below the header \(rows 2–3\); 0 bl"):
        read_sheet(book("template.xlsx", None, rows=0), spec)  # a template: its totals row
    tall = read_sheet(book("tall.xlsx", None), spec)
    assert (tall.header_row, tall.frame[ROW].to_list()) == (2, [4, 5])
    assert not [c for c in tall.frame.columns if c.startswith(CELL_ISSUE)]
    assert tall.skipped_blank == 0
    # a value in row 3 (a note beside the table): row 3 is data, its merged cells flagged
    noted = read_sheet(book("noted.xlsx", ["备注"]), spec)
    assert noted.frame[ROW].to_list() == [3, 4, 5]
    assert noted.frame[CELL_ISSUE + "plan_code"].to_list() == [
        "part of merged cells C2:C3; unmerge them and fill each cell", None, None,
    ]  # fmt: skip


def test_a_refused_container_leaves_no_file_open(tmp_path: Path) -> None:
    """The zip was opened, then the container refused (no workbook part in it): the error,
    kept by whoever reports it, kept the file open with it."""
    path = tmp_path / "x.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    from workdatahub.excel.reader import open_workbook

    with pytest.raises(InputError) as error:
        open_workbook(path)
    assert error.value is not None
    fds = Path("/proc/self/fd")
    held = [fd for fd in fds.iterdir() if str(path) in os.path.realpath(fd)]
    assert held == []
