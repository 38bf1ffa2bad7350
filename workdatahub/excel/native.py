"""A large sheet read without calamine's cell-by-cell model: the XML is cut into cells by a
compiled scanner (numba) and the text columns are assembled straight into Arrow buffers.

calamine turns every cell into a Rust value and fastexcel turns it back into text: ~0.85 µs
a cell here, ten of the ~17 seconds a 500,000-row month took. Most cells of an operator's
workbook are one of two shapes, and both carry their text already:

- `<c r="B7" t="s"><v>12</v></c>`: entry 12 of the shared strings;
- `<c r="N7"><v>418769.33</v></c>`: a number, written in plain decimals.

The scanner (`_cells`) reads those two shapes itself, on all cores at once (it releases
the GIL): 0.55 s on two cores for the 376 MB of a 500,000-row sheet, where one fastexcel
call takes ~10 s. Everything else is left to fastexcel, on a small workbook of the
package's own parts (its styles, its shared strings) holding one cell of each kind that
needs it (`_oracle_sheet`, `_ask_fastexcel`): the text of every shared string entry; each
cell style a number uses, to learn whether calamine shows it as a date; and every other
cell — dates, booleans, errors, formula strings, inline strings, numbers in exponent form
— once per distinct XML. So what fastexcel decides about those cells (a date's text, an
error's detail) is decided by fastexcel itself.

One difference is deliberate: a number written in plain decimals keeps the digits the
workbook holds (`233923503.2924`, `0.0000000000000039984`), where fastexcel prints a double
to nine decimals (`233923503.292400002`, `0`); a number in exponent form is spelled out in
plain decimals (`1.5E-05` -> `0.000015`). Cleansing parses both to the same value (money has
four decimals, rates six); tests/test_reader_native.py compares the two readers cell by cell
with fastexcel's rounding applied to these digits.

Anything the scanner does not expect (rows or cells without `r=`, a namespace prefix, other
elements between the rows, a cell error calamine cannot read) gives up and the caller reads
the sheet with fastexcel, which also reports any real error in one line.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np
import polars as pl
import pyarrow as pa

if TYPE_CHECKING:
    from workdatahub.excel.reader import Parsed, SheetPart, Workbook

# what a scanned cell holds, and what its a/b entries mean (b: a length in bytes)
EMPTY = 0  # nothing (a formula without a value is flagged by the reader's scan)
STRING = 1  # a: entry of the string table (shared strings first, then resolved cells)
PLAIN = 2  # a number in plain decimals; a, b: its start and length in the XML
NUMBER = 3  # a number in another spelling (exponent, sign, leading dot); a, b: as PLAIN
OTHER = 4  # anything else; a, b: the whole `<c>…</c>` element
_LT, _GT, _SLASH, _QUOTE, _EQUALS, _SPACE = 60, 62, 47, 34, 61, 32


@numba.njit(nogil=True, cache=True)
def _is_space(byte: int) -> bool:
    return byte == 32 or byte == 10 or byte == 13 or byte == 9


@numba.njit(nogil=True, cache=True)
def _plain_number(buf, start, stop):
    """-?digits(.digits)? : a number as Excel writes it when no exponent is needed."""
    i = start
    if i < stop and buf[i] == 45:
        i += 1
    digits = 0
    while i < stop and 48 <= buf[i] <= 57:
        i += 1
        digits += 1
    if digits == 0:
        return False
    if i == stop:
        return True
    if buf[i] != 46:
        return False
    i += 1
    fraction = 0
    while i < stop and 48 <= buf[i] <= 57:
        i += 1
        fraction += 1
    return fraction > 0 and i == stop


@numba.njit(nogil=True, cache=True)
def _cells(buf, start, stop, rows, cols, kinds, a, b, styles):
    """Scan buf[start:stop], a run of whole `<row>` elements, into the cell arrays (one entry
    per cell holding something). Returns (cells, status); status 0 is success, anything else
    is the position the scanner did not understand, plus one."""
    n = 0
    i = start
    while i < stop:
        byte = buf[i]
        if byte != _LT:
            if _is_space(byte):
                i += 1
                continue
            return n, i + 1
        second = buf[i + 1]
        if second == 114 and buf[i + 2] == 111 and buf[i + 3] == 119:  # <row
            j = i + 4
            while j < stop and buf[j] != _GT:
                j += 1
            i = j + 1
            continue
        if second == _SLASH and buf[i + 2] == 114 and buf[i + 3] == 111:  # </row>
            i += 6
            continue
        if second != 99 or not (buf[i + 2] == _SPACE or buf[i + 2] == _GT):  # <c
            return n, i + 1
        # attributes, name="value"
        j = i + 2
        col = 0
        row = 0
        shared = False
        number = True
        style = 0
        while True:
            while j < stop and _is_space(buf[j]):
                j += 1
            if j >= stop:
                return n, i + 1
            if buf[j] == _GT or buf[j] == _SLASH:
                break
            name = j
            while j < stop and buf[j] != _EQUALS and buf[j] != _GT and not _is_space(buf[j]):
                j += 1
            if j + 1 >= stop or buf[j] != _EQUALS or buf[j + 1] != _QUOTE:
                return n, i + 1
            value = j + 2
            end = value
            while end < stop and buf[end] != _QUOTE:
                end += 1
            if end >= stop:
                return n, i + 1
            if j - name == 1 and buf[name] == 114:  # r
                k = value
                while k < end and 65 <= buf[k] <= 90:
                    col = col * 26 + (buf[k] - 64)
                    k += 1
                while k < end and 48 <= buf[k] <= 57 and row < 100_000_000:
                    row = row * 10 + (buf[k] - 48)
                    k += 1
                if k != end or col == 0 or col > 16384 or row == 0:
                    return n, i + 1
            elif j - name == 1 and buf[name] == 116:  # t
                shared = end - value == 1 and buf[value] == 115
                number = end - value == 1 and buf[value] == 110
            elif j - name == 1 and buf[name] == 115:  # s
                for k in range(value, end):
                    if not 48 <= buf[k] <= 57 or style > 6_553:
                        return n, i + 1
                    style = style * 10 + (buf[k] - 48)
                if style > 65_535:  # Excel allows 64,000 cell formats
                    return n, i + 1
            j = end + 1
        if col == 0:
            return n, i + 1  # calamine would place it after the previous cell
        if buf[j] == _SLASH:  # <c …/>: nothing in it
            i = j + 2
            continue
        p = j + 1
        if buf[p] == _LT and buf[p + 1] == 102:  # <f…> the formula: its value follows
            while p < stop and buf[p] != _GT:
                p += 1
            if buf[p - 1] != _SLASH:
                while p + 2 < stop and not (
                    buf[p] == _LT and buf[p + 1] == _SLASH and buf[p + 2] == 102
                ):
                    p += 1
                while p < stop and buf[p] != _GT:
                    p += 1
            p += 1
        rows[n] = row
        cols[n] = col
        styles[n] = style
        a[n] = i
        if buf[p] == _LT and buf[p + 1] == 118 and buf[p + 2] == _GT:  # <v>…</v></c>
            first = p + 3
            last = first
            while last < stop and buf[last] != _LT:
                last += 1
            if (
                last + 7 < stop and buf[last + 1] == _SLASH and buf[last + 2] == 118
                and buf[last + 3] == _GT and buf[last + 4] == _LT and buf[last + 5] == _SLASH
                and buf[last + 6] == 99 and buf[last + 7] == _GT
            ):  # fmt: skip
                kinds[n] = OTHER
                b[n] = last + 8 - i
                if shared:
                    index = 0
                    for k in range(first, last):
                        if not 48 <= buf[k] <= 57 or index > 100_000_000:
                            index = -1
                            break
                        index = index * 10 + (buf[k] - 48)
                    if index >= 0 and last > first:
                        kinds[n] = STRING
                        a[n] = index
                elif number:
                    kinds[n] = PLAIN if _plain_number(buf, first, last) else NUMBER
                    a[n] = first
                    b[n] = last - first
                n += 1
                i = last + 8
                continue
        close = p
        while close + 3 < stop and not (
            buf[close] == _LT and buf[close + 1] == _SLASH and buf[close + 2] == 99
            and buf[close + 3] == _GT
        ):  # fmt: skip
            close += 1
        if close + 3 >= stop:
            return n, i + 1
        # nothing after the formula (the reader's scan flags it), `<c></c>`, or another shape
        kinds[n] = EMPTY if p >= close else OTHER
        b[n] = close + 4 - i
        n += 1
        i = close + 4
    return n, 0


@numba.njit(nogil=True, cache=True)
def _owners(spans, rows, cols, kinds, height, first_col, width):
    """The cell at each (row - 1, column) of the frame, -1 where none is; of two cells at
    one place the later wins."""
    owner = np.full((height, width), -1, np.int64)
    for span in range(spans.shape[0]):
        for n in range(spans[span, 0], spans[span, 0] + spans[span, 1]):
            if kinds[n] != EMPTY:
                owner[rows[n] - 1, cols[n] - first_col] = n
    return owner


@numba.njit(nogil=True, cache=True)
def _assemble(owner, first, last, kinds, a, b, buf, strings, starts, ends):
    """Frame columns first…last - 1 as Arrow large-string buffers, read in row order (the
    XML's order: memory front to back): per column its offsets (`offsets[j]`, from 0) and
    validity (`valid[j]`), their bytes in `data`, column j's from `bases[j]`. A string
    table entry with start -1 is null."""
    height = owner.shape[0]
    width = last - first
    offsets = np.zeros((width, height + 1), np.int64)
    valid = np.zeros((width, height), np.bool_)
    totals = np.zeros(width, np.int64)
    for r in range(height):
        for j in range(width):
            n = owner[r, first + j]
            if n >= 0:
                if kinds[n] == PLAIN:
                    totals[j] += b[n]
                    valid[j, r] = True
                elif starts[a[n]] >= 0:
                    totals[j] += ends[a[n]] - starts[a[n]]
                    valid[j, r] = True
            offsets[j, r + 1] = totals[j]
    bases = np.zeros(width + 1, np.int64)
    for j in range(width):
        bases[j + 1] = bases[j] + totals[j]
    data = np.empty(bases[width], np.uint8)
    for r in range(height):
        for j in range(width):
            if valid[j, r]:
                n = owner[r, first + j]
                at = bases[j] + offsets[j, r]
                if kinds[n] == PLAIN:
                    for k in range(a[n], a[n] + b[n]):
                        data[at] = buf[k]
                        at += 1
                else:
                    for k in range(starts[a[n]], ends[a[n]]):
                        data[at] = strings[k]
                        at += 1
    return offsets, valid, data, bases


# ---------------------------------------------------------------------------- in Python

_R_ATTRIBUTE = re.compile(rb'\sr="[A-Z]{1,3}[0-9]{1,8}"')
_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheetData>'
)
_PROBE = "1.5"  # a number shown as itself unless its style makes it a date, time or duration
_ROW_TAG = b"<row "
_MIN_CELL_BYTES = 15  # `<c r="A1"></c>`: the shortest element the scanner keeps
_GROUP = 3  # columns assembled by one call


class _Cells:
    """The scanner's output: one set of arrays, each run of rows scanned into a region of
    its own (`spans`: start and count of each region); cells outside the regions are marked
    EMPTY, so whole-array masks see only what was scanned."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        capacities = [(y - x) // _MIN_CELL_BYTES + 16 for x, y in ranges]
        capacity = sum(capacities)
        self.ranges = ranges
        self.starts = np.cumsum([0, *capacities[:-1]]).tolist()
        self.rows = np.empty(capacity, np.int32)
        self.cols = np.empty(capacity, np.int16)
        self.kinds = np.full(capacity, EMPTY, np.int8)
        self.a = np.empty(capacity, np.int64)
        self.b = np.empty(capacity, np.uint32)
        self.styles = np.empty(capacity, np.uint16)
        self.spans = np.zeros((len(ranges), 2), np.int64)

    def scan(self, buf: np.ndarray, part: int) -> bool:
        at = self.starts[part]
        x, y = self.ranges[part]
        count, status = _cells(
            buf, x, y, self.rows[at:], self.cols[at:], self.kinds[at:], self.a[at:],
            self.b[at:], self.styles[at:],
        )  # fmt: skip
        self.spans[part] = (at, count)
        return status == 0


def _ranges(xml: bytes, start: int, stop: int, pieces: int) -> list[tuple[int, int]]:
    """buf[start:stop] cut into about equal runs of whole rows."""
    bounds = [start]
    for k in range(1, pieces):
        cut = xml.find(_ROW_TAG, max(start + (stop - start) * k // pieces, bounds[-1] + 1), stop)
        if cut < 0:
            break
        bounds.append(cut)
    bounds.append(stop)
    return [(x, y) for x, y in itertools.pairwise(bounds) if y > x]


def _oracle_sheet(shared: int, styles: list[int], others: list[bytes]) -> bytes:
    """Column A: shared string entry k - 1 at row k; B: a probe number in each style; C: the
    other cells, each at a row of its own."""
    parts = [_HEAD]
    for k in range(1, max(shared, len(styles), len(others)) + 1):
        cells = []
        if k <= shared:
            cells.append(b'<c r="A%d" t="s"><v>%d</v></c>' % (k, k - 1))
        if k <= len(styles):
            cells.append(b'<c r="B%d" s="%d"><v>%s</v></c>' % (k, styles[k - 1], _PROBE.encode()))
        if k <= len(others):  # the cells are kept without their `r=`: place them in C
            cells.append(b'<c r="C%d"%s' % (k, others[k - 1][2:]))
        parts.append(b'<row r="%d">%s</row>' % (k, b"".join(cells)))
    parts.append(b"</sheetData></worksheet>")
    return b"".join(parts)


def _ask_fastexcel(
    sheet: SheetPart, others: list[tuple[str, bytes]], body: bytes, folder: str, height: int
) -> tuple[list[list[str | None]], dict[tuple[int, int], str]]:
    """Columns A, B, C (`height` rows) of a workbook made of the package's other parts and
    `body` as the sheet, as fastexcel reads them; and the problems it reports, by (row
    index, column A=0)."""
    import fastexcel

    from workdatahub.excel.reader import _parse

    path = Path(folder, "cells.xlsx")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, part in others:
            archive.writestr(name, part)
        assert sheet.part is not None
        archive.writestr(sheet.part, body)
    frame, absolute, problems = _parse(fastexcel.read_excel(str(path)), sheet.name)
    columns: list[list[str | None]] = [[None] * height for _ in range(3)]
    for name, index in zip(frame.columns, absolute, strict=True):
        if index < 3:
            columns[index][: frame.height] = frame[name].to_list()[:height]
    details = {(p.position[0], absolute[p.position[1]]): p.detail for p in problems}
    return columns, details


def _shared_strings(others: list[tuple[str, bytes]]) -> int:
    """How many entries the shared strings table holds (`<si>` elements)."""
    tables = [body for name, body in others if name.lower().endswith("sharedstrings.xml")]
    if len(tables) != 1:
        return 0
    return sum(tables[0].count(tag) for tag in (b"<si>", b"<si ", b"<si/>"))


def _without_place(element: bytes) -> bytes:
    return _R_ATTRIBUTE.sub(b"", element, count=1)


class _Strings:
    """The string table: the shared strings (entry k = shared string k), then one entry per
    distinct other cell, as text or None (null)."""

    def __init__(self, shared: list[str | None]) -> None:
        self.texts = list(shared)
        self.entries: dict[bytes, int] = {}

    def add(self, key: bytes, text: str | None) -> int:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = len(self.texts)
            self.texts.append(text)
        return entry

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoded = [t.encode() if t is not None else b"" for t in self.texts]
        ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        starts = np.concatenate(([0], ends[:-1])).astype(np.int64)
        starts[np.fromiter((t is None for t in self.texts), np.bool_, len(self.texts))] = -1
        return np.frombuffer(b"".join(encoded), np.uint8), starts, ends


def read_xml(book: Workbook, sheet: SheetPart, source: list[bytes], workers: int) -> Parsed | None:
    """The sheet whose XML is taken out of `source` (so that it is freed as soon as it is no
    longer needed: 376 MB at 500,000 rows), as `reader._parse` would give it (see the
    module's docstring for the one deliberate difference); None when the scanner gives up."""
    from workdatahub.excel.reader import CellProblem

    xml = source.pop()
    built = _build(book, sheet, xml, max(workers, 1))
    del xml  # the XML and the cells are gone before polars copies the columns
    if built is None:
        return None
    groups, height, first_col, problems = built
    arrays = [
        pa.LargeStringArray.from_buffers(
            height,
            pa.py_buffer(offsets[j]),
            pa.py_buffer(text[bases[j] : bases[j + 1]]),
            pa.py_buffer(np.packbits(valid[j], bitorder="little")),
        )
        for offsets, valid, text, bases in groups
        for j in range(len(offsets))
    ]
    del groups
    absolute = list(range(first_col - 1, first_col - 1 + len(arrays)))
    names = [f"c{c}" for c in absolute]
    # the whole table at once: polars converts its columns on all cores
    frame = pl.from_arrow(pa.Table.from_arrays(arrays, names=names), rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    found = [
        CellProblem((row - 1, col - first_col), detail) for (row, col), detail in problems.items()
    ]
    return frame, absolute, found


_Built = tuple[list[tuple[np.ndarray, ...]], int, int, dict[tuple[int, int], str]]


def _build(book: Workbook, sheet: SheetPart, xml: bytes, workers: int) -> _Built | None:
    """Scan the cells, have fastexcel read those the scanner leaves, and assemble the
    columns' Arrow buffers, a few columns at a time: the buffers per group of columns, in
    column order, the frame's height, its first column (1 = A) and the cells' problems. A
    used range beyond MAX_CELLS is the reader's one-line error, before any grid is made."""
    from workdatahub.excel.reader import MAX_CELLS, _other_parts, _too_large

    opened = xml.find(b"<sheetData>")
    stop = xml.rfind(b"</sheetData>")
    if opened < 0 or stop < opened:
        return None
    buf = np.frombuffer(xml, np.uint8)
    cells = _Cells(_ranges(xml, opened + len(b"<sheetData>"), stop, workers))
    with ThreadPoolExecutor(workers) as pool:
        if not all(pool.map(lambda part: cells.scan(buf, part), range(len(cells.ranges)))):
            return None
    rows, cols, kinds, a, b, styles = (
        cells.rows, cells.cols, cells.kinds, cells.a, cells.b, cells.styles
    )  # fmt: skip

    def value(n: int) -> bytes:
        return xml[a[n] : a[n] + b[n]]

    def number_element(n: int) -> bytes:
        return b'<c s="%d"><v>%s</v></c>' % (styles[n], value(n))

    is_string = kinds == STRING
    shared = int(a[is_string].max()) + 1 if is_string.any() else 0
    others = _other_parts(book, sheet)  # read once: both questions to fastexcel use them
    if shared > _shared_strings(others):
        return None  # an entry the table does not have: fastexcel says what that means
    numbers = (kinds == PLAIN) | (kinds == NUMBER)
    used_styles = np.unique(styles[numbers]).tolist()
    other = np.flatnonzero(kinds == OTHER)
    other_keys = [_without_place(value(int(n))) for n in other]
    distinct = list(dict.fromkeys(other_keys))
    problems: dict[tuple[int, int], str] = {}  # (row, column) in Excel -> fastexcel's detail
    erring: list[int] = []  # the cells behind `problems`
    try:
        folder = tempfile.TemporaryDirectory(prefix="wdh-read-", ignore_cleanup_errors=True)
    except OSError:
        return None
    with folder:
        (texts, shown, answers), details = _ask_fastexcel(
            sheet,
            others,
            _oracle_sheet(shared, used_styles, distinct),
            folder.name,
            max(shared, len(used_styles), len(distinct)),
        )
        strings = _Strings(texts[:shared])
        index = {key: strings.add(key, answers[k]) for k, key in enumerate(distinct)}
        failed = {distinct[row]: detail for (row, column), detail in details.items() if column == 2}
        for n, key in zip(other.tolist(), other_keys, strict=True):
            kinds[n], a[n] = STRING, index[key]
            if key in failed:
                problems[(int(rows[n]), int(cols[n]))] = failed[key]
                erring.append(n)
        dates = [style for style, text in zip(used_styles, shown, strict=False) if text != _PROBE]
        is_date_style = np.zeros(1 << 16, np.bool_)  # styles are uint16
        is_date_style[dates] = True
        dated = is_date_style[styles]
        later: dict[bytes, list[int]] = {}  # numbers only fastexcel can show
        for n in np.flatnonzero((kinds == NUMBER) & ~dated).tolist():
            key = b"=" + value(n)  # each distinct spelling is spelled out once
            entry = strings.entries.get(key)
            if entry is None:
                text = _plain_text(key[1:])
                if text is None:
                    later.setdefault(number_element(n), []).append(n)
                    continue
                entry = strings.add(key, text)
            kinds[n], a[n] = STRING, entry
        for n in np.flatnonzero(numbers & dated).tolist():
            later.setdefault(number_element(n), []).append(n)
        if later:
            keys = list(later)
            (_, _, answers), details = _ask_fastexcel(
                sheet, others, _oracle_sheet(0, [], keys), folder.name, len(keys)
            )
            for k, key in enumerate(keys):
                entry = strings.add(key, answers[k])
                for n in later[key]:
                    kinds[n], a[n] = STRING, entry
                    if (k, 2) in details:
                        problems[(int(rows[n]), int(cols[n]))] = details[(k, 2)]
                        erring.append(n)
    data, starts, ends = strings.arrays()
    is_string = kinds == STRING
    present = kinds == PLAIN
    present[is_string] = starts[a[is_string]] >= 0
    present[erring] = True  # an error cell is null, but it is there (as fastexcel sees it)
    if not present.any():
        return None
    kinds[~present] = EMPTY
    height = int(rows[present].max())
    first_col, last_col = int(cols[present].min()), int(cols[present].max())
    width = last_col - first_col + 1
    if height * width > MAX_CELLS:  # a sheet that declared a smaller extent than it uses
        raise _too_large(f"{book.path}: sheet {sheet.name!r}", height, last_col)
    owner = _owners(cells.spans, rows, cols, kinds, height, first_col, width)
    groups = [(j, min(j + _GROUP, width)) for j in range(0, width, _GROUP)]

    def assemble(group: tuple[int, int]) -> tuple[np.ndarray, ...]:
        return _assemble(owner, *group, kinds, a, b, buf, data, starts, ends)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(assemble, groups)), height, first_col, problems


def warm_up() -> None:
    """Load the compiled scanner (numba reads it from its cache, ~1 s on first use in a
    process), so that it happens while the caller inflates the sheet."""
    xml = b'<sheetData><row r="1"><c r="A1"><v>1</v></c></row></sheetData>'
    cells = _Cells([(11, len(xml) - 12)])
    buf = np.frombuffer(xml, np.uint8)
    cells.scan(buf, 0)
    strings, starts, ends = _Strings(["x"]).arrays()
    owner = _owners(cells.spans, cells.rows, cells.cols, cells.kinds, 1, 1, 1)
    _assemble(owner, 0, 1, cells.kinds, cells.a, cells.b, buf, strings, starts, ends)


def _plain_text(raw: bytes) -> str | None:
    """A number spelled otherwise (exponent, sign, leading dot or zeros) in plain decimals,
    the digits as written: `1.5E-05` -> `0.000015`; None when it is no number."""
    try:
        number = Decimal(raw.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        return None
    if not number.is_finite():
        return None
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
