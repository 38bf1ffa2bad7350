"""The parallel parse (a large sheet cut at row boundaries into one piece per core, parsed
at once) gives exactly what reading the sheet whole gives.

Every reader and hostile-workbook test that reads in this process runs again here with
the cut forced on however small the workbook (`SPLIT_MIN_BYTES = 0`), in two pieces, and
every sheet read without an error must have gone through the pieces (a silent fall back to
the whole read would make the re-run prove nothing). The tests below add workbooks whose
pieces meet inside the interesting parts: cell errors, merged cells and formulas without a
value in the later pieces, empty rows (not written at all) at a cut, rows without a row
number and no temporary folder (the cut gives up and the sheet is read whole).
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import hostile_corpus as corpus
from tests.rerun import Route, drop_unreachable_tests, read_unforced, require
from tests.test_hostile import *  # noqa: F403  (run again, split)
from tests.test_reader import *  # noqa: F403  (run again, split)
from tests.workbooks import TRUSTEE_HEADER
from workdatahub.excel import reader
from workdatahub.samples import write_samples
from workdatahub.sources.spec import DomainSpec, SourcesFile

drop_unreachable_tests(globals(), __name__)


@dataclass
class Split(Route):
    """What the forced cut did: piece counts of the reads that were cut."""

    cuts: list[int] = field(default_factory=list)


@pytest.fixture(autouse=True)
def split(monkeypatch: pytest.MonkeyPatch) -> Iterator[Split]:
    """Force the cut on every sheet and check that every sheet read went through it (an
    empty sheet has nothing to cut)."""
    state = Split()
    stack = reader._stack

    def stacked(parsed: list[reader.Parsed]) -> reader.Parsed:
        state.cuts.append(len(parsed))
        return stack(parsed)

    monkeypatch.setattr(reader, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(reader, "NATIVE_MIN_BYTES", 1 << 62)  # the native scan comes first
    monkeypatch.setattr(reader, "_pieces", lambda: 2)
    monkeypatch.setattr(reader, "_stack", stacked)
    require(monkeypatch, state, "_load_split", "read whole, not in pieces")
    yield state


def _whole(path: Path, spec: DomainSpec, split: Split, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same sheet read whole, for comparison."""
    return read_unforced(path, spec, split, monkeypatch, "SPLIT_MIN_BYTES")


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
    split: Split,
    sources: SourcesFile,
) -> None:
    monkeypatch.setattr(reader, "_pieces", lambda: pieces)
    files = write_samples(tmp_path, months=[date(2024, 2, 1)], rows=3000, seed=5)
    assert {f.domain for f in files} == set(sources.domains)
    for sample in files:
        spec = sources.domains[sample.domain]
        in_pieces = reader.read_sheet(sample.path, spec)
        _same(in_pieces, _whole(sample.path, spec, split, monkeypatch))
    assert split.cuts and all(n == pieces for n in split.cuts)


def test_cell_issues_in_later_pieces_keep_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: Split, sources: SourcesFile
) -> None:
    monkeypatch.setattr(reader, "_pieces", lambda: 3)
    path = corpus.trustee_book(tmp_path / "t.xlsx", corpus.trustee_rows(3000))
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

    patched = corpus.patch_zip(path, tmp_path / "p.xlsx", {sheet_xml: edit})
    spec = sources.domains["trustee_performance"]
    in_pieces = reader.read_sheet(patched, spec)
    _same(in_pieces, _whole(patched, spec, split, monkeypatch))
    assert split.cuts == [3]
    issues = {
        (row, name.removeprefix(reader.CELL_ISSUE))
        for name in in_pieces.frame.columns
        if name.startswith(reader.CELL_ISSUE)
        for row in in_pieces.frame.filter(pl.col(name).is_not_null())[reader.ROW]
    }
    expected = {(2990, "net_value"), (2995, "return_rate")}
    expected |= {(2997, "fund_scale"), (2998, "fund_scale")}
    assert issues == expected


def test_empty_rows_at_a_cut_keep_the_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: Split, sources: SourcesFile
) -> None:
    # Excel rows 1001-2000 empty (not written at all), and a cut placed right after them:
    # the piece before ends at row 1000, the next starts at row 2001
    rows: list[list[Any] | None] = list(corpus.trustee_rows(3000))
    rows[999:1999] = [None] * 1000
    path = corpus.trustee_book(tmp_path / "t.xlsx", rows)
    with zipfile.ZipFile(path) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml")
    assert b'<row r="1500"' not in xml
    spec = sources.domains["trustee_performance"]
    whole = _whole(path, spec, split, monkeypatch)
    after_gap, before_gap = xml.index(b'<row r="2001"'), xml.index(b'<row r="500"')
    for cuts in ([after_gap], [before_gap, after_gap]):
        pieces = len(cuts) + 1
        monkeypatch.setattr(reader, "_pieces", lambda n=pieces: n)
        monkeypatch.setattr(reader, "_cuts", lambda pieces, size, c=cuts: c)
        _same(reader.read_sheet(path, spec), whole)
    assert split.cuts == [2, 3]
    assert whole.frame[reader.ROW].to_list() == [*range(2, 1001), *range(2001, 3002)]


def test_rows_without_numbers_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: Split, sources: SourcesFile
) -> None:
    path = corpus.trustee_book(tmp_path / "t.xlsx", corpus.trustee_rows(2000))

    def unnumbered(xml: bytes) -> bytes:
        return re.sub(rb'<row r="\d+"', b"<row", xml)

    patched = corpus.patch_zip(path, tmp_path / "p.xlsx", {"xl/worksheets/sheet1.xml": unnumbered})
    spec = sources.domains["trustee_performance"]
    split.required = False
    in_pieces = reader.read_sheet(patched, spec)
    assert split.cuts == [] and split.tried == [False]  # not cut
    _same(in_pieces, _whole(patched, spec, split, monkeypatch))
    assert in_pieces.rows_read == 2000


def test_a_sheet_with_a_chart_reads_the_same_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: Split, sources: SourcesFile
) -> None:
    # charts and drawings are left out of the pieces (never read for cell values)
    def chart(book: Any, sheet: Any) -> None:
        figure = book.add_chart({"type": "column"})
        figure.add_series({"values": "=Sheet1!$G$2:$G$50"})
        sheet.insert_chart("J2", figure)

    rows = [TRUSTEE_HEADER, *corpus.trustee_rows(2000)]
    path = corpus.sheet_book(tmp_path / "c.xlsx", rows, edit=chart)
    with zipfile.ZipFile(path) as archive:
        assert any(n.startswith("xl/charts/") for n in archive.namelist())
    spec = sources.domains["trustee_performance"]
    in_pieces = reader.read_sheet(path, spec)
    assert split.cuts == [2]
    _same(in_pieces, _whole(path, spec, split, monkeypatch))
    assert in_pieces.rows_read == 2000


def test_without_a_writable_temporary_folder_the_sheet_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: Split, sources: SourcesFile
) -> None:
    path = corpus.trustee_book(tmp_path / "t.xlsx", corpus.trustee_rows(2000))
    spec = sources.domains["trustee_performance"]
    whole = _whole(path, spec, split, monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    split.required = False
    in_pieces = reader.read_sheet(path, spec)
    assert split.cuts == [] and split.tried == [False]
    _same(in_pieces, whole)
