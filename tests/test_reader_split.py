"""The parallel parse (a large sheet cut at row boundaries into one piece per core, parsed
at once) gives exactly what reading the sheet whole gives.

Every reader and hostile-workbook test runs again here with the cut forced on however
small the workbook (`SPLIT_MIN_BYTES = 0`), in two pieces; the tests below add workbooks
whose pieces meet inside the interesting parts: cell errors, merged cells and formulas
without a value in the later pieces, empty rows (not written at all) across a cut, rows
without a row number (the cut gives up and the sheet is read whole).
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.hostile_corpus import patch_zip, sheet_book, trustee_book, trustee_rows
from tests.test_hostile import *  # noqa: F403  (run again, split)
from tests.test_reader import *  # noqa: F403  (run again, split)
from tests.workbooks import TRUSTEE_HEADER
from workdatahub.excel import reader
from workdatahub.samples import write_samples
from workdatahub.sources.spec import DomainSpec, load_sources

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _split_everything(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Force the cut on every sheet; yields the piece counts of the reads that were cut."""
    cut: list[int] = []
    stack = reader._stack

    def counted(parsed: list[reader.Parsed]) -> reader.Parsed:
        cut.append(len(parsed))
        return stack(parsed)

    monkeypatch.setattr(reader, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(reader, "_pieces", lambda: 2)
    monkeypatch.setattr(reader, "_stack", counted)
    yield cut


def _spec(domain: str) -> DomainSpec:
    return load_sources(ROOT / "data_sources.yml").domains[domain]


def _whole(path: Path, spec: DomainSpec, monkeypatch: pytest.MonkeyPatch) -> reader.SheetData:
    with monkeypatch.context() as patch:
        patch.setattr(reader, "SPLIT_MIN_BYTES", 1 << 62)
        return reader.read_sheet(path, spec)


def _same(split: reader.SheetData, whole: reader.SheetData) -> None:
    assert split.frame.columns == whole.frame.columns
    assert split.frame.equals(whole.frame)
    for name in ("header_row", "columns", "rows_read", "skipped_blank", "skipped_totals"):
        assert getattr(split, name) == getattr(whole, name), name
    assert split.cell_issues == whole.cell_issues


@pytest.mark.parametrize("pieces", [2, 3, 4])
def test_sample_workbooks_read_the_same_in_pieces(
    tmp_path: Path,
    pieces: int,
    monkeypatch: pytest.MonkeyPatch,
    _split_everything: list[int],
) -> None:
    monkeypatch.setattr(reader, "_pieces", lambda: pieces)
    files = write_samples(tmp_path, months=[date(2024, 2, 1)], rows=3000, seed=5)
    checked = 0
    for sample in files:
        spec = _spec(sample.domain)
        split = reader.read_sheet(sample.path, spec)
        _same(split, _whole(sample.path, spec, monkeypatch))
        checked += 1
    assert checked >= 3
    assert _split_everything and all(n == pieces for n in _split_everything)


def test_cell_issues_in_later_pieces_keep_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _split_everything: list[int]
) -> None:
    monkeypatch.setattr(reader, "_pieces", lambda: 3)
    rows: list[list[object] | None] = [list(r) for r in trustee_rows(3000)]
    path = trustee_book(tmp_path / "t.xlsx", rows)
    # an error value, a merged range and a formula without a value, all near the end
    sheet_xml = "xl/worksheets/sheet1.xml"

    def edit(xml: bytes) -> bytes:
        text = xml.decode()
        text = re.sub(r'(<c r="F2990"[^>]*?)(?: t="\w+")?>.*?</c>', r'\1 t="e"><v>#DIV/0!</v></c>',
                      text, count=1)  # fmt: skip
        text = re.sub(r'(<c r="E2995"[^>]*?)(?: t="\w+")?>.*?</c>', r"\1><f>1+1</f></c>", text,
                      count=1)  # fmt: skip
        merge = '<mergeCells count="1"><mergeCell ref="G2997:G2998"/></mergeCells>'
        return text.replace("</sheetData>", "</sheetData>" + merge, 1).encode()

    patched = patch_zip(path, tmp_path / "p.xlsx", {sheet_xml: edit})
    spec = _spec("trustee_performance")
    split = reader.read_sheet(patched, spec)
    _same(split, _whole(patched, spec, monkeypatch))
    assert _split_everything == [3]
    issues = {
        (row, name.removeprefix(reader.CELL_ISSUE))
        for name in split.frame.columns
        if name.startswith(reader.CELL_ISSUE)
        for row in split.frame.filter(pl.col(name).is_not_null())[reader.ROW]
    }
    expected = {(2990, "net_value"), (2995, "return_rate")}
    expected |= {(2997, "fund_scale"), (2998, "fund_scale")}
    assert expected <= issues


def test_empty_rows_across_a_cut_keep_the_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _split_everything: list[int]
) -> None:
    # rows 1000-1999 empty (not written at all): with the size-based cuts one falls there
    rows: list[list[object] | None] = [list(r) for r in trustee_rows(3000)]
    rows[999:1999] = [None] * 1000
    path = trustee_book(tmp_path / "t.xlsx", rows)
    with zipfile.ZipFile(path) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml")
    assert b'<row r="1500"' not in xml
    for pieces in (2, 3, 4):
        monkeypatch.setattr(reader, "_pieces", lambda n=pieces: n)
        split = reader.read_sheet(path, _spec("trustee_performance"))
        whole = _whole(path, _spec("trustee_performance"), monkeypatch)
        _same(split, whole)
        assert split.frame[reader.ROW].to_list() == whole.frame[reader.ROW].to_list()
    assert _split_everything == [2, 3, 4]


def test_rows_without_numbers_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _split_everything: list[int]
) -> None:
    path = trustee_book(tmp_path / "t.xlsx", [list(r) for r in trustee_rows(2000)])

    def unnumbered(xml: bytes) -> bytes:
        return re.sub(rb'<row r="\d+"', b"<row", xml)

    patched = patch_zip(path, tmp_path / "p.xlsx", {"xl/worksheets/sheet1.xml": unnumbered})
    spec = _spec("trustee_performance")
    split = reader.read_sheet(patched, spec)
    assert _split_everything == []  # not cut
    _same(split, _whole(patched, spec, monkeypatch))
    assert split.rows_read == 2000


def test_a_sheet_with_a_chart_reads_the_same_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _split_everything: list[int]
) -> None:
    # charts and drawings are left out of the pieces (never read for cell values)
    def chart(book: Any, sheet: Any) -> None:
        figure = book.add_chart({"type": "column"})
        figure.add_series({"values": "=Sheet1!$G$2:$G$50"})
        sheet.insert_chart("J2", figure)

    rows = [TRUSTEE_HEADER, *[list(r) for r in trustee_rows(2000)]]
    path = sheet_book(tmp_path / "c.xlsx", rows, edit=chart)
    with zipfile.ZipFile(path) as archive:
        assert any(n.startswith("xl/charts/") for n in archive.namelist())
    spec = _spec("trustee_performance")
    split = reader.read_sheet(path, spec)
    assert _split_everything == [2]
    _same(split, _whole(path, spec, monkeypatch))
    assert split.rows_read == 2000


def test_without_a_writable_temporary_folder_the_sheet_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _split_everything: list[int]
) -> None:
    path = trustee_book(tmp_path / "t.xlsx", [list(r) for r in trustee_rows(2000)])
    spec = _spec("trustee_performance")
    whole = _whole(path, spec, monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    split = reader.read_sheet(path, spec)
    assert _split_everything == []
    _same(split, whole)
