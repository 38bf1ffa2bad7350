"""The native scan (workdatahub/excel/native.py) reads what fastexcel reads.

Every reader and hostile-workbook test that reads in this process runs again here with the
scan forced on however small the workbook (`NATIVE_MIN_BYTES = 0`), and every sheet read
without an error must have gone through it (a silent fall back to fastexcel would make the
re-run prove nothing), except the few shapes it hands to fastexcel on purpose, each asserted
below. The tests below compare the two readers cell by cell: the same cells, rows, columns
and cell problems; a number keeps the digits the workbook holds where fastexcel prints nine
decimals, so there the comparison applies fastexcel's rounding to the scanned text.
"""

from __future__ import annotations

import os
import re
import shutil
import weakref
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import xlsxwriter

from tests import hostile_corpus as corpus
from tests.rerun import Route, drop_unreachable_tests, read_unforced, require
from tests.test_hostile import *  # noqa: F403  (run again, scanned)
from tests.test_reader import *  # noqa: F403  (run again, scanned)
from tests.test_values import run
from workdatahub.cleansing.values import parse_money, parse_rate
from workdatahub.excel import native, reader
from workdatahub.samples import write_samples
from workdatahub.sources.spec import DomainSpec, SourcesFile

drop_unreachable_tests(globals(), __name__)


class Scanned(Route):
    """Which reads went through the native scan."""


@pytest.fixture(autouse=True)
def scanned(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scanned]:
    """Force the scan on every sheet and check that every sheet read went through it."""
    if native.library() is None and not (os.environ.get("CC") or shutil.which("cc")):
        pytest.skip("no C compiler on this machine: the scan is not built (reads fall back)")
    state = Scanned()
    monkeypatch.setattr(reader, "NATIVE_MIN_BYTES", 0)
    require(monkeypatch, state, "_load_native", "not scanned")
    yield state


def fastexcel_spelling(text: str) -> str:
    """How fastexcel prints the number `text` spells: the double, to nine decimals."""
    printed = format(float(Decimal(text)), ".9f")
    return printed.rstrip("0").rstrip(".")


_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def excel_digits(text: str) -> str:
    """The number `text` spells to Excel's 15 significant digits (half away from zero), as
    the scan shows a number written with more."""
    return str(Context(prec=15, rounding=ROUND_HALF_UP).plus(Decimal(text)))


def same_cells(scanned: pl.Series, whole: pl.Series) -> None:
    """The same cells; a number the same as fastexcel prints it: the scan's digits to nine
    decimals, or, for a double written in full, both to Excel's 15 digits (native.py)."""
    assert scanned.null_count() == whole.null_count(), scanned.name
    assert (scanned.is_null() == whole.is_null()).all(), scanned.name
    differ = (scanned != whole).fill_null(False)
    for mine, theirs in zip(scanned.filter(differ), whole.filter(differ), strict=True):
        assert _NUMBER.fullmatch(mine), (mine, theirs)
        if fastexcel_spelling(mine) != theirs:
            assert Decimal(mine) == Decimal(excel_digits(theirs)), (mine, theirs)


def _fastexcel(book: reader.Workbook, sheet: reader.SheetPart) -> reader.Parsed:
    """fastexcel's read, integers in a zeros format (`000000`) with their zeros, as
    the read after it does (the scan shows them so itself)."""
    whole, absolute, problems = reader._parse(book.reader, sheet.name)
    if book.formats and sheet.part is not None:
        whole = reader._as_formatted(book, sheet.part, whole, absolute, "")
    return whole, absolute, problems


def same_parse(path: Path, sheet_name: str | int = 0) -> reader.Parsed:
    """The sheet scanned and read by fastexcel: the same frame, columns and problems."""
    book = reader.open_workbook(path)
    try:
        sheet = reader.select_sheet(book, sheet_name)
        assert sheet.part is not None
        scanned = native.read_xml(book, sheet, [book.archive.read(sheet.part)], 2)
        assert scanned is not None, "not scanned"
        frame, absolute, problems = scanned
        whole, whole_absolute, whole_problems = _fastexcel(book, sheet)
    finally:
        book.archive.close()
    assert absolute == whole_absolute
    assert frame.shape == whole.shape
    for mine, theirs in zip(frame.iter_columns(), whole.iter_columns(), strict=True):
        same_cells(mine, theirs)
    assert sorted((p.position, p.detail) for p in problems) == sorted(
        (p.position, p.detail) for p in whole_problems
    )
    return scanned


def _whole(path: Path, spec: DomainSpec, state: Scanned, monkeypatch: pytest.MonkeyPatch) -> Any:
    return read_unforced(path, spec, state, monkeypatch, "NATIVE_MIN_BYTES")


def test_sample_workbooks_read_the_same_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanned: Scanned, sources: SourcesFile
) -> None:
    files = write_samples(tmp_path, months=[date(2024, 2, 1)], rows=3000, seed=5)
    assert {f.domain for f in files} == set(sources.domains)
    for sample in files:
        spec = sources.domains[sample.domain]
        mine = reader.read_sheet(sample.path, spec)
        whole = _whole(sample.path, spec, scanned, monkeypatch)
        assert mine.frame.columns == whole.frame.columns
        for name in mine.frame.columns:
            same_cells(mine.frame[name], whole.frame[name])
        for name in ("header_row", "columns", "rows_read", "skipped_blank", "skipped_totals"):
            assert getattr(mine, name) == getattr(whole, name), name
        assert mine.cell_issues == whole.cell_issues
        same_parse(sample.path, spec.sheet)


def _every_kind_of_cell(path: Path) -> Path:
    """A sheet holding every kind of cell value xlsxwriter writes, in several styles."""
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("s")
    styles = [
        None,
        book.add_format({"num_format": "yyyy-mm-dd"}),
        book.add_format({"num_format": 14}),
        book.add_format({"num_format": "hh:mm:ss"}),
        book.add_format({"num_format": "[h]:mm"}),
        book.add_format({"num_format": "0.00%"}),
        book.add_format({"num_format": "@"}),
        book.add_format({"num_format": '#,##0.00 "元"'}),
        book.add_format({"num_format": "yyyy-mm-dd hh:mm"}),
        book.add_format({"bold": True}),
    ]
    numbers = [0, -0.0, 1, 1.5, 0.1, 0.30000000000000004, 1e-3, 2.5e-7, 1.2345678901234567e20,
               123456789012345678, 1e15, 1e16, -12.75, 418769.33, 233923503.2924, 45597.54521990741,
               3.0000000000000004, 1e-300, 12345.678901234567, 0.0000000000000039984]  # fmt: skip
    for column, style in enumerate(styles):
        for row, number in enumerate(numbers):
            sheet.write_number(row, column, number, style)
    row = len(numbers)
    sheet.write_datetime(row, 0, datetime(2024, 11, 1, 13, 5, 7, 500000), styles[8])
    sheet.write_boolean(row + 1, 0, True)
    sheet.write_boolean(row + 2, 0, False)
    sheet.write_formula(row + 3, 0, '="a"&"b"', None, "ab")
    sheet.write_formula(row + 4, 0, "=1/0", None, "#DIV/0!")
    sheet.write_formula(row + 5, 0, "=NA()", None, "#N/A")
    sheet.write_formula(row + 6, 0, "=1+1", None, 2)
    sheet.write_formula(row + 7, 0, "=1+1", styles[1], 45000)
    texts = [" sp ace ", "a\r\nb", "x&<>\"'y", "", "   ", "合计", "_x000D_", "1.50", "\t", "😀"]
    for k, text in enumerate(texts):
        sheet.write_string(row + 8 + k, 0, text)
    rich = book.add_format({"bold": True})
    sheet.write_rich_string(row + 20, 0, "plain ", rich, "bold", " end")
    sheet.write_blank(row + 21, 0, None, styles[1])
    sheet.write_string(row + 30, 12, "far")
    book.close()
    return corpus.as_excel_saved(path)


def test_every_kind_of_cell_reads_as_fastexcel_reads_it(tmp_path: Path) -> None:
    path = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    frame, _, problems = same_parse(path)
    # #DIV/0! and #N/A: null, with fastexcel's detail (also reported: numbers too large for
    # the date and duration styles, and the same reported by fastexcel, see same_parse)
    assert sum("Error(" in p.detail for p in problems) == 2
    assert frame[0, 0] == "0"
    assert frame[19, 0] == "0.0000000000000039984"  # fastexcel: "0"


def test_a_double_written_in_full_reads_as_excel_shows_it(tmp_path: Path) -> None:
    """Excel writes a typed 2.00005 as its double's 17 digits, `2.0000499999999999`: read
    as written, the money would round down to 2.0000 where Excel's ROUND gives 2.0001, and
    a computed `393.77004999999997` (=393.5997+0.17035) to 393.7700. The scan shows a number
    of more than 15 significant digits as Excel shows it, to 15, as fastexcel's nine
    decimals round it; a text cell keeps its digits, and so does an integer written out."""
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    written = {  # as the workbook holds the double -> as read
        "2.0000499999999999": "2.00005",
        "-2.0000499999999999": "-2.00005",
        "1.0001500000000001": "1.00015",
        "393.77004999999997": "393.77005",
        "-689.77334999999994": "-689.77335",
        "1234567.0000499999": "1234567.00005",
        "0.00012344999999999999": "0.00012345",
        "0.99999999999999994": "1",  # (a carry)
        "99999.999999999985": "100000",
        "5.0000000000000002E-05": "0.00005",
        "0.30000000000000004": "0.3",
        "123456789012.34567": "123456789012.346",
        "12345678901234567": "12345678901234567",  # an integer keeps its digits
        "+69404598994780006.0": "69404598994780006",  # (so does one with a spare .0)
        "1.0000" + "4" + "9" * 70: "1.00005",  # longer than the scanner shows in C
        "2.00005": "2.00005",
    }
    cells = [f'<c r="@"><v>{v}</v></c>' for v in written]
    text = '<c r="@" t="inlineStr"><is><t>2.0000499999999999</t></is></c>'
    frame, _, _ = same_parse(_raw_cells(base, tmp_path / "raw.xlsx", [*cells, text]))
    assert frame.to_series(0).to_list() == [*written.values(), "2.0000499999999999"]
    shown = [*written.values()][:4]
    money, _ = run(parse_money, [*shown, "2.0000499999999999"])
    assert money == [Decimal(v) for v in ("2.0001", "-2.0001", "1.0002", "393.7701", "2")]
    assert run(parse_rate, ["0.16471"]) == ([Decimal("0.164710")], [None])


def test_typed_halves_written_in_full_round_as_typed(tmp_path: Path) -> None:
    """A sweep: amounts typed with a half at the fifth decimal (up to 10 integer digits:
    Excel takes 15 significant digits from what is typed), written as Excel writes their
    doubles (`%.17G`), read by the scan and cleansed, round half away from zero as typed."""
    rng = np.random.default_rng(11)
    typed = [
        f"{'-' if k % 3 == 0 else ''}{int(whole)}.{int(frac):04d}5"
        for k, (whole, frac) in enumerate(
            zip(10 ** rng.uniform(0, 10, 2000), rng.integers(0, 10_000, 2000), strict=True)
        )
    ]
    written = [f"{float(t):.17G}" for t in typed]
    assert sum(len(w.lstrip("-")) == 18 for w in written) > 1000  # most in 17 digits
    cells = [f'<c r="@"><v>{w}</v></c>' for w in written]
    frame, _, _ = same_parse(_raw_cells(_every_kind_of_cell(tmp_path / "kinds.xlsx"),
                                        tmp_path / "raw.xlsx", cells))  # fmt: skip
    money, errors = run(parse_money, frame.to_series(0).to_list())
    expected = [Decimal(t).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP) for t in typed]
    assert errors == [None] * len(typed)
    assert money == expected


def _raw_cells(path: Path, out: Path, cells: list[str]) -> Path:
    """The workbook with its sheet's data replaced by `cells`, one per row in column B."""

    def replace(xml: bytes) -> bytes:
        rows = "".join(
            f'<row r="{k}">{c.replace("@", f"B{k}")}</row>' for k, c in enumerate(cells, 1)
        )
        return re.sub(rb"<sheetData>.*</sheetData>", f"<sheetData>{rows}</sheetData>".encode(),
                      xml, flags=re.S)  # fmt: skip

    return corpus.patch_zip(path, out, {"xl/worksheets/sheet1.xml": replace})


def test_cells_as_other_writers_spell_them(tmp_path: Path) -> None:
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    cells = [
        '<c r="@"><v>1E-3</v></c>',
        '<c r="@"><v>+1</v></c>',
        '<c r="@"><v>01</v></c>',
        '<c r="@"><v>.5</v></c>',
        '<c r="@"><v>1.50</v></c>',
        '<c r="@"><v>-0.0</v></c>',
        '<c r="@" t="n"><v>7</v></c>',
        '<c r="@"><v></v></c>',
        '<c r="@"><v/></c>',
        '<c r="@" t="s"><v></v></c>',
        '<c r="@" t="inlineStr"><is><t>inline &amp; text</t></is></c>',
        '<c r="@" t="inlineStr"><is><r><t>ri</t></r><r><t>ch</t></r></is></c>',
        '<c r="@" t="inlineStr"><is><t xml:space="preserve">  kept  </t></is></c>',
        '<c r="@" t="inlineStr"><is><t>  kept  </t></is></c>',  # the same text, not kept
        '<c r="@" t="inlineStr"><is><t>  plain  </t></is></c>',
        '<c r="@" t="inlineStr"><is><t></t></is></c>',
        '<c r="@" t="inlineStr"><is><t>a_x000D_b &#26;&#x41; &lt;&gt;</t></is></c>',
        '<c r="@" t="inlineStr"><is><t>line\r\nbreak</t></is></c>',
        '<c r="@" s="1" t="inlineStr"><is><t>45597</t></is></c>',
        '<c r="@" t="inlineStr" cm="1"><is><t>with cm</t></is></c>',
        '<c r="@" t="inlineStr"><f>A1</f><is><t>with a formula</t></is></c>',
        '<c r="@" t="str"><f>A1</f><v>formula &lt;text&gt;</v></c>',
        '<c r="@" t="b"><v>1</v></c>',
        '<c r="@" t="e"><v>#REF!</v></c>',
        '<c r="@" s="1"><f t="shared" si="0"/><v>45000</v></c>',
        '<c r="@"><f>1+1</f></c>',
        '<c r="@" s="1"/>',
        '<c r="@"></c>',
        '<c  t="s"   r="@" ><v>0</v></c>',
        '<c r="@" t="s" cm="1"><v>1</v></c>',
        '<c r="@"><v xml:space="preserve">5</v></c>',
        '<c r="@"><v>abc</v></c>',
        '<c r="@" t="s"><v>2</v><is><t>both</t></is></c>',
    ]
    path = _raw_cells(base, tmp_path / "raw.xlsx", cells)
    frame, absolute, _ = same_parse(path)
    assert absolute == [1]
    assert frame.height == len(cells)
    assert frame[0, 0] == "0.001" and frame[4, 0] == "1.5"  # the digits, no spare zeros


def test_numbers_with_spare_zeros_read_as_excel_shows_them(tmp_path: Path) -> None:
    """Other programs write some numbers with zeros Excel would not (`202411.0`, as Java
    prints a double; `1.50`; `007`): the scan spells them as fastexcel does, as Excel shows
    them, so that a month `202411.0` is the month 202411 whichever reader ran."""
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    written = ["202411.0", "1.50", "007", "-0012.3400", "100.250", "0.50", "10", "0.5", "-7"]
    path = _raw_cells(base, tmp_path / "raw.xlsx", [f'<c r="@"><v>{v}</v></c>' for v in written])
    frame, _, _ = same_parse(path)
    shown = ["202411", "1.5", "7", "-12.34", "100.25", "0.5", "10", "0.5", "-7"]
    assert frame.to_series(0).to_list() == shown
    book = reader.open_workbook(path)
    try:
        whole, _, _ = _fastexcel(book, reader.select_sheet(book, 0))
    finally:
        book.archive.close()
    assert whole.to_series(0).to_list() == shown  # exactly, not only after rounding


@pytest.mark.parametrize(
    ("shape", "xml"),
    [
        ("a cell without its place", '<row r="1"><c t="s"><v>0</v></c></row>'),
        ("a namespace prefix", '<row r="1"><x:c r="A1" t="s"><v>0</v></x:c></row>'),
        ("text between rows", 'junk<row r="1"><c r="A1" t="s"><v>0</v></c></row>'),
        ("an element between rows", '<row r="1"><c r="A1" t="s"><v>0</v></c></row><extLst/>'),
        ("a cell cut short", '<row r="1"><c r="A1" t="s"><v>0</v>'),
        ("a shared string the table lacks", '<row r="1"><c r="A1" t="s"><v>99999999</v></c></row>'),
    ],
)
def test_shapes_the_scanner_hands_to_fastexcel(tmp_path: Path, shape: str, xml: str) -> None:
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")

    def replace(sheet: bytes) -> bytes:
        return re.sub(rb"<sheetData>.*</sheetData>", f"<sheetData>{xml}</sheetData>".encode(),
                      sheet, flags=re.S)  # fmt: skip

    path = corpus.patch_zip(base, tmp_path / "odd.xlsx", {"xl/worksheets/sheet1.xml": replace})
    book = reader.open_workbook(path)
    try:
        sheet = reader.select_sheet(book, 0)
        assert sheet.part is not None
        assert native.read_xml(book, sheet, [book.archive.read(sheet.part)], 2) is None, shape
    finally:
        book.archive.close()


def test_many_error_cells_are_kept_in_place(tmp_path: Path) -> None:
    # each error cell is null with fastexcel's detail; 3,000 of them cost no more than a
    # few (they were once looked up one by one)
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    cells = ['<c r="@" t="e"><v>#N/A</v></c>'] * 3000 + ['<c r="@"><v>1</v></c>']
    path = _raw_cells(base, tmp_path / "errors.xlsx", cells)
    frame, _, problems = same_parse(path)
    assert frame.height == 3001 and len(problems) == 3000


def test_dates_and_odd_numbers_repeated_down_a_column(tmp_path: Path) -> None:
    # a month column of date cells: each distinct style and value is asked of fastexcel
    # once, and every cell gets its text and its problem (a date out of range) in place;
    # values longer than an Arrow view holds (12 bytes) are grouped in the XML itself
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    long = "45597." + "0" * 40 + "1"
    cells = [
        *['<c r="@" s="1"><v>45597</v></c>'] * 200,
        *['<c r="@" s="2"><v>45597</v></c>'] * 3,  # the same value, another date style
        *['<c r="@" s="4"><v>45597</v></c>'] * 3,  # a duration
        *['<c r="@" s="1"><v>45598.5</v></c>'] * 100,
        *['<c r="@" s="1"><v>99999999999</v></c>'] * 3,  # past the last date
        *['<c r="@" s="1"><v>1E+300</v></c>'] * 3,
        *[f'<c r="@" s="1"><v>{long}</v></c>'] * 2,
        *[f'<c r="@"><v>{long}E-3</v></c>'] * 2,
        *['<c r="@"><v>1E-3</v></c>'] * 50,
        *['<c r="@"><v>7</v></c>'] * 2,
    ]
    path = _raw_cells(base, tmp_path / "dates.xlsx", cells)
    frame, _, problems = same_parse(path)
    assert frame.height == len(cells)
    column = frame.to_series(0)
    assert column[:206].n_unique() == 1 and column[206] != column[0]
    assert column[312] == column[313] == column[0]  # the long value: the same day
    assert column[-54] == column[-53] == "45.597"  # its 15 significant digits, as Excel's
    assert column[-3] == "0.001" and column[-1] == "7"
    assert sorted(p.position[0] for p in problems) == list(range(306, 312))  # each cell's


def test_inline_strings_and_other_cells_repeated_down_a_column(tmp_path: Path) -> None:
    # cells fastexcel is asked about once per distinct element without its place, grouped
    # by polars: the same text wherever the place is written, each problem at its cell
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")
    cells = [
        *['<c r="@" t="inlineStr"><is><t>甲 &amp; 乙</t></is></c>'] * 50,
        *['<c t="inlineStr" r="@"><is><t>甲 &amp; 乙</t></is></c>'] * 3,  # the place last
        *['<c r="@" t="inlineStr"><is><t>r="B7"</t></is></c>'] * 2,  # a place in the text
        *['<c r="@" t="str"><f>A1</f><v>formula</v></c>'] * 4,
        *['<c r="@" t="b"><v>1</v></c>'] * 20,
        *['<c r="@" t="e"><v>#N/A</v></c>'] * 5,
    ]
    path = _raw_cells(base, tmp_path / "inline.xlsx", cells)
    frame, _, problems = same_parse(path)
    column = frame.to_series(0)
    assert column[:53].n_unique() == 1 and column[0] == "甲 & 乙"
    assert column[53] == 'r="B7"' and column[55] == "formula"
    assert sorted(p.position[0] for p in problems) == list(range(79, 84))


def _cells_of(values: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """buf, a, b of `values` laid end to end (each at its own place), and the cells in an
    order of their own."""
    xml = b"<sheetData>" + b"".join(values) + b"</sheetData>"
    a = np.cumsum([len(b"<sheetData>"), *map(len, values[:-1])]).astype(np.int64)
    b = np.array([len(v) for v in values], np.uint32)
    return np.frombuffer(xml, np.uint8), a, b, np.arange(len(values))[::-1].copy()


def _same_groups(
    buf: np.ndarray, a: np.ndarray, b: np.ndarray, cells: np.ndarray, by: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The compiled grouping, checked against the one in plain Python."""
    lib = native.library()
    if lib is None:
        pytest.skip("no C compiler: sheets are read by fastexcel")
    fast = native._grouped(lib, buf, a, b, cells, by)
    slow = native._grouped_one_by_one(buf, a, b, cells, by)
    assert fast[0].tolist() == slow[0].tolist() and fast[1].tolist() == slow[1].tolist()
    return fast


def _same_elements(
    buf: np.ndarray, a: np.ndarray, b: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The elements grouped by polars, checked against the one in plain Python."""
    fast = native._elements_by_polars(buf, a, b, cells)
    assert fast is not None
    slow = native._grouped_one_by_one(buf, a, b, cells, None, without_place=True)
    assert fast[0].tolist() == slow[0].tolist() and fast[1].tolist() == slow[1].tolist()
    return fast


def test_many_values_group_alike_compiled_and_one_by_one() -> None:
    # enough values that the compiled table's slots collide and probe on
    rng = np.random.default_rng(7)
    pool = [f"客户{k}".encode() * int(rng.integers(0, 4)) for k in range(3000)]
    values = [pool[int(k)] for k in rng.integers(0, len(pool), 20_000)]
    buf, a, b, cells = _cells_of(values)
    styles = rng.integers(0, 3, len(values)).astype(np.uint16)
    for by in (None, styles):
        first, group = _same_groups(buf, a, b, cells, by)
        assert 1 < len(first) < len(values) and group.max() == len(first) - 1


def test_other_cells_group_alike_by_polars_and_one_by_one() -> None:
    elements = [
        b'<c r="A1" t="inlineStr"><is><t>x</t></is></c>',
        b'<c r="B22" t="inlineStr"><is><t>x</t></is></c>',
        b'<c t="inlineStr" r="C3"><is><t>x</t></is></c>',
        b'<c\nr="D4" t="b"><v>1</v></c>',
        b'<c r="E5" t="b"><v>1</v></c>',
        b'<c r="F6" t="inlineStr"><is><t> r="A1"</t></is></c>',
        '<c r="G7" t="inlineStr"><is><t>\u3000r="A1" 文</t></is></c>'.encode(),
        b'<c r="H8" t="inlineStr"><is><t>x</t></is></c>',
    ]
    buf, a, b, cells = _cells_of(elements)
    first, _ = _same_elements(buf, a, b, cells)
    assert len(first) == 4  # x (its place first or last), a boolean, the two texts
    assert (
        native._elements_by_polars(
            np.frombuffer(b"\xff" * 40, np.uint8),
            a[:1] * 0,
            np.array([30], np.uint32),
            cells[:1] * 0,
        )
        is None
    )  # fmt: skip  (not UTF-8: one by one)


def test_numbers_group_alike_compiled_and_one_by_one() -> None:
    # short values and long ones, NULs, the empty value, and styles
    values = [b"45597", b"45597", b"1", b"1\x00", b"123456789012", b"1234567890123",
              b"1234567890123", b"45597.000000000000000001", b"45597", b"", b"45598",
              b"123456789013"]  # fmt: skip
    buf, a, b, cells = _cells_of(values)
    styles = np.array([1, 1, 1, 1, 1, 1, 2, 1, 2, 1, 1, 1], np.uint16)
    first, _ = _same_groups(buf, a, b, cells, None)
    assert len(first) == 9
    first, group = _same_groups(buf, a, b, cells, styles)
    assert len(first) == 11  # 45597 and 1234567890123 in two styles each
    at = {int(value): k for k, value in enumerate(cells)}  # a value's position in cells
    assert group[at[0]] == group[at[1]] != group[at[8]]


def test_cells_out_of_order_and_twice_at_one_place(tmp_path: Path) -> None:
    base = _every_kind_of_cell(tmp_path / "kinds.xlsx")

    def replace(sheet: bytes) -> bytes:
        rows = (
            '<row r="5"><c r="C5"><v>5</v></c><c r="A5"><v>1</v></c></row>'
            '<row r="2"><c r="B2" t="s"><v>0</v></c></row>'
        )
        return re.sub(rb"<sheetData>.*</sheetData>", f"<sheetData>{rows}</sheetData>".encode(),
                      sheet, flags=re.S)  # fmt: skip

    path = corpus.patch_zip(base, tmp_path / "order.xlsx", {"xl/worksheets/sheet1.xml": replace})
    same_parse(path)


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_the_same_cells_on_any_number_of_cores(
    tmp_path: Path, workers: int, sources: SourcesFile
) -> None:
    files = write_samples(tmp_path, months=[date(2024, 2, 1)], rows=2000, seed=9)
    sample = next(f for f in files if f.domain == "annuity_performance")
    spec = sources.domains[sample.domain]
    book = reader.open_workbook(sample.path)
    try:
        sheet = reader.select_sheet(book, spec.sheet)
        assert sheet.part is not None
        xml = book.archive.read(sheet.part)
        one = native.read_xml(book, sheet, [xml], 1)
        many = native.read_xml(book, sheet, [xml], workers)
    finally:
        book.archive.close()
    assert one is not None and many is not None
    assert one[0].equals(many[0]) and one[1] == many[1]


def test_the_cells_places_are_freed_before_the_columns_are_assembled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: SourcesFile
) -> None:
    """The read's peak RSS is while the columns are assembled: by then the cells' rows,
    columns and styles (8 bytes a cell) are no longer held."""
    files = write_samples(tmp_path, months=[date(2024, 2, 1)], rows=500, seed=9)
    sample = next(f for f in files if f.domain == "annuity_performance")
    spec = sources.domains[sample.domain]
    held: list[weakref.ref[np.ndarray]] = []
    alive_when_assembled: list[int] = []

    class Cells(native._Cells):
        def __init__(self, ranges: list[tuple[int, int]]) -> None:
            super().__init__(ranges)
            held.extend(weakref.ref(x) for x in (self.rows, self.cols, self.styles))

    assemble = native._assemble

    def assembled(*args: Any) -> tuple[np.ndarray, ...]:
        alive_when_assembled.append(sum(ref() is not None for ref in held))
        return assemble(*args)

    monkeypatch.setattr(native, "_Cells", Cells)
    monkeypatch.setattr(native, "_assemble", assembled)
    book = reader.open_workbook(sample.path)
    try:
        sheet = reader.select_sheet(book, spec.sheet)
        assert sheet.part is not None
        parsed = native.read_xml(book, sheet, [book.archive.read(sheet.part)], 2)
    finally:
        book.archive.close()
    assert parsed is not None and parsed[0].height > 500
    assert len(held) == 3 and alive_when_assembled and set(alive_when_assembled) == {0}


def test_more_cells_than_the_grid_can_number_are_left_to_fastexcel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanned: Scanned, sources: SourcesFile
) -> None:
    """The frame's grid holds cell numbers as int32: a sheet that could hold more cells
    (an XML of ~30 GB; here the limit is lowered) is not scanned, and reads the same."""
    files = write_samples(tmp_path, months=[date(2024, 2, 1)], rows=500, seed=9)
    sample = next(f for f in files if f.domain == "annuity_performance")
    spec = sources.domains[sample.domain]
    read = reader.read_sheet(sample.path, spec)
    assert scanned.tried == [True]
    xml_bytes = sum(i.file_size for i in zipfile.ZipFile(sample.path).infolist())
    monkeypatch.setattr(native, "_MAX_CELL_NUMBER", xml_bytes // 15 // 2)
    with monkeypatch.context() as patch:
        patch.setattr(scanned, "required", False)
        left = reader.read_sheet(sample.path, spec)
    assert scanned.tried == [False]
    assert left.frame.columns == read.frame.columns
    for name in read.frame.columns:  # (plain decimals keep their digits when scanned)
        same_cells(read.frame[name], left.frame[name])


def test_a_sheet_hiding_its_extent_is_the_one_line_error_not_a_huge_grid(
    tmp_path: Path, scanned: Scanned, sources: SourcesFile
) -> None:
    # the sheet declares A1:G3 but holds a cell at XFD1048576: calamine would try to
    # allocate 17 billion cells; the scan refuses before making its grid
    from tests.test_hostile import _far_cell
    from tests.workbooks import TRUSTEE_HEADER
    from workdatahub.errors import InputError

    path = corpus.sheet_book(tmp_path / "far.xlsx", [TRUSTEE_HEADER, *corpus.trustee_rows(2)],
                             edit=_far_cell)  # fmt: skip

    def lie(xml: bytes) -> bytes:
        return re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:G3"/>', xml, count=1)

    patched = corpus.patch_zip(path, tmp_path / "lying.xlsx", {"xl/worksheets/sheet1.xml": lie})
    with pytest.raises(InputError, match=r"cells are used up to XFD1048576 \(1,048,576 rows"):
        reader.read_sheet(patched, sources.domains["trustee_performance"])


@pytest.fixture
def fresh_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The compiled scanner looked for (and compiled) in an empty cache folder only; the
    process's own library is found again afterwards."""
    folder = tmp_path / "cache"
    monkeypatch.setattr(native, "_cache_folders", lambda: [folder])
    native.library.cache_clear()
    yield folder
    native.library.cache_clear()


def test_a_compiler_that_fails_is_reported_with_its_first_line(
    fresh_library: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CC", "cc -DWDH_BROKEN=1 -include /no/such/header.h")
    assert native.library() is None and not list(fresh_library.iterdir())
    said = capsys.readouterr().err
    assert "the sheet scanner is not available" in said and "header.h" in said


@pytest.mark.parametrize("how", ["a link", "another user's"])
def test_a_library_others_could_have_planted_is_not_loaded(
    fresh_library: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """The compiled scanner's name is predictable: one found where someone else could have
    put it (a link, a file of another user's) is not loaded."""
    assert native.library() is not None  # compiled into the fresh folder, and trusted
    (built,) = fresh_library.iterdir()
    native.library.cache_clear()
    if how == "a link":
        real = built.rename(fresh_library / "elsewhere.so")
        built.symlink_to(real)
        said = "is a link"
    else:
        try:
            os.chown(built, 65534, 65534)  # nobody's
        except PermissionError:
            pytest.skip("only root can give a file to another user")
        said = "belongs to another user"
    assert native.library() is None
    err = capsys.readouterr().err
    assert "the sheet scanner is not available" in err and said in err


def test_a_library_others_may_have_written_is_compiled_again(fresh_library: Path) -> None:
    """This user's library, or its folder, that others may write (umask 002, a shared
    group): the folder is made this user's alone, the file compiled again, and loaded."""
    assert native.library() is not None
    (built,) = fresh_library.iterdir()
    native.library.cache_clear()
    built.chmod(0o777)
    fresh_library.chmod(0o777)
    before = built.stat().st_ino
    assert native.library() is not None
    assert fresh_library.stat().st_mode & 0o777 == 0o755
    assert built.stat().st_mode & 0o777 == 0o755 and built.stat().st_ino != before  # new


def test_the_scanner_compiles_into_an_empty_cache(
    fresh_library: Path, tmp_path: Path, sources: SourcesFile
) -> None:
    assert native.library() is not None
    assert [p.suffix for p in fresh_library.iterdir()] == [".so"]  # no partial file left
    (sample,) = write_samples(
        tmp_path, months=[date(2024, 2, 1)], rows=50, seed=3, domains=("annuity_performance",)
    )
    same_parse(sample.path, sources.domains["annuity_performance"].sheet)


def test_without_a_compiler_sheets_are_read_by_fastexcel(
    fresh_library: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scanned: Scanned,
    sources: SourcesFile,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    (sample,) = write_samples(
        tmp_path, months=[date(2024, 2, 1)], rows=50, seed=3, domains=("annuity_performance",)
    )
    spec = sources.domains["annuity_performance"]
    scanned.required = False
    data = reader.read_sheet(sample.path, spec)
    assert scanned.tried == [False]
    assert native.library() is None and not list(fresh_library.iterdir())
    said = capsys.readouterr().err
    assert "the sheet scanner is not available" in said and "no-such-cc could not run" in said
    # with the compiler back, the scan reads the same cells the fallback read
    monkeypatch.delenv("CC")
    native.library.cache_clear()
    scanned.required = True
    again = reader.read_sheet(sample.path, spec)
    assert scanned.tried == [True]
    assert again.frame.columns == data.frame.columns
    for name in data.frame.columns:
        same_cells(again.frame[name], data.frame[name])


def test_plain_inline_strings_are_cut_out_by_the_scanner() -> None:
    """Inline strings of the plain shape are the scanner's own (their text's place in the
    XML, grouped by text without a regex); any other shape is an element for fastexcel."""
    lib = native.library()
    if lib is None:
        pytest.skip("no C compiler: sheets are read by fastexcel")
    cells = [
        b'<c r="A1" t="inlineStr"><is><t>x &amp; y</t></is></c>',
        b'<c r="B1" s="3" t="inlineStr"><is><t xml:space="preserve"> k </t></is></c>',
        b'<c r="C1" t="inlineStr"><is><t></t></is></c>',
        b'<c r="D1" t="inlineStr" cm="1"><is><t>x</t></is></c>',
        b'<c r="E1" t="inlineStr"><is><r><t>x</t></r></is></c>',
        b'<c r="F1" t="inlineStr"><f>A1</f><is><t>x</t></is></c>',
        b'<c r="G1" t="inlineStr"><is><t>x</t><rPh/></is></c>',
    ]
    xml = b'<sheetData><row r="1">' + b"".join(cells) + b"</row></sheetData></worksheet>"
    buf = np.frombuffer(xml, np.uint8)
    size = 16
    kinds = (np.int32, np.int16, np.int8, np.int64, np.uint32, np.uint16)  # rows … styles
    arrays = tuple(np.zeros(size, kind) for kind in kinds)
    start, stop = len(b"<sheetData>"), xml.find(b"</sheetData>")
    count, formulas, _, status = native._cells(lib, buf, start, stop, arrays)
    assert (status, count, formulas) == (0, len(cells), 1)
    inline, other = native.INLINE, native.OTHER
    assert arrays[2][:count].tolist() == [inline] * 3 + [other] * 4
    a, b = arrays[3], arrays[4]
    assert [xml[a[n] : a[n] + b[n]] for n in range(3)] == [
        b"<t>x &amp; y", b'<t xml:space="preserve"> k ', b"<t>"
    ]  # fmt: skip
    assert arrays[5][1] == 3  # the style, asked of fastexcel with the text
