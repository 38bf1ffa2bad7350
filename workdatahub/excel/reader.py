"""Read one sheet of a workbook into a frame of raw text cells, one row per data row.

fastexcel (Rust, calamine) reads the sheet straight into Arrow about fifteen times faster
than openpyxl; the sheet is parsed once, header search included. Every cell is read as
text so that one column may mix numbers, dates and text the way operators type them; the
cleansing step parses them. The header row is the first row that holds every required
header (after NFKC and trimming); title rows above it are skipped. Each data row keeps the
row number the operator sees in Excel (`_row`).

Hostile workbooks (tests/test_hostile.py). A file that cannot be read as a whole is one
`InputError` line naming the file, and the sheet, row and column where there is one: not a
zip (empty, cut short, a text file); an OLE container (password-protected, or an old .xls
renamed); a zip that holds no workbook (.ods, .xlsb, a Word file); a DTD in workbook.xml; a
sheet whose used range would not fit in memory; a cell error calamine cannot read
(#SPILL!, #CALC!); a sheet with no data rows (loading it would empty the month).

The used range matters because calamine allocates rows × columns cells before anything
can be checked, and a failed allocation aborts the process (one stray value in XFD1048576
asks for 512 GB). The extent the sheet declares (`<dimension>`, exact in what Excel saves)
is checked first; when it is absent or too large the cells that hold values are measured
before parsing. A file that declares a small extent and holds far cells anyway is crafted,
not saved by Excel, and is not caught here (except by the native scan of a very large
sheet, which measures the cells it found before making its grid).

Every sheet is read by WorkDataHub's own compiled scanner (its pass over the cells: ~0.4 s
on two cores at 500,000 rows, against ~10 s for fastexcel), with fastexcel reading only the
cells the scanner leaves to it (see "native scan" below and workdatahub/excel/native.py;
compared cell by cell by tests/test_reader_native.py). When no C compiler is found or the
scanner gives up, the sheet is parsed by fastexcel; the XML is scanned once more, in a thread
beside the parse (fastexcel releases the GIL), for what fastexcel does not report: merged
ranges and formulas without a saved value. A large sheet read that way (16 MB of XML and
more, about 20,000 rows) is cut at row boundaries into one piece per core and the pieces
are parsed at once, the scan riding along with the cutting (see "parallel parse" below; the
same frame, tested by tests/test_reader_split.py).

A cell that cannot be trusted is never dropped or nulled silently: the reason goes in a
`__cell__<column>` text column beside it (only present when some cell needs one), for
cleansing to turn into a reject of that row:
- an Excel error value (#DIV/0!, #N/A, …): fastexcel reports the cell and would give null;
  the cell text becomes the error literal, so it also shows as the offending value;
- merged cells reaching into the data rows: only the top-left cell holds a value, so every
  row of the range is ambiguous (a money cell merged over three rows: each row's amount or
  their total?); each read column the range covers is flagged on each of its data rows;
- a formula with no saved result (a workbook written by a program, never saved by Excel),
  which calamine reads as empty.

Decisions. A sheet the spec names is read even when hidden: the name is explicit. A sheet
given by number counts the visible worksheets only, as the operator sees the tabs. Hidden
rows and columns are data (a filter hides them from view, not from the month) and are
read. NUL characters are removed from cell text: Excel cannot show them and Postgres text
cannot hold them; every other character (control characters, emoji) is kept as typed.
"""

from __future__ import annotations

import os
import posixpath
import re
import struct
import tempfile
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from xml.etree import ElementTree

import fastexcel
import polars as pl
from isal import isal_zlib

from workdatahub.errors import InputError, printable
from workdatahub.sources.spec import ColumnSpec, DomainSpec, normalize_header

ROW = "_row"
CELL_ISSUE = "__cell__"  # + column name: why the reader cannot vouch for that cell
HEADER_SEARCH_ROWS = 50
# 合计 or 总计, as sheets write them: spaced out to align with a longer label (`合 计`,
# `合　计`) or as a label (`合计：`)
TOTALS_MARKERS = tuple(
    word[0] + gap + word[1] + colon
    for word in ("合计", "总计")
    for gap in ("", " ", "  ", "   ", "\u3000", "\u3000\u3000")
    for colon in ("", ":", "：")
)
# a cell that may be a totals marker past a number (`202411 | 合计 `), as sheets hold one: a
# marker with up to two spaces, a tab or a full-width space either side; looked up, as a
# regex over every cell costs ~0.5 s at 500,000 rows (the rows found are then trimmed)
_PADS = ("", " ", "  ", "\u3000", "\t")
_MARKER_CELLS = tuple(sorted({a + m + b for m in TOTALS_MARKERS for a in _PADS for b in _PADS}))
# what the readers write for a cell that is not text, exactly: a number (plain decimals, or
# an exponent), an Excel date or time cell, a boolean; and the error values (EXCEL_ERRORS)
PLAIN_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
EXCEL_DATE_CELL = r"^\+?[0-9]{4,}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?$"
EXCEL_BOOLEAN_CELLS = ("true", "false")
_UNREAD = "__unread__"  # a column of the sheet the spec does not read (for the totals test)
# calamine holds the used range as rows × columns cells of ~32 bytes: about 2 GB here
MAX_CELLS = 64_000_000
# the sheet XML a read holds whole: ~11 times a 500,000-row month's, beyond what MAX_CELLS'
# cells take (a zip member may inflate 1,000-fold: a small file can claim gigabytes)
MAX_SHEET_BYTES = 4 * 2**30
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PART_LIMIT = 16 << 20  # workbook.xml and its relations are a few kB; more is not a workbook
_SCAN_CHUNK = 8 << 20
_SCAN_OVERLAP = 64 << 10  # longer than any cell's XML (a formula is at most 8,192 characters)

# calamine's names for the error values (CellErrorType), as Excel shows them
EXCEL_ERRORS = {
    "Div0": "#DIV/0!",
    "NA": "#N/A",
    "Name": "#NAME?",
    "Null": "#NULL!",
    "Num": "#NUM!",
    "Ref": "#REF!",
    "Value": "#VALUE!",
    "GettingData": "#GETTING_DATA",
}
_ERROR_DETAIL = re.compile(r"Error\((\w+)\)")
_UNSUPPORTED_ERROR = re.compile(r"Unsupported cell error value '([^']{1,40})'")
_DIMENSION = re.compile(
    rb'<dimension\b[^>]*?\bref="([A-Z]{1,3})(\d{1,7})(?::([A-Z]{1,3})(\d{1,7}))?"'
)
# elements as any writer spells them: a namespace prefix (`<x:c`, as .NET's OpenXML SDK
# writes), either quote, spaces around `=`
_NS = rb"(?:[A-Za-z_][\w.-]*:)?"
_MERGE = re.compile(
    rb"<"
    + _NS
    + rb"mergeCell\s[^>]*?\bref\s*=\s*[\"']([A-Z]{1,3})(\d{1,7}):([A-Z]{1,3})(\d{1,7})[\"']"
)
_CELL_REF = re.compile(rb"<" + _NS + rb"c\s[^>]*?\br\s*=\s*[\"']([A-Z]{1,3})(\d{1,7})[\"']")
_PREFIX = re.compile(rb"<(?:([A-Za-z_][\w.-]*):)?(?:worksheet|sheetData|mergeCells)\b")
# a cell with content (not self-closing), in the attribute order every writer uses
_VALUE_CELL = re.compile(rb'<c r="([A-Z]{1,3})(\d{1,7})"[^>/]*>')
UNSAVED_FORMULA = "formula without a saved value; open and save the workbook in Excel"
STALE_FORMULA = (
    "formula whose saved value the workbook says to recompute (written by a program); open "
    "and save the workbook in Excel"
)


@dataclass
class SheetData:
    file: Path
    sheet: str
    header_row: int  # Excel row number of the header
    frame: pl.DataFrame  # `_row` + one text column per matched source column (+ CELL_ISSUE…)
    columns: dict[str, str] = field(default_factory=dict)  # target name -> header as found
    missing_optional: list[str] = field(default_factory=list)
    rows_read: int = 0
    skipped_blank: int = 0
    skipped_totals: int = 0
    skipped_footer: int = 0  # signature lines below the totals row (制表人：…), not data
    hidden: bool = False  # the sheet is hidden in the workbook (read because it was named)
    cell_issues: int = 0  # cells flagged in CELL_ISSUE columns
    totals: pl.DataFrame | None = None  # the totals rows skipped (合计/总计), as `frame`


@dataclass(frozen=True)
class SheetPart:
    """One sheet as workbook.xml lists it."""

    name: str
    state: str  # visible, hidden, veryHidden
    kind: str  # worksheet, chartsheet, dialogsheet, …
    part: str | None  # its XML inside the zip


@dataclass
class Workbook:
    path: Path
    archive: zipfile.ZipFile
    sheets: list[SheetPart]
    reader: fastexcel.ExcelReader
    # the workbook asks Excel to recompute every formula when it is opened (`fullCalcOnLoad`,
    # as programs write it): the results saved with its formulas are placeholders (xlsxwriter
    # saves 0) or stale, none to be trusted
    recalculates: bool = False
    # cell style -> how Excel shows a number in it, where that is not the number as written
    # (`shown_formats`): a code padded with zeros
    formats: dict[int, ShownFormat] = field(default_factory=dict)


@dataclass(frozen=True)
class ShownFormat:
    """A number format that shows a number otherwise than written, in a way that matters to
    the data: `000000`, a code's (123 shows as 000123, as reference data writes it). (A
    percentage format is not one: a bare number above 1 in a rate column is a percent
    figure, whatever its cell shows, as the contract has it.)"""

    zeros: int  # an integer shown with at least this many digits

    def shown(self, plain: str) -> str | None:
        """How a number written `plain` (plain decimals) shows in this format, where that
        is not as written; else None."""
        digits = plain.lstrip("-")
        if not digits.isdigit() or len(digits) >= self.zeros:
            return None  # (a fraction shows rounded: no code; left as written)
        return ("-" if plain.startswith("-") else "") + digits.zfill(self.zeros)


def shown_formats(archive: zipfile.ZipFile, workbook: str) -> dict[int, ShownFormat]:
    """Cell style index -> ShownFormat, for the styles of `workbook` (its part) whose number
    format is zeros alone (`000000`: no literal text, no other section); {} when it has
    none, or no readable styles part (numbers are then read as written)."""
    try:
        styles = next(
            (t for k, t in _relations(archive, workbook).values() if k.endswith("/styles")), None
        )
        if styles is None or styles not in archive.NameToInfo:
            return {}
        root = _xml(archive, styles)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, zlib.error, EOFError):
        return {}  # (calamine reads the styles, and says what is wrong with them)
    zeros: dict[int, int] = {}
    for element in root.iter():
        code, number_format = element.get("formatCode", ""), element.get("numFmtId", "")
        zeros_only = re.fullmatch(r"0{2,}", code)
        if _local(element.tag) == "numFmt" and number_format.isdigit() and zeros_only:
            zeros[int(number_format)] = len(code)
    found: dict[int, ShownFormat] = {}
    cell_xfs = next((e for e in root if _local(e.tag) == "cellXfs"), None)
    for index, xf in enumerate(cell_xfs if cell_xfs is not None else []):
        number_format = xf.get("numFmtId", "")
        if number_format.isdigit() and int(number_format) in zeros:
            found[index] = ShownFormat(zeros=zeros[int(number_format)])
    return found


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def column_letter(index: int) -> str:
    """0 -> A, 27 -> AB."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def _col_number(letters: bytes) -> int:
    """b"A" -> 1, b"XFD" -> 16384."""
    number = 0
    for byte in letters:
        number = number * 26 + byte - 64
    return number


# ---------------------------------------------------------------------------- the container


def _ole_kind(path: Path) -> str:
    """What an OLE compound file holds, from the stream names in its first directory sector."""
    try:
        with path.open("rb") as handle:
            header = handle.read(512)
            shift = int.from_bytes(header[30:32], "little")
            size = 1 << shift if 9 <= shift <= 16 else 512
            first = int.from_bytes(header[48:52], "little")
            handle.seek((first + 1) * size)
            directory = handle.read(size)
    except OSError:
        return "unknown"
    names = set()
    for offset in range(0, len(directory) - 127, 128):
        length = int.from_bytes(directory[offset + 64 : offset + 66], "little")
        if 2 <= length <= 64:
            names.add(directory[offset : offset + length - 2].decode("utf-16-le", "replace"))
    if names & {"EncryptedPackage", "EncryptionInfo"}:
        return "encrypted"
    if names & {"Workbook", "Book"}:
        return "xls"
    return "unknown"


def _ole_message(path: Path) -> str:
    kind = _ole_kind(path)
    if kind == "encrypted":
        return (
            f"{path}: is password-protected (an encrypted workbook cannot be read); "
            "remove the password in Excel and save it again as .xlsx"
        )
    if kind == "xls":
        return (
            f"{path}: is an old Excel 97-2003 .xls workbook named .xlsx; "
            "open it in Excel and save it as .xlsx"
        )
    return (
        f"{path}: is password-protected or an old .xls workbook (an OLE container, not "
        ".xlsx); remove any password and save it as .xlsx"
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(archive: zipfile.ZipFile, name: str) -> ElementTree.Element:
    info = archive.getinfo(name)
    if info.file_size > _PART_LIMIT:
        raise ValueError(f"{name} is {info.file_size:,} bytes")
    data = archive.read(name)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError(f"{name} declares a DTD")  # no entity expansion from a workbook
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise ValueError(f"{name}: {error}") from None


def _relations(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """Relationship id -> (type, target path in the zip) for `part`."""
    folder, name = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", name + ".rels")
    if rels not in archive.NameToInfo:
        return {}
    found = {}
    for item in _xml(archive, rels):
        target = item.get("Target", "")
        if item.get("TargetMode") == "External":
            continue
        path = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        found[item.get("Id", "")] = (item.get("Type", ""), posixpath.normpath(path))
    return found


def _sheet_parts(archive: zipfile.ZipFile, path: Path) -> tuple[list[SheetPart], bool, str]:
    """The workbook's sheets, whether it asks for every formula to be recomputed when it is
    opened (`<calcPr fullCalcOnLoad="1"/>`), and its workbook part."""
    names = set(archive.NameToInfo)
    # part names are case-insensitive (as calamine reads them): a relationship to
    # `worksheets/Sheet1.xml` names the zip entry `worksheets/sheet1.xml`
    by_folded = {name.casefold(): name for name in sorted(names, reverse=True)}
    if "mimetype" in names and b"opendocument" in archive.read("mimetype")[:100]:
        raise InputError(
            f"{path}: is an OpenDocument spreadsheet (.ods) named .xlsx; save it as .xlsx"
        )
    workbook = next(
        (t for k, t in _relations(archive, "").values() if k.endswith("/officeDocument")),
        "xl/workbook.xml",
    )
    if workbook.endswith(".bin"):
        raise InputError(
            f"{path}: is an Excel binary workbook (.xlsb) named .xlsx; save it as .xlsx"
        )
    if workbook not in names:
        raise InputError(
            f"{path}: not a readable workbook (a zip archive with no Excel workbook inside)"
        )
    root = _xml(archive, workbook)
    if _local(root.tag) != "workbook":  # a Word or PowerPoint file renamed
        raise InputError(
            f"{path}: not a readable workbook (a zip archive with no Excel workbook inside)"
        )
    relations = _relations(archive, workbook)
    recalculates = any(
        _local(element.tag) == "calcPr"
        and element.get("fullCalcOnLoad", "").strip().lower() in ("1", "true")
        for element in root
    )
    sheets = []
    for element in root.iter():
        if _local(element.tag) != "sheet":
            continue
        rel_id = next((v for k, v in element.attrib.items() if _local(k) == "id" and "}" in k), "")
        kind, part = relations.get(rel_id, ("", ""))
        sheets.append(
            SheetPart(
                name=element.get("name", ""),
                state=element.get("state", "visible"),
                kind=kind.rsplit("/", 1)[-1] or "worksheet",
                part=part if part in names else by_folded.get(part.casefold()),
            )
        )
    return sheets, recalculates, workbook


def open_workbook(path: Path) -> Workbook:
    """Check the container and open it; every way it can fail is one `InputError` line."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        raise InputError(f"{path}: not an .xlsx/.xlsm workbook")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    if head.startswith(OLE_SIGNATURE):
        raise InputError(_ole_message(path))
    if not head:
        raise InputError(f"{path}: not a readable workbook (the file is empty, 0 bytes)")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise InputError(
                f"{path}: not a readable workbook (the zip container is damaged or cut "
                "short: an incomplete copy?)"
            )
        raise InputError(
            f"{path}: not a readable workbook (not an .xlsx zip container; an old .xls or "
            "a password-protected file must be re-saved as .xlsx)"
        )
    archive = None
    try:
        archive = zipfile.ZipFile(path)
        sheets, recalculates, workbook = _sheet_parts(archive, path)
        reader = fastexcel.read_excel(str(path))
        formats = shown_formats(archive, workbook)
    except Exception as error:  # zipfile, XML and fastexcel raise many types for bad files
        if archive is not None:  # (the error, kept by its caller, would keep the file open)
            archive.close()
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: not a readable workbook ({_short(error)})") from None
    return Workbook(path, archive, sheets, reader, recalculates, formats)


def select_sheet(book: Workbook, wanted: str | int) -> SheetPart:
    """By name (hidden sheets too: the name is explicit) or by number among visible tabs."""
    path = book.path
    # a sheet name with a line break must not break the one-line message
    listed = ", ".join(printable(s.name) for s in book.sheets)
    if not book.sheets:
        raise InputError(f"{path}: the workbook has no sheets")
    if isinstance(wanted, int):
        tabs = [s for s in book.sheets if s.state == "visible" and s.kind == "worksheet"]
        if wanted < len(tabs):
            return tabs[wanted]
        raise InputError(
            f"{path}: has no visible sheet number {wanted + 1} (sheets: {listed or 'none'})"
        )
    target = normalize_header(wanted)
    matches = [s for s in book.sheets if normalize_header(s.name) == target]
    if not matches:
        raise InputError(f"{path}: sheet {wanted!r} not found (sheets: {listed or 'none'})")
    if len(matches) > 1:
        both = " and ".join(repr(s.name) for s in matches)
        raise InputError(f"{path}: sheets {both} both match {wanted!r}; rename one of them")
    if matches[0].kind != "worksheet":
        raise InputError(f"{path}: sheet {matches[0].name!r} is a {matches[0].kind}, not a table")
    return matches[0]


# ---------------------------------------------------------------------------- the sheet XML


@dataclass
class SheetScan:
    """What one pass over the sheet XML tells that fastexcel does not."""

    last_row: int = 0  # row of the last cell holding a value (measured scans only)
    max_col: int = 0  # widest cell holding a value (measured scans only)
    merges: set[tuple[int, int, int, int]] = field(default_factory=set)  # r1, c1, r2, c2
    unsaved_formulas: set[tuple[int, int]] = field(default_factory=set)  # (row, column)
    stale_formulas: set[tuple[int, int]] = field(default_factory=set)  # see `formula_cells`
    formulas: bool | None = None  # whether any cell holds a formula (None: not known)
    nul_free: bool = False  # no cell text can hold a NUL (the native scan knows its strings)
    formats_shown: bool = False  # numbers are as their format shows them (`Workbook.formats`)


def _cell_at(data: bytes, end: int, prefix: bytes = b"") -> tuple[int, int] | None:
    """(row, column) of the cell whose XML encloses position `end` (its elements written
    with `prefix`, `x:` or none)."""
    start = data.rfind(b"<" + prefix + b"c ", 0, end)
    match = _CELL_REF.match(data, start) if start >= 0 else None
    return (int(match[2]), _col_number(match[1])) if match else None


def sheet_dimension(archive: zipfile.ZipFile, part: str) -> tuple[int, int] | None:
    """(last row, last column) the sheet declares in `<dimension>`, at the top of its XML."""
    with archive.open(part) as stream:
        head = stream.read(4096)
    found = _DIMENSION.search(head)
    if not found:
        return None
    letters, row = (found[3], found[4]) if found[3] else (found[1], found[2])
    return int(row), _col_number(letters)


class _Scanner:
    """Merged ranges and formulas without a saved value, found with plain byte searches (near
    inflate speed) over the sheet XML fed in blocks; `measure` also finds the extent of the
    cells that hold a value, cell by cell (slow); `every_formula`, every cell holding a
    formula (`stale_formulas`: a cell per formula in Python, for a workbook that
    `recalculates`)."""

    def __init__(self, *, measure: bool = False, every_formula: bool = False) -> None:
        self.scan = SheetScan()
        self.measure = measure
        self.every_formula = every_formula
        self.tail = b""
        self.prefix: bytes | None = None  # the elements' namespace prefix (b"x:"), once seen

    def feed(self, block: bytes) -> None:
        scan = self.scan
        data = self.tail + block
        if self.prefix is None and (found := _PREFIX.search(data)):
            self.prefix = found[1] + b":" if found[1] else b""
        p = self.prefix or b""
        if self.measure:
            for letters, row in _VALUE_CELL.findall(data):
                scan.max_col = max(scan.max_col, _col_number(letters))
                scan.last_row = max(scan.last_row, int(row))
        if b"mergeCell" in data:
            for c1, r1, c2, r2 in _MERGE.findall(data):
                scan.merges.add((int(r1), _col_number(c1), int(r2), _col_number(c2)))
        # a formula cell with no result: `<f>…</f></c>`, `<f …/></c>`, `<v/></c>`, `<v></v></c>`
        cell, formula, value = b"<" + p + b"c ", b"<" + p + b"f", b"<" + p + b"v>"
        openers = (formula + b">", formula + b" ", formula + b"/")
        if not scan.formulas and any(opener in data for opener in openers):
            scan.formulas = True  # (False only once the whole sheet was seen: the feeder's)
        for opener in openers if self.every_formula else ():
            hit = data.find(opener)
            while hit >= 0:
                found_cell = _cell_at(data, hit, p)
                if found_cell:
                    scan.stale_formulas.add(found_cell)
                hit = data.find(opener, hit + 1)
        end = b"</" + p + b"c>"
        for marker in (b"</" + p + b"f>" + end, b"/>" + end, value + b"</" + p + b"v>" + end):
            hit = data.find(marker)
            while hit >= 0:
                start = data.rfind(cell, 0, hit)
                if start >= 0 and formula in data[start:hit] and value not in data[start:hit]:
                    found_cell = _cell_at(data, hit, p)
                    if found_cell:
                        scan.unsaved_formulas.add(found_cell)
                hit = data.find(marker, hit + 1)
        self.tail = data[-_SCAN_OVERLAP:]

    def feed_sheet(self, xml: bytes, formulas: bool) -> None:
        """The whole sheet XML at once; `formulas`: whether any cell holds one (else only
        the merged ranges, listed after the rows, are looked for)."""
        if formulas:  # find those without a value
            view = memoryview(xml)
            for at in range(0, len(xml), _SCAN_CHUNK):
                self.feed(bytes(view[at : at + _SCAN_CHUNK]))
            del view
        else:
            self.feed(xml[max(xml.rfind(b"</sheetData>"), 0) :])


def scan_sheet(
    archive: zipfile.ZipFile,
    part: str,
    *,
    measure: bool = False,
    every_formula: bool = False,
    stop: Event | None = None,
) -> SheetScan:
    """Stream the sheet XML once through a `_Scanner` (see there). `measure` is only for a
    sheet whose declared extent is absent or too large to trust. `stop` ends the pass early
    (the read failed meanwhile)."""
    scanner = _Scanner(measure=measure, every_formula=every_formula)
    with archive.open(part) as stream:
        while block := stream.read(_SCAN_CHUNK):
            if stop is not None and stop.is_set():
                break
            scanner.feed(block)
        else:  # the whole sheet was seen
            scanner.scan.formulas = bool(scanner.scan.formulas)
    return scanner.scan


def formula_cells(archive: zipfile.ZipFile, part: str) -> set[tuple[int, int]]:
    """(row, column) of every cell holding a formula, in one pass over the sheet XML."""
    return scan_sheet(archive, part, every_formula=True).stale_formulas


def _scan_file(path: Path, part: str, stop: Event) -> SheetScan:
    with zipfile.ZipFile(path) as archive:  # its own handle: this runs in another thread
        return scan_sheet(archive, part, stop=stop)


def _too_large(where: str, rows: int, columns: int) -> InputError:
    return InputError(
        f"{where}: cells are used up to {column_letter(columns - 1)}{rows} ({rows:,} rows × "
        f"{columns:,} columns), more than the {MAX_CELLS:,} cells a sheet may span; delete "
        "the rows and columns beyond the table (Ctrl+End shows the last used cell) and save"
    )


def _load_and_scan(
    book: Workbook, sheet: SheetPart, where: str
) -> tuple[pl.DataFrame, list[int], list[CellProblem], SheetScan | None]:
    """Parse the sheet with fastexcel and scan its XML. calamine allocates the used range
    (rows × columns) before anything can be checked, and a failed allocation aborts the
    process, so the extent is checked first. With a sensible declared extent (Excel writes
    an exact one) the scan runs in a thread beside the parse, which releases the GIL: on two
    cores it costs next to nothing. Otherwise the cells are measured first, serially."""
    if sheet.part is None:
        return (*_load(book, sheet, where), None)
    size = book.archive.getinfo(sheet.part).file_size
    if size > MAX_SHEET_BYTES:  # (before any reader inflates it: it is held whole)
        raise InputError(
            f"{where}: the sheet is {size / 2**20:,.1f} MB of XML once unzipped, more than the "
            f"{MAX_SHEET_BYTES / 2**20:,.0f} MB a sheet may be (a damaged or hostile file?)"
        )
    errors = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)
    try:
        declared = sheet_dimension(book.archive, sheet.part)
        if declared is None or declared[0] * declared[1] > MAX_CELLS:
            scan = scan_sheet(book.archive, sheet.part, measure=True)
            if scan.last_row * scan.max_col > MAX_CELLS:
                raise _too_large(where, scan.last_row, scan.max_col)
            return (*_load(book, sheet, where), scan)
    except errors as error:
        raise InputError(f"{where}: unreadable ({_short(error)})") from None
    native = _load_native(book, sheet)
    if native is not None:
        parsed, scan = native
        return (*parsed, scan)
    split = _load_split(book, sheet)
    if split is not None:
        parsed, scan = split
        return (*parsed, scan)
    stop = Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_scan_file, book.path, sheet.part, stop)
        try:
            loaded = _load(book, sheet, where)
        except BaseException:
            stop.set()
            raise
        try:
            return (*loaded, pending.result())
        except errors as error:
            raise InputError(f"{where}: unreadable ({_short(error)})") from None


def _unsupported_error_cell(archive: zipfile.ZipFile, part: str, literal: str) -> str:
    """The first cell holding an error value calamine cannot read, e.g. "D12"."""
    needle = f"<v>{literal}</v>".encode()
    with archive.open(part) as stream:
        tail = b""
        while block := stream.read(_SCAN_CHUNK):
            data = tail + block
            hit = data.find(needle)
            cell = _cell_at(data, hit) if hit >= 0 else None
            if cell:
                return f"{column_letter(cell[1] - 1)}{cell[0]}"
            tail = data[-_SCAN_OVERLAP:]
    return "?"


# ---------------------------------------------------------------------------- header and body


def _find_header(
    rows: list[tuple[str | None, ...]],
    spec: DomainSpec,
    where: str,
    letters: list[str],
) -> tuple[int, dict[int, ColumnSpec], dict[str, str]]:
    """Return (index in `rows`, frame column index -> spec column, name -> header found).
    `rows[i]` is Excel row i + 1; `letters[j]` is the Excel column of frame column j."""
    required = spec.required_headers
    best: tuple[int, int, list[str], list[str]] = (
        -1,
        -1,
        [c.header or c.name for c in required],
        [],
    )
    for index, row in enumerate(rows):
        normalized = [normalize_header(cell) if cell is not None else "" for cell in row]
        present = set(normalized)
        missing = [c.header or c.name for c in required if not present.intersection(c.headers)]
        found = len(required) - len(missing)
        if found > best[1]:
            best = (index, found, missing, _unknown_headers(row, normalized, spec))
        if missing:
            continue
        mapping: dict[int, ColumnSpec] = {}
        seen: dict[str, int] = {}
        found_headers: dict[str, str] = {}
        for position, header in enumerate(normalized):
            for column in spec.source_columns:
                if header in column.headers:
                    if column.name in seen:
                        before, first = row[seen[column.name]], letters[seen[column.name]]
                        twice = (
                            f"header {row[position]!r} appears twice (columns {first} and "
                            f"{letters[position]})"
                            if str(before).strip() == str(row[position]).strip()
                            else f"headers {before!r} (column {first}) and {row[position]!r} "
                            f"(column {letters[position]}) both name the same column"
                        )
                        raise InputError(f"{where}: row {index + 1}: {twice} for {column.name}")
                    seen[column.name] = position
                    mapping[position] = column
                    found_headers[column.name] = str(row[position]).strip()
        return index, mapping, found_headers
    if best[1] <= 0:
        wanted = ", ".join(c.header or c.name for c in required)
        raise InputError(
            f"{where}: no header row found in the first {len(rows)} rows "
            f"(expected headers: {wanted})"
        )
    # a renamed header is the usual cause: the row's headers no column claims are named
    others = f"; headers no column reads there: {', '.join(best[3])}" if best[3] else ""
    raise InputError(
        f"{where}: required column missing: {', '.join(best[2])} (header row {best[0] + 1}{others})"
    )


# a title row's unit in a multiple of 元, after NFKC and without spaces (the colon and the
# brackets half-width): `单位：万元`, `（金额单位：千元）`, `单位（万元）`, `单位/万元`,
# `金额单位为万元`, or a title ending `（万元）`; not `元/万份`
_SCALED_UNIT = re.compile(r"(?:单位[:/为(]?|\()(?:人民币)?[十百千万亿]+元")
# the cell around a style attribute: its start, its `r` and `t`, its value (after its
# formula, if any: Excel shows a formula's result in the format too, as the scan does)
_CELL_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?c\s")
_REF = re.compile(rb"\br\s*=\s*[\"']([A-Z]{1,3})(\d{1,7})[\"']")
_TYPE = re.compile(rb"\bt\s*=\s*[\"']([^\"']*)[\"']")
_VALUE = re.compile(
    rb"\s*(?:<(?:[A-Za-z_][\w.-]*:)?f\b(?:[^>]*/>|[^>]*>[^<]*</(?:[A-Za-z_][\w.-]*:)?f>)\s*)?"
    rb"<(?:[A-Za-z_][\w.-]*:)?v>([^<]*)</"
)


def _as_formatted(
    book: Workbook, part: str, whole: pl.DataFrame, absolute: list[int], where: str
) -> pl.DataFrame:
    """`whole` (as fastexcel read it) with its integers in a zeros format (`000000`) shown
    with their zeros, as the native read does: the sheet XML searched for those styles'
    attributes alone (`bytes.find`), each cell found then read in Python."""
    from workdatahub.excel.native import _plain_text

    columns = {c: j for j, c in enumerate(absolute)}
    changes: dict[int, tuple[list[int], list[str]]] = {}
    try:
        xml = inflate(book.archive, part)
    except Exception as error:
        raise InputError(f"{where}: unreadable ({_short(error)})") from None
    for style, shown_as in book.formats.items():
        for quote in (b'"', b"'"):
            needle = b" s=" + quote + b"%d" % style + quote
            at = xml.find(needle)
            while at >= 0:
                start = xml.rfind(b"<", 0, at)
                close = xml.find(b">", at)
                cell = _CELL_START.match(xml, start) if start >= 0 else None
                at = xml.find(needle, at + len(needle))
                if cell is None or close < 0 or xml[close - 1 : close] == b"/":
                    continue  # (not a cell's attribute, or an empty cell)
                attributes = xml[start:close]
                kind, ref = _TYPE.search(attributes), _REF.search(attributes)
                value = _VALUE.match(xml, close + 1)
                if ref is None or value is None or (kind is not None and kind[1] != b"n"):
                    continue
                plain = _plain_text(value[1])
                text = shown_as.shown(plain) if plain is not None else None
                j, row = columns.get(_col_number(ref[1]) - 1), int(ref[2]) - 1
                if j is None or text is None or row >= whole.height:
                    continue
                rows, texts = changes.setdefault(j, ([], []))
                rows.append(row)
                texts.append(text)
    if not changes:
        return whole
    names = whole.columns
    return whole.with_columns(
        whole[names[j]].scatter(rows, pl.Series(texts, dtype=pl.String))
        for j, (rows, texts) in changes.items()
    )


def _check_unit(
    rows: list[tuple[str | None, ...]], spec: DomainSpec, where: str, headers: set[int]
) -> None:
    """Refuse a sheet that states its amounts in a multiple of 元 (`单位：万元`) above its
    table or beside its headers (a unit line there): the contract's amounts are 元, and
    loading 万元 figures as they stand would be 10,000 times short. `rows[i]` is Excel row
    i + 1, the rows down to the header row, whose cells at `headers` (the columns' own)
    are not looked at."""
    if not any(c.type == "money" for c in spec.columns):
        return
    last = len(rows) - 1
    for index, row in enumerate(rows):
        for position, cell in enumerate(row):
            if not cell or (index == last and position in headers):
                continue
            text = normalize_header(cell)
            # beside the headers only a unit line counts: `期末规模（万元）` there is the
            # header of a column of its own, which the contract does not read
            if _SCALED_UNIT.search(text) and (index < last or "单位" in text):
                raise InputError(
                    f"{where}: row {index + 1}: the sheet states {cell.strip()!r}; amounts "
                    "load as 元, as the contract has them: convert the sheet to 元 (or "
                    "correct that line) and load it again"
                )


def _unknown_headers(
    row: tuple[str | None, ...], normalized: list[str], spec: DomainSpec
) -> list[str]:
    """The texts of `row` that name no column of `spec`, in sheet order, each once."""
    known = {header for column in spec.source_columns for header in column.headers}
    out: list[str] = []
    for cell, header in zip(row, normalized, strict=True):
        text = "" if cell is None else str(cell).strip()
        if header and header not in known and text not in out:
            out.append(text)
    return out


@dataclass(frozen=True)
class CellProblem:
    """A cell fastexcel could not read as text: (frame row, frame column) and its detail."""

    position: tuple[int, int]
    detail: str


Parsed = tuple[pl.DataFrame, list[int], list[CellProblem]]


def _parse(reader: fastexcel.ExcelReader, name: str) -> Parsed:
    """Sheet `name` as text, row i = Excel row i + 1; also each frame column's Excel column
    index and the cells fastexcel could not read. Raises whatever fastexcel raises."""
    # an integer skip_rows (even 0) makes fastexcel count from the sheet's row 1 instead
    # of its first used row, so frame row i is Excel row i + 1 (guarded by tests)
    loaded = reader.load_sheet(
        name, header_row=None, skip_rows=0, dtypes="string", schema_sample_rows=1
    )
    batch, errors = loaded.to_arrow_with_errors()
    absolute = [c.absolute_index for c in loaded.available_columns()]
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    problems = [CellProblem(e.position, e.detail) for e in (errors.errors if errors else [])]
    return frame, absolute, problems


def _load(book: Workbook, sheet: SheetPart, where: str) -> Parsed:
    """`_parse` of the whole sheet, its failures as one `InputError` line."""
    try:
        return _parse(book.reader, sheet.name)
    except Exception as error:
        unsupported = _UNSUPPORTED_ERROR.search(str(error))
        if unsupported and sheet.part:
            literal = unsupported[1]
            cell = _unsupported_error_cell(book.archive, sheet.part, literal)
            raise InputError(
                f"{where}: cell {cell} holds the Excel error {literal}, which cannot be read; "
                "correct the formula or paste the values, then save"
            ) from None
        raise InputError(f"{where}: unreadable ({_short(error)})") from None


# ---------------------------------------------------------------------------- parallel parse
# calamine parses a sheet on one core (~50 MB of XML a second here, 750 bytes a row for 24
# columns). A large sheet is therefore cut at row boundaries into one piece per core, each
# piece made a workbook of its own (the package's other parts, the sheet's head and that
# run of rows, stored uncompressed in a temporary file) and parsed at the same time; the
# XML is inflated once, in this thread, feeding the merge/formula scan on the way, and the
# first piece is parsed while the next is still being cut. Pieces keep their Excel row
# numbers (fastexcel pads from row 1), so the frames stack back in order. Anything
# unexpected (no `<sheetData>`, rows without numbers, a piece fastexcel refuses) gives up
# the split and the sheet is read whole, which also reports any real error.

SPLIT_MIN_BYTES = 16 << 20  # ~20,000 rows; below this the second core gains next to nothing
MAX_WORKERS = 4
_SHEET_DATA = b"<sheetData>"
_ROW_START = re.compile(rb'<row\b[^>]*?\br="(\d{1,7})"')
# parts a piece leaves out: never read for cell values, and some are large (a pivot cache
# can hold the whole source table again)
_NOT_READ = tuple(
    f"xl/{folder}/"
    for folder in ("media", "drawings", "charts", "pivotCache", "pivotTables", "externalLinks",
                   "embeddings", "printerSettings", "queryTables", "slicers", "slicerCaches")
)  # fmt: skip
_EMPTY_SHEET = (
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    b"<sheetData/></worksheet>"
)


# Piece k starts parsing once it is written, so each piece is smaller than the one before
# (sizes 1 : q : q² … with q = 1 / 1.2) for the pieces to finish close together.
_STREAM_TO_PARSE = 0.2


def _workers() -> int:
    return min(os.cpu_count() or 1, MAX_WORKERS)


def _pieces() -> int:
    """One piece more than there are workers: calamine holds a piece's cells (~40 bytes
    each) while parsing it, so at most two thirds of the sheet's cells are held at once on
    two cores rather than all of them (peak memory at 500,000 rows: ~1.5 GB -> ~1.3 GB)."""
    workers = _workers()
    return workers + 1 if workers > 1 else 1


def _cuts(pieces: int, size: int) -> list[int]:
    """Byte offsets where pieces 1, 2, … should start (at the next row from there)."""
    q = 1 / (1 + _STREAM_TO_PARSE)
    shares = [q**k for k in range(pieces)]
    total, cuts, done = sum(shares), [], 0.0
    for share in shares[:-1]:
        done += share
        cuts.append(int(size * done / total))
    return cuts


def _other_parts(book: Workbook, sheet: SheetPart) -> list[tuple[str, bytes]]:
    """What every piece holds besides its rows (read once for all pieces): the package's
    parts that calamine may read, the other worksheets emptied."""
    sheet_parts = {s.part for s in book.sheets if s.part}
    parts = []
    for info in book.archive.infolist():
        name = info.filename
        if name == sheet.part or name.endswith("/") or name.startswith(_NOT_READ):
            continue
        parts.append((name, _EMPTY_SHEET if name in sheet_parts else book.archive.read(name)))
    return parts


class _Piece:
    """One run of rows as a workbook of its own, written as it streams by."""

    def __init__(self, path: Path, part: str, others: list[tuple[str, bytes]], big: bool) -> None:
        self.path = path
        self.archive = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)
        for name, body in others:
            self.archive.writestr(name, body)
        self.stream = self.archive.open(part, "w", force_zip64=big)

    def close(self, tail: bytes = b"") -> None:
        self.stream.write(tail)
        self.stream.close()
        self.archive.close()


def _parse_piece(path: Path, name: str) -> Parsed:
    return _parse(fastexcel.read_excel(str(path)), name)


def _stack(parsed: list[Parsed]) -> Parsed:
    """The pieces' frames as one, in their Excel rows and columns."""
    absolute = sorted({a for _, columns, _ in parsed for a in columns})
    position = {a: i for i, a in enumerate(absolute)}
    frames, problems, height = [], [], 0
    for frame, columns, cells in parsed:
        # rows above the piece are fastexcel's padding (null); the piece starts below
        # the rows stacked so far, with any empty rows between kept as padding
        frame = frame.slice(height).rename(
            {name: f"c{a}" for name, a in zip(frame.columns, columns, strict=True)}
        )
        frames.append(frame)
        problems += [
            CellProblem((c.position[0], position[columns[c.position[1]]]), c.detail) for c in cells
        ]
        height += frame.height
    whole = pl.concat(frames, how="diagonal").select(f"c{a}" for a in absolute)
    return whole, absolute, problems


def _load_split(book: Workbook, sheet: SheetPart) -> tuple[Parsed, SheetScan] | None:
    """The sheet parsed in pieces at once, with its scan; None when it is not worth it or
    not possible (the caller then reads it whole)."""
    pieces = _pieces()
    if sheet.part is None or pieces < 2:
        return None
    size = book.archive.getinfo(sheet.part).file_size
    if size < SPLIT_MIN_BYTES:
        return None
    scanner = _Scanner()
    big = size > 1 << 30
    part = sheet.part
    try:
        temporary = tempfile.TemporaryDirectory(prefix="wdh-read-", ignore_cleanup_errors=True)
    except OSError:
        return None  # no writable temporary folder: read whole
    with temporary as folder, ThreadPoolExecutor(max_workers=_workers()) as pool:
        pending: list[Future[Parsed]] = []
        try:
            with book.archive.open(sheet.part) as stream:
                data = stream.read(_SCAN_CHUNK)
                opened = data.find(_SHEET_DATA)
                if opened < 0:  # an empty sheet, or a writer using a namespace prefix
                    return None
                head = data[: opened + len(_SHEET_DATA)]
                others = _other_parts(book, sheet)
                piece = _Piece(Path(folder, "0.xlsx"), part, others, big)
                cuts = _cuts(pieces, size)
                seen, floor = 0, len(head)  # bytes before `data`; where cutting may start
                while data:
                    scanner.feed(data)
                    start = 0
                    while len(pending) < len(cuts):
                        target = cuts[len(pending)] - seen
                        if target >= len(data):
                            break
                        cut = data.find(b"<row ", max(target, start, floor))
                        if cut < 0:
                            break
                        if not _ROW_START.match(data, cut):
                            return None  # rows without their number: cannot keep row numbers
                        piece.stream.write(memoryview(data)[start:cut])
                        piece.close(b"</sheetData></worksheet>")
                        pending.append(pool.submit(_parse_piece, piece.path, sheet.name))
                        piece = _Piece(Path(folder, f"{len(pending)}.xlsx"), part, others, big)
                        piece.stream.write(head)
                        start = cut
                    piece.stream.write(memoryview(data)[start:])
                    seen, floor = seen + len(data), 0
                    data = stream.read(_SCAN_CHUNK)
                piece.close()
                pending.append(pool.submit(_parse_piece, piece.path, sheet.name))
            parsed = [future.result() for future in pending]
        except Exception:
            return None  # read whole instead: the same result, or the error in one line
        finally:
            for future in pending:
                future.cancel()
    scanner.scan.formulas = bool(scanner.scan.formulas)  # (every piece was fed)
    return _stack(parsed), scanner.scan


# ---------------------------------------------------------------------------- native scan
# The cells of every sheet (NATIVE_MIN_BYTES: 0) are cut out of the XML by a compiled scanner
# (workdatahub/excel/native.py and scanner.c: its pass over the cells takes ~0.4 s on two
# cores at 500,000 rows, against ~10 s for one fastexcel call) and only the cells it does
# not read itself go through fastexcel. Best of 3 reads of the bench's sheets (fastexcel
# whole / in parallel pieces / native): 1.4 MB (2,000 rows) 0.039 / 0.055 / 0.031 s;
# 6.9 MB 0.225 / 0.175 / 0.079 s; 36 MB (50,000 rows) 0.85 / 0.82 / 0.32 s. Smaller
# sheets are scanned too: a 1,000-row sheet reads in 16.5 ms against fastexcel's 18.7, a
# 50-row one in 6.5 against 3.8 ms, and every sheet keeps the digits its workbook holds
# (fastexcel prints 342100662.2 as 342100662.199999988: a small sheet's rejected rows
# showed such values). Without a C compiler, and when the scanner gives up, the parallel
# parse (and then the whole read) takes over.

NATIVE_MIN_BYTES = 0  # (the tests of the fastexcel reads set it out of reach)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, …, name length, extra length


def inflate(archive: zipfile.ZipFile, part: str) -> bytes:
    """The part's bytes. A deflated part is inflated by ISA-L (twice zlib's speed: 0.7 s
    instead of 1.4 s for a 376 MB sheet) in one call that releases the GIL, its CRC checked;
    anything else (stored, encrypted, an odd header) through zipfile."""
    info = archive.getinfo(part)
    if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 1 or archive.fp is None:
        return archive.read(part)
    with open(archive.filename or "", "rb") as file:
        file.seek(info.header_offset)
        signature, name, extra = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            return archive.read(part)
        file.seek(info.header_offset + _LOCAL_HEADER.size + name + extra)
        inflater = isal_zlib.decompressobj(wbits=-15)
        # never more than the size the zip declares (and one byte to tell it lied)
        data = inflater.decompress(file.read(info.compress_size), info.file_size + 1)
    if not inflater.eof or len(data) != info.file_size or isal_zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC or size of {part}")
    return data


def _load_native(book: Workbook, sheet: SheetPart) -> tuple[Parsed, SheetScan] | None:
    """The native scan of the sheet, with its merged ranges and formulas without a value;
    None when the tests turned it off (NATIVE_MIN_BYTES), there is no compiled scanner, or
    it gives up (the caller reads on)."""
    if sheet.part is None or book.archive.getinfo(sheet.part).file_size < NATIVE_MIN_BYTES:
        return None
    from workdatahub.excel import native

    if native.library() is None:
        return None
    try:
        xml = inflate(book.archive, sheet.part)
    except Exception:
        return None  # the other readers report what is wrong, in one line
    scanner = _Scanner()
    source = [xml]
    del xml  # read_xml frees it once the cells are out
    try:
        parsed = native.read_xml(book, sheet, source, _workers(), scanner)
    except InputError:
        raise
    except fastexcel.FastExcelError:  # the cells it asked of fastexcel: the next read says why
        return None
    except Exception as error:  # (read_xml gives up with None: this is the scanner's bug)
        from workdatahub.logs import get_logger
        from workdatahub.settings import one_line

        get_logger(file=book.path.name, sheet=sheet.name).warning(
            "the native scan failed; fastexcel reads the sheet (slower, the same rows)",
            error=f"{type(error).__name__}: {one_line(error)}",
        )
        return None
    return (parsed, scanner.scan) if parsed is not None else None


def _issues(
    height: int,
    first_data_row: int,
    read: dict[int, str],
    absolute: list[int],
    scan: SheetScan | None,
    errors: list[CellProblem],
) -> tuple[dict[str, pl.Series], dict[str, tuple[list[int], list[str]]]]:
    """Cells to flag, for a body of `height` rows from Excel row `first_data_row` whose read
    columns are `read` (frame column index -> name). Returns per column name the CELL_ISSUE
    column (reason or null), and (body indices, literals) of the error cells; both are
    empty for a clean sheet."""
    by_excel_column = {absolute[p] + 1: name for p, name in read.items()}
    last_row = first_data_row + height - 1
    spans: list[tuple[int, int, str, str]] = []  # body index from, to (exclusive), column, why
    if scan is not None:
        for r1, c1, r2, c2 in sorted(scan.merges):
            top, bottom = max(r1, first_data_row), min(r2, last_row)
            if top > bottom or (r1, c1) == (r2, c2):
                continue
            where = f"{column_letter(c1 - 1)}{r1}:{column_letter(c2 - 1)}{r2}"
            reason = f"part of merged cells {where}; unmerge them and fill each cell"
            spans += [
                (top - first_data_row, bottom - first_data_row + 1, by_excel_column[c], reason)
                for c in range(c1, c2 + 1)
                if c in by_excel_column
            ]
        formulas = [(cell, UNSAVED_FORMULA) for cell in sorted(scan.unsaved_formulas)]
        formulas += [
            (cell, STALE_FORMULA) for cell in sorted(scan.stale_formulas - scan.unsaved_formulas)
        ]
        for (row, column), why in formulas:
            if column in by_excel_column and first_data_row <= row <= last_row:
                index = row - first_data_row
                spans.append((index, index + 1, by_excel_column[column], why))
    literals: dict[str, tuple[list[int], list[str]]] = {}
    for error in errors:
        row, column = error.position
        index = row + 1 - first_data_row
        if column not in read or not 0 <= index < height:
            continue
        code = _ERROR_DETAIL.search(error.detail)
        if code:
            literal = EXCEL_ERRORS.get(code[1], f"#{code[1]}")
            spans.append((index, index + 1, read[column], f"Excel error {literal}"))
            literals.setdefault(read[column], ([], []))
            literals[read[column]][0].append(index)
            literals[read[column]][1].append(literal)
        else:
            spans.append((index, index + 1, read[column], f"unreadable cell: {error.detail}"))
    if not spans:
        return {}, {}
    flagged = (
        pl.DataFrame(spans, schema=["start", "stop", "column", "reason"], orient="row")
        .select(pl.int_ranges("start", "stop").alias("index"), "column", "reason")
        .explode("index")
        # a merged cell that also holds an error: the error, listed later, is more specific
        .unique(subset=["column", "index"], keep="last", maintain_order=True)
    )
    issues = {}
    for (name,), group in flagged.partition_by("column", as_dict=True).items():
        empty = pl.Series(CELL_ISSUE + str(name), [None] * height, dtype=pl.String)
        issues[str(name)] = empty.scatter(group["index"], group["reason"])
    return issues, literals


# what a totals row may hold before its marker and still be one (the marker is the row's
# first non-empty *text* cell: `202411 | 合计`): a cell the readers wrote as no text
_NOT_TEXT = "^(?:{})$".format(
    "|".join(
        [PLAIN_NUMBER[1:-1], EXCEL_DATE_CELL[1:-1], *EXCEL_BOOLEAN_CELLS]
        + [re.escape(error) for error in EXCEL_ERRORS.values()]
    )
)


def _first_non_empty(names: list[str]) -> pl.Expr:
    return pl.coalesce([pl.when(pl.col(n).str.len_bytes() > 0).then(pl.col(n)) for n in names])


def _row_marks(
    body: pl.DataFrame,
    names: list[str],
    flagged: list[str],
    cell_by_cell: bool | None = None,
    nul_free: bool = False,
    sheet_order: list[str] | None = None,
) -> pl.DataFrame:
    """Per row: `_blank` (every cell of `names` empty or whitespace, none flagged: a flagged
    row is rejected, not skipped; and no totals row), `_totals` (the row's first non-empty
    text cell, numbers, dates, errors and booleans passed over, is a totals marker, a
    marker alone in an unread column included) and `_nul` (some cell holds a NUL;
    none when the reader knows so, `nul_free`: the search costs 0.35 s at 500,000 rows).

    Totals look at every cell of the row in the sheet's order, `sheet_order` (the columns the
    spec does not read too: a `序号` column holding `合计`); by default `names`. The blank
    test and the usual totals row need only each row's first non-empty cell, except in a row
    whose first non-empty cell is all whitespace: every cell of those rows alone is tested
    (`cell_by_cell` True or False tests every row the one way). A row whose marker comes after
    a number or a date is found among the few rows with a cell that is the marker alone, maybe
    padded (`_MARKER_CELLS`: stripping every cell of a 500,000-row sheet costs ~0.25 s), and
    only those are looked at cell by cell."""
    order = names if sheet_order is None else sheet_order
    # a row's first non-empty cell, the unread columns counted: only those before the last
    # read one can come first in a row that is not blank (a trailing 备注 cannot)
    ahead = order[: max(order.index(n) for n in names) + 1] if names else order
    leading = ["_first"] if ahead == names else ["_first", "_lead"]
    frame = body.with_columns(_first=_first_non_empty(names))
    frame = frame.with_columns(
        _lead=pl.col("_first") if ahead == names else _first_non_empty(ahead)
    )

    def marked(rows: pl.DataFrame, each_cell: bool) -> pl.DataFrame:
        if each_cell:
            blank = ~pl.any_horizontal(
                pl.col(n).str.contains(r"\S").fill_null(False) for n in names
            )
            stripped = [pl.col(n).str.strip_chars() for n in ahead]
            lead_text = pl.coalesce([pl.when(s != "").then(s) for s in stripped])
        else:
            blank = pl.col("_first").is_null()
            lead_text = pl.col("_lead").str.strip_chars()
        if flagged:
            blank = blank & ~pl.any_horizontal(pl.col(f).is_not_null() for f in flagged)
        leads = lead_text.is_in(TOTALS_MARKERS).fill_null(False)
        marker_cell = pl.any_horizontal(pl.col(n).is_in(_MARKER_CELLS) for n in order)
        return rows.select(
            ROW,
            _blank=blank & ~leads,  # (a marker in an unread column of an otherwise empty row)
            _totals=leads,
            _later=marker_cell & ~leads & ~blank,
            _nul=pl.lit(False)
            if nul_free
            else pl.any_horizontal(
                pl.col(n).str.contains("\x00", literal=True).fill_null(False) for n in names
            ),
        )

    if cell_by_cell is not None:
        marks = marked(frame, cell_by_cell)
    else:
        # the first non-empty cell is the answer unless it is all whitespace: those rows
        # (a stray space, usually few) alone are tested cell by cell
        whitespace = pl.any_horizontal(pl.col(c).str.contains(r"^\s+$") for c in leading)
        spaced = pl.arg_where(frame.select(whitespace.fill_null(False)).to_series(), eager=True)
        marks = marked(frame, False)
        if spaced.len():
            slow = marked(frame[spaced], True)
            marks = marks.with_columns(
                marks[c].scatter(spaced, slow[c]) for c in ("_blank", "_totals", "_later")
            )
    later = pl.arg_where(marks["_later"], eager=True)
    if later.len():
        texts = [pl.col(n).str.strip_chars() for n in order]
        first_text = pl.coalesce(
            [pl.when((t != "") & ~t.str.contains(_NOT_TEXT)).then(t) for t in texts]
        )
        found = frame[later].select(first_text.is_in(TOTALS_MARKERS).fill_null(False))
        marks = marks.with_columns(marks["_totals"].scatter(later, found.to_series()))
    return marks.drop("_later")


# a footer cell: a label and its colon first (`制表人：张三`, `审核:`, `注：…`); a number, a
# date or a code has no such label
_FOOTER_CELL = r"^\s*[^\d\s:：]{1,10}\s*[:：]"
FOOTER_ROWS = 20  # the most rows a sheet's footer is looked for in, at its end


def _footer_rows(body: pl.DataFrame, cells: list[pl.Series]) -> list[int]:
    """The rows that sign the sheet off below its last totals row, as positions in `body`:
    among its last FOOTER_ROWS rows, those at the end (blank ones between them) whose every
    non-empty cell is a label with its colon (`制表人：张三 | 审核：李四`). `cells` are every
    column of the sheet that holds something, read or not."""
    start = max(int(pl.arg_where(body["_totals"], eager=True)[-1]) + 1, body.height - FOOTER_ROWS)
    if start >= body.height:
        return []
    tail = pl.DataFrame([c.slice(start).alias(f"c{k}") for k, c in enumerate(cells)])
    empty = [pl.col(c).is_null() | ~pl.col(c).str.contains(r"\S") for c in tail.columns]
    labelled = [
        e | pl.col(c).str.contains(_FOOTER_CELL) for e, c in zip(empty, tail.columns, strict=True)
    ]
    marks = tail.select(
        footer=pl.all_horizontal(labelled) & ~pl.all_horizontal(empty),
        blank=pl.all_horizontal(empty),
    ).with_columns(blank=pl.col("blank") | body["_blank"].slice(start))
    footer, blank = marks["footer"].to_list(), marks["blank"].to_list()
    at: list[int] = []
    for k in reversed(range(len(footer))):  # from the sheet's last row up
        if not (footer[k] or blank[k]):
            break
        if footer[k]:
            at.append(start + k)
    return at


def _header_depth(scan: SheetScan | None, header_row: int, below: pl.DataFrame) -> int:
    """How many rows under the header row (Excel row `header_row`) are the header's own: a
    template's header cells merged down over the row(s) below (A1:A2, B1:B2 …), rows
    which hold nothing else (`below`: the sheet's rows from the one under the header). 0
    when no merge of the header row reaches down, or a row it reaches holds a value: that
    row is data, its merged cells flagged as any others."""
    if scan is None:
        return 0
    reach = max((r2 for r1, _, r2, _ in scan.merges if r1 <= header_row < r2), default=0)
    depth = min(reach - header_row, below.height) if reach else 0
    if depth <= 0 or not below.width:
        return 0
    blank = below.head(depth).select(
        pl.all_horizontal(
            pl.col(c).is_null() | ~pl.col(c).cast(pl.String).str.contains(r"\S")
            for c in below.columns
        )
    )
    return depth if blank.to_series().all() else 0


def read_sheet(path: Path, spec: DomainSpec) -> SheetData:
    book = open_workbook(path)
    try:
        return _read(book, spec)
    finally:
        book.archive.close()


def _read(book: Workbook, spec: DomainSpec) -> SheetData:
    path = book.path
    sheet = select_sheet(book, spec.sheet)
    where = f"{path}: sheet {sheet.name!r}"
    whole, absolute, errors, scan = _load_and_scan(book, sheet, where)
    # (a second pass over the sheet, only where formulas are or may be)
    if (
        book.recalculates
        and sheet.part is not None
        and (scan is None or scan.formulas is not False)
    ):
        scan = scan or SheetScan()
        try:
            scan.stale_formulas = formula_cells(book.archive, sheet.part)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
            raise InputError(f"{where}: unreadable ({_short(error)})") from None
    if whole.height == 0:
        raise InputError(f"{where} is empty")
    if book.formats and sheet.part is not None and not (scan and scan.formats_shown):
        whole = _as_formatted(book, sheet.part, whole, absolute, where)
    letters = [column_letter(a) for a in absolute]
    header_index, mapping, found = _find_header(
        whole.head(HEADER_SEARCH_ROWS).rows(), spec, where, letters
    )
    _check_unit(whole.head(header_index + 1).rows(), spec, where, set(mapping))
    positions = sorted(mapping)
    names = [mapping[p].name for p in positions]
    # a tall header: its cells merged down over rows that hold nothing else belong to it
    tall = _header_depth(scan, header_index + 1, whole.slice(header_index + 1, HEADER_SEARCH_ROWS))
    first_data_row = header_index + 2 + tall  # Excel row number of the row below the header
    rest = whole.slice(header_index + 1 + tall)
    body = rest.select(pl.col(whole.columns[p]).alias(mapping[p].name) for p in positions)

    read = {p: mapping[p].name for p in positions}
    issues, literals = _issues(body.height, first_data_row, read, absolute, scan, errors)
    if literals:
        body = body.with_columns(
            body[name].scatter(index, pl.Series(text, dtype=pl.String))
            for name, (index, text) in literals.items()
        )
    body = body.with_row_index(ROW, offset=first_data_row).with_columns(pl.col(ROW).cast(pl.Int64))
    if issues:
        body = body.with_columns(issues.values())
    flagged = [s.name for s in issues.values()]
    nul_free = bool(scan and scan.nul_free) and not any(
        "\x00" in t for _, texts in literals.values() for t in texts
    )
    # a totals row reads in the sheet's order, the columns the spec does not read included;
    # only those holding something below the header (a stray cell far right of the table
    # makes the used range thousands of columns wide: those cannot make a row a totals row)
    unread = {
        f"{_UNREAD}{p}": rest[column]
        for p, column in enumerate(whole.columns)
        if p not in mapping and rest[column].null_count() < rest.height
    }
    order = [
        mapping[p].name if p in mapping else f"{_UNREAD}{p}"
        for p in range(whole.width)
        if p in mapping or f"{_UNREAD}{p}" in unread
    ]

    def marks_of(body: pl.DataFrame, nul_free: bool) -> pl.DataFrame:
        marked = body.hstack([s.alias(n) for n, s in unread.items()]) if unread else body
        return _row_marks(marked, names, flagged, nul_free=nul_free, sheet_order=order)

    marks = marks_of(body, nul_free)
    if marks["_nul"].any():
        # NUL cannot go into Postgres text and means nothing to the operator
        body = body.with_columns(pl.col(n).str.replace_all("\x00", "", literal=True) for n in names)
        marks = marks_of(body, True)  # (none left)
    body = body.with_columns(marks["_blank"], marks["_totals"])
    skipped_blank = int(body["_blank"].sum())
    skipped_totals = int(body["_totals"].sum())
    skipped_footer = 0
    totals = None
    if skipped_totals:
        kept = body.filter(pl.col("_totals")).drop("_blank", "_totals")
        # built again from its values: a filtered text column is views into the sheet's
        # buffers, which it would keep alive (hundreds of MB) after the rows are cleansed
        totals = pl.DataFrame(kept.rows(), schema=kept.schema, orient="row")
        footer = _footer_rows(body, [body[n] for n in names] + list(unread.values()))
        skipped_footer = len(footer)
        if footer:  # skipped as blank rows are (counted apart)
            body = body.with_columns(body["_blank"].scatter(footer, True))
    if skipped_blank or skipped_totals:
        body = body.filter(~pl.col("_blank") & ~pl.col("_totals"))
    frame = body.drop("_blank", "_totals")  # (no filter when nothing is skipped: no copy)
    if frame.height == 0:
        # a template or a cut-off copy: loading it would silently empty the month
        counts = [f"{skipped_blank} blank", f"{skipped_totals} totals"]
        counts += [f"{skipped_footer} footer"] if skipped_footer else []
        skipped = f"; {', '.join(counts[:-1])} and {counts[-1]} rows skipped"
        top = header_index + 1
        rows = f"rows {top}–{top + tall}" if tall else f"row {top}"  # (a tall header's rows)
        raise InputError(
            f"{where}: no data rows below the header ({rows})"
            + (skipped if skipped_blank or skipped_totals else "")
        )
    missing_optional = [
        c.name for c in spec.source_columns if c.optional_header and c.name not in found
    ]
    cell_issues = sum(int(frame[s.name].is_not_null().sum()) for s in issues.values())
    return SheetData(
        file=path,
        sheet=sheet.name,
        header_row=header_index + 1,
        frame=frame,
        columns=found,
        missing_optional=missing_optional,
        rows_read=frame.height,
        skipped_blank=skipped_blank,
        skipped_totals=skipped_totals,
        skipped_footer=skipped_footer,
        hidden=sheet.state != "visible",
        cell_issues=cell_issues,
        totals=totals,
    )
