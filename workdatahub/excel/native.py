"""A sheet read without calamine's cell-by-cell model: the XML is cut into cells by a compiled
scanner (scanner.c) and the text columns are assembled straight into Arrow buffers.

calamine turns every cell into a Rust value and fastexcel turns it back into text: ~0.85 µs
a cell here, ten of the ~17 seconds a 500,000-row month took. Most cells of an operator's
workbook are one of two shapes, and both carry their text already:

- `<c r="B7" t="s"><v>12</v></c>`: entry 12 of the shared strings;
- `<c r="N7"><v>418769.33</v></c>`: a number, written in plain decimals.

The scanner (`_cells`) reads those two shapes itself, on all cores at once (ctypes releases
the GIL): ~0.4 s on two cores for the 376 MB of a 500,000-row sheet, where one fastexcel
call takes ~10 s. Everything else is left to fastexcel, on a small workbook of the
package's own parts (its styles, its shared strings) holding one cell of each kind that
needs it (`_oracle_sheet`, `_ask_fastexcel`): the text of every shared string entry; each
cell style a number uses, to learn whether calamine shows it as a date; and every other
cell — dates, booleans, errors, formula strings, inline strings, numbers in exponent form
— once per distinct XML. So what fastexcel decides about those cells (a date's text, an
error's detail) is decided by fastexcel itself. An inline string of the plain shape
(`<c r="B7" t="inlineStr"><is><t>text</t></is></c>`, as some exports write every text
cell) is cut out by the scanner as its `<t>` and text, still escaped (INLINE), and grouped
by those and its style, so fastexcel reads each distinct one once without the cells being
taken apart in Python.

One difference is deliberate: a number written in plain decimals keeps the digits the
workbook holds (`233923503.2924`, `0.0000000000000039984`), where fastexcel prints a double
to nine decimals (`233923503.292400002`, `0`); a number in exponent form, or with zeros
Excel would not write (`202411.0`, `1.50`, `007`), is spelled out in plain decimals without
them (`1.5E-05` -> `0.000015`, `202411.0` -> `202411`), as Excel shows it; and a number
with decimals (or an exponent) of more than 15 significant digits, a double written in full,
is shown to 15, rounded half away from zero, as Excel shows it and as its ROUND sees it
(`2.0000499999999999`, the 17 digits Excel writes for a typed 2.00005, -> `2.00005`; the
computed `393.77004999999997` -> `393.77005`: as written they would round to money 2.0000
and 393.7700, not 2.0001 and 393.7701). The scanner does that as it assembles the column
(LONG), in C. Cleansing parses both readers' text to the same value (money has four
decimals, rates six: fastexcel's nine decimals round such a number the same way);
tests/test_reader_native.py compares the two readers cell by cell with fastexcel's rounding
applied to these digits.

Anything the scanner does not expect (rows or cells without `r=`, a namespace prefix, other
elements between the rows, a cell error calamine cannot read) gives up and the caller reads
the sheet with fastexcel, which also reports any real error in one line.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from workdatahub.logs import get_logger

if TYPE_CHECKING:
    from workdatahub.excel.reader import Parsed, SheetPart, Workbook, _Scanner

# what a scanned cell holds, and what its a/b entries mean (b: a length in bytes)
EMPTY = 0  # nothing (a formula without a value is flagged by the reader's scan)
STRING = 1  # a: entry of the string table (shared strings first, then resolved cells)
PLAIN = 2  # a number in plain decimals; a, b: its start and length in the XML
NUMBER = 3  # a number in another spelling (exponent, sign, spare zeros); a, b: as PLAIN
OTHER = 4  # anything else; a, b: the whole `<c>…</c>` element
ERROR = 5  # a cell fastexcel reports a problem for and reads as null: there, but null
INLINE = 6  # an inline string of the plain shape; a, b: its `<t…>text` (still escaped)
LONG = 7  # a PLAIN number of more than 15 significant digits: assembled as Excel shows it


# ------------------------------------------------------------------- the compiled scanner
# The hot loops are C (scanner.c beside this module), compiled once per machine with the
# system's compiler into a cache and called through ctypes, which releases the GIL. That
# replaced numba, whose start-up cost ~2.2 s of CPU in every process (importing it, ~1.1 s,
# then loading its cached code, ~1.05 s): the scan now pays for every sheet.

_SOURCE = Path(__file__).with_name("scanner.c")
_FLAGS = ("-O3", "-shared", "-fPIC")
_P = ctypes.c_void_p
_I = ctypes.c_int64


def _cache_folders() -> list[Path]:
    """Where the compiled scanner is kept: beside the module, as Python keeps its bytecode;
    else the user's cache folder (never a shared temporary folder: a library planted there
    would be loaded)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [_SOURCE.parent / "__pycache__", Path(cache_home) / "workdatahub"]


def _compile(target: Path) -> str | None:
    """Compile the scanner into `target`; None when done, else why not (one line)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "no C compiler found (set CC)"
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        done = subprocess.run(
            [*shlex.split(compiler), *_FLAGS, "-o", str(partial), str(_SOURCE)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no message"])[0]
            return f"{compiler} failed on {_SOURCE.name}: {said}"
        partial.chmod(0o755)  # whatever the umask: no one else writes code this loads
        os.replace(partial, target)  # whole or not at all, for processes compiling at once
        return None
    except (OSError, subprocess.SubprocessError) as error:
        return f"{compiler} could not run: {error}"
    finally:
        partial.unlink(missing_ok=True)


def _untrusted(path: Path, tighten: bool = False) -> str | None:
    """Why the library file or folder `path` must not be loaded from: a link, someone
    else's (other than root's), or writable by others, who could have put their own code
    there under the name this one looks for; None when it is safe. `tighten` (a folder):
    this user's own folder that others may write (umask 002, as Debian gives each user a
    group of their own) is first made this user's alone; a file found in it that is not
    this user's is refused all the same."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return f"{path} is a link"
        if st.st_uid not in (os.getuid(), 0):
            return f"{path} belongs to another user"
        if tighten and st.st_mode & 0o022 and st.st_uid == os.getuid():
            path.chmod(stat.S_IMODE(st.st_mode) & ~0o022)
            st = path.lstat()
    except OSError as error:
        return f"{path}: {error.strerror}"
    if st.st_mode & 0o022:
        return f"{path} is writable by others"
    return None


def _writable_by_others(path: Path) -> bool:
    """This user's file that others may have written: compiled again rather than loaded."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o022)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled scanner (and the loader's COPY row join), compiled on first use (~0.3 s,
    once per machine and version of scanner.c); None without a working C compiler: sheets
    are then read with fastexcel (from 16 MB in parallel pieces) and COPY rows joined with
    pyarrow, slower but the same cells and bytes."""
    key = hashlib.sha256(
        b"\0".join([_SOURCE.read_bytes(), " ".join(_FLAGS).encode(),
                    platform.machine().encode(), sys.platform.encode()])
    ).hexdigest()[:16]  # fmt: skip
    reason = "no folder to keep it in"
    for folder in _cache_folders():
        target = folder / f"wdh_scanner-{key}.so"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            untrusted = _untrusted(folder, tighten=True)
            if untrusted is None and _writable_by_others(target):
                target.unlink()  # (its code may not be what was compiled)
            if untrusted is None and not target.exists():
                failed = _compile(target)
                if failed is not None:
                    reason = failed
                    continue
            untrusted = untrusted or _untrusted(target)
            if untrusted is not None:
                reason = f"not loaded: {untrusted}"
                continue
            lib = ctypes.CDLL(str(target))
        except OSError as error:
            reason = f"{target}: {error}"
            continue
        lib.wdh_cells.restype = _I
        lib.wdh_cells.argtypes = [_P, _I, _I, _P, _P, _P, _P, _P, _P, _P]
        lib.wdh_extent.restype = None
        lib.wdh_extent.argtypes = [_P, _I, _P, _P, _P, _P, _P, _P]
        lib.wdh_owners.restype = None
        lib.wdh_owners.argtypes = [_P, _I, _P, _P, _P, _I, _I, _P]
        lib.wdh_measure.restype = None
        lib.wdh_measure.argtypes = [_P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P]
        lib.wdh_fill.restype = None
        lib.wdh_fill.argtypes = [_P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P]
        lib.wdh_group.restype = _I
        lib.wdh_group.argtypes = [_P, _P, _P, _P, _P, _I, _P, _I, _P, _P]
        lib.wdh_copy_rows.restype = _I
        lib.wdh_copy_rows.argtypes = [_I, _I, _P, _P, _P, _P, _P, _P, _I]
        return lib
    get_logger().warning(
        "the sheet scanner is not available: sheets are read with fastexcel, slower",
        reason=reason,
    )
    return None


def _at(array: np.ndarray) -> int:
    assert array.flags.c_contiguous
    return int(array.ctypes.data)


def _cells(
    lib: ctypes.CDLL, buf: np.ndarray, start: int, stop: int, arrays: tuple[np.ndarray, ...]
) -> tuple[int, int, int, int]:
    """Scan buf[start:stop], a run of whole `<row>` elements, into the cell arrays (rows,
    cols, kinds, a, b, styles: one entry per cell holding something). Returns (cells, cells
    with a formula, the highest shared string entry used or -1, status); status 0 is
    success, anything else is the position the scanner did not understand, plus one."""
    out = np.zeros(3, np.int64)
    status = lib.wdh_cells(_at(buf), start, stop, *map(_at, arrays), _at(out))
    return int(out[0]), int(out[1]), int(out[2]), int(status)


def _extent(
    lib: ctypes.CDLL, spans: np.ndarray, cells: tuple[np.ndarray, ...], starts: np.ndarray
) -> tuple[int, int, int]:
    """Null string cells made EMPTY; the last row, first and last column of the others (0
    when none is left). cells: rows, cols, kinds, a."""
    out = np.zeros(3, np.int64)
    lib.wdh_extent(_at(spans), spans.shape[0], *map(_at, cells), _at(starts), _at(out))
    height, first_col, last_col = out.tolist()
    return height, first_col, last_col


def _owners(
    lib: ctypes.CDLL, spans: np.ndarray, cells: tuple[np.ndarray, ...], height: int,
    first_col: int, width: int,
) -> np.ndarray:  # fmt: skip
    """The cell at each (column, row - 1) of the frame, -1 where none is; of two cells at
    one place the later wins. cells: rows, cols, kinds."""
    owner = np.full((width, height), -1, np.int32)  # (see _MAX_CELL_NUMBER)
    lib.wdh_owners(_at(spans), spans.shape[0], *map(_at, cells), first_col, height, _at(owner))
    return owner


def _assemble(
    lib: ctypes.CDLL, owner: np.ndarray, first: int, last: int, cells: tuple[np.ndarray, ...],
    buf: np.ndarray, strings: np.ndarray, starts: np.ndarray, ends: np.ndarray,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Frame columns first…last - 1 as Arrow large-string buffers: per column its offsets
    (`offsets[j]`, from 0) and validity (`valid[j]`), their bytes in `data`, column j's
    from `bases[j]`. A string table entry with start -1 is null. cells: kinds, a, b."""
    height = owner.shape[1]
    width = last - first
    offsets = np.empty((width, height + 1), np.int64)
    valid = np.empty((width, height), np.bool_)
    head = (_at(owner), height, first, last, *map(_at, cells))
    lib.wdh_measure(*head, _at(starts), _at(ends), _at(offsets), _at(valid), _at(buf))
    bases = np.zeros(width + 1, np.int64)
    np.cumsum(offsets[:, height], out=bases[1:])
    data = np.empty(int(bases[width]), np.uint8)
    lib.wdh_fill(
        *head, _at(buf), _at(strings), _at(starts), _at(offsets), _at(valid), _at(bases),
        _at(data),
    )  # fmt: skip
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
_MAX_CELL_NUMBER = (1 << 31) - 1  # the frame's grid holds cell numbers as int32


class _Cells:
    """The scanner's output: one set of arrays, each run of rows scanned into a region of
    its own (`spans`: start and count of each region); cells outside the regions are marked
    EMPTY, so whole-array masks see only what was scanned."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        capacities = self.capacities(ranges)
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
        self.formulas = [0] * len(ranges)  # per run: cells holding a formula
        self.shared = [-1] * len(ranges)  # per run: the highest shared string entry used

    @staticmethod
    def capacities(ranges: list[tuple[int, int]]) -> list[int]:
        return [(y - x) // _MIN_CELL_BYTES + 16 for x, y in ranges]

    def scan(self, lib: ctypes.CDLL, buf: np.ndarray, part: int) -> bool:
        at = self.starts[part]
        x, y = self.ranges[part]
        arrays = (self.rows, self.cols, self.kinds, self.a, self.b, self.styles)
        count, self.formulas[part], self.shared[part], status = _cells(
            lib, buf, x, y, tuple(array[at:] for array in arrays)
        )
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


def _is_shared_strings(name: str) -> bool:
    return name.lower().endswith("sharedstrings.xml")


def _shared_strings(others: list[tuple[str, bytes]]) -> int:
    """How many entries the shared strings table holds (`<si>` elements)."""
    tables = [body for name, body in others if _is_shared_strings(name)]
    if len(tables) != 1:
        return 0
    return sum(tables[0].count(tag) for tag in (b"<si>", b"<si ", b"<si/>"))


_EMPTY_SST = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="0" '
    b'uniqueCount="0"/>'
)


def _without_shared_strings(others: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(name, _EMPTY_SST if _is_shared_strings(name) else body) for name, body in others]


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


def read_xml(
    book: Workbook,
    sheet: SheetPart,
    source: list[bytes],
    workers: int,
    scanner: _Scanner | None = None,
) -> Parsed | None:
    """The sheet whose XML is taken out of `source` (so that it is freed as soon as it is no
    longer needed: 376 MB at 500,000 rows), as `reader._parse` would give it (see the
    module's docstring for the one deliberate difference); None when the scanner gives up.
    `scanner`, if given, is fed the XML after the cell scan (`feed_sheet`: what the cells
    say about formulas spares it a pass) and told whether any cell text can hold a NUL."""
    from workdatahub.excel.reader import CellProblem

    xml = source.pop()
    built = _build(book, sheet, xml, max(workers, 1), scanner)
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


def _build(
    book: Workbook,
    sheet: SheetPart,
    xml: bytes,
    workers: int,
    scanner: _Scanner | None,
) -> _Built | None:
    """Scan the cells, have fastexcel read those the scanner leaves, and assemble the
    columns' Arrow buffers, a few columns at a time: the buffers per group of columns, in
    column order, the frame's height, its first column (1 = A) and the cells' problems. A
    used range beyond MAX_CELLS is the reader's one-line error, before any grid is made."""
    from workdatahub.excel.reader import MAX_CELLS, _too_large

    opened = xml.find(b"<sheetData>")
    stop = xml.rfind(b"</sheetData>")
    if opened < 0 or stop < opened:
        return None
    lib = library()
    if lib is None:
        return None
    ranges = _ranges(xml, opened + len(b"<sheetData>"), stop, workers)
    if sum(_Cells.capacities(ranges)) > _MAX_CELL_NUMBER:
        return None  # (a sheet's XML of ~30 GB)
    buf = np.frombuffer(xml, np.uint8)
    cells = _Cells(ranges)
    with ThreadPoolExecutor(workers) as pool:
        parts = range(len(cells.ranges))
        if not all(pool.map(cells.scan, itertools.repeat(lib), itertools.repeat(buf), parts)):
            return None
    if scanner is not None:
        scanner.scan.formulas = any(cells.formulas)
        scanner.feed_sheet(xml, scanner.scan.formulas)
    known = _values(book, sheet, lib, xml, buf, cells, scanner)
    if known is None:
        return None
    strings, problems = known
    height, first_col, last_col = _extent(
        lib, cells.spans, (cells.rows, cells.cols, cells.kinds, cells.a), strings[1]
    )
    if not height:
        return None
    width = last_col - first_col + 1
    if height * width > MAX_CELLS:  # a sheet that declared a smaller extent than it uses
        raise _too_large(f"{book.path}: sheet {sheet.name!r}", height, last_col)
    owner = _owners(
        lib, cells.spans, (cells.rows, cells.cols, cells.kinds), height, first_col, width
    )
    # the columns come from the grid, the cells' kinds and values' places, and the XML: the
    # cells' rows, columns and styles are freed first (8 bytes a cell, ~110 MB at 500,000
    # rows), as were the masks of `_values` (the read's peak RSS is while assembling)
    kinds, a, b = cells.kinds, cells.a, cells.b
    del cells
    groups = [(j, min(j + _GROUP, width)) for j in range(0, width, _GROUP)]

    def assemble(group: tuple[int, int]) -> tuple[np.ndarray, ...]:
        return _assemble(lib, owner, *group, (kinds, a, b), buf, *strings)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(assemble, groups)), height, first_col, problems


def _values(
    book: Workbook,
    sheet: SheetPart,
    lib: ctypes.CDLL,
    xml: bytes,
    buf: np.ndarray,
    cells: _Cells,
    scanner: _Scanner | None,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], dict[tuple[int, int], str]] | None:
    """Have fastexcel read the cells the scanner leaves (each distinct one once), leaving
    every cell's value where the assembly finds it: the string table (data, starts, ends:
    the shared strings, then fastexcel's answers) and the cells' problems; None where
    fastexcel is the one to say what is wrong."""
    from workdatahub.excel.reader import _other_parts

    rows, cols, kinds, a, b, styles = (
        cells.rows, cells.cols, cells.kinds, cells.a, cells.b, cells.styles
    )  # fmt: skip

    def value(n: int) -> bytes:
        return xml[a[n] : a[n] + b[n]]

    def number_element(n: int) -> bytes:
        return b'<c s="%d"><v>%s</v></c>' % (styles[n], value(n))

    def inline_element(n: int) -> bytes:
        return b'<c s="%d" t="inlineStr"><is>%s</t></is></c>' % (styles[n], value(n))

    def resolve(cells: np.ndarray, group: np.ndarray, entries: list[int]) -> None:
        """Each of `cells` becomes the string table's entry for its group."""
        kinds[cells], a[cells] = STRING, np.array(entries, np.int64)[group]

    def flag(cells: np.ndarray, group: np.ndarray, details: dict[tuple[int, int], str]) -> None:
        """The cells of the groups fastexcel reports a problem for (in column C), with it."""
        unshown = {g: detail for (g, column), detail in details.items() if column == 2}
        if unshown:
            at = np.flatnonzero(np.isin(group, list(unshown)))
            for n, g in zip(cells[at].tolist(), group[at].tolist(), strict=True):
                problems[(int(rows[n]), int(cols[n]))] = unshown[g]
                erring.append(n)

    shared = max(cells.shared) + 1
    others = _other_parts(book, sheet)  # read once: both questions to fastexcel use them
    if shared > _shared_strings(others):
        return None  # an entry the table does not have: fastexcel says what that means
    numbers = (kinds == PLAIN) | (kinds == NUMBER) | (kinds == LONG)
    used_styles = np.unique(styles[numbers]).tolist()
    other = np.flatnonzero(kinds == OTHER)
    first, other_group = _elements(buf, a, b, other)
    distinct = [_without_place(value(n)) for n in other[first].tolist()]
    # inline strings of the plain shape (a column of them in every row, as some exports
    # write): grouped by their text and style, no place to take out, and asked in the same
    # question as the other cells, each as its own element again
    inline = np.flatnonzero(kinds == INLINE)
    first, inline_group = _grouped(lib, buf, a, b, inline, by=styles)
    inline_group += len(distinct)
    distinct += [inline_element(n) for n in inline[first].tolist()]
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
        asked = [strings.add(k, answers[g]) for g, k in enumerate(distinct)]
        resolve(other, other_group, asked)
        resolve(inline, inline_group, asked)
        flag(other, other_group, details)
        flag(inline, inline_group, details)
        dates = [style for style, text in zip(used_styles, shown, strict=False) if text != _PROBE]
        is_date_style = np.zeros(1 << 16, np.bool_)  # styles are uint16
        is_date_style[dates] = True
        dated = is_date_style[styles]
        # integers in a zeros format (`000000`, a code's), with the zeros they show
        formats = {k: v for k, v in book.formats.items() if k < 1 << 16}
        if formats:
            is_formatted = np.zeros(1 << 16, np.bool_)
            is_formatted[list(formats)] = True
            styled = np.flatnonzero(numbers & is_formatted[styles] & ~dated)
            first, group = _grouped(lib, buf, a, b, styled, by=styles)
            entries = np.full(first.size, -1, np.int64)
            for g, n in enumerate(styled[first].tolist()):
                plain = _plain_text(value(n))
                text = formats[int(styles[n])].shown(plain) if plain is not None else None
                if text is not None:
                    entries[g] = strings.add(b"%%%d:" % styles[n] + value(n), text)
            changed = entries[group] >= 0
            kinds[styled[changed]], a[styled[changed]] = STRING, entries[group[changed]]
        # numbers in another spelling, each distinct one spelled out once in plain decimals
        odd = np.flatnonzero((kinds == NUMBER) & ~dated)
        first, group = _grouped(lib, buf, a, b, odd)
        entries = np.full(first.size, -1, np.int64)
        for g, n in enumerate(odd[first].tolist()):
            text = _plain_text(value(n))
            if text is not None:
                entries[g] = strings.add(b"=" + value(n), text)
        spelled = entries[group] >= 0
        kinds[odd[spelled]], a[odd[spelled]] = STRING, entries[group[spelled]]
        # dates, and numbers only fastexcel can show: once per distinct style and value
        later = np.concatenate([odd[~spelled], np.flatnonzero(numbers & dated)])
        if later.size:
            first, group = _grouped(lib, buf, a, b, later, by=styles)
            keys = [number_element(n) for n in later[first].tolist()]
            # this question's sheet uses no shared string: an empty table spares fastexcel
            # parsing the real one again (9 ms at 50,000 rows, 30-50 ms at 500,000)
            (_, _, answers), details = _ask_fastexcel(
                sheet, _without_shared_strings(others), _oracle_sheet(0, [], keys),
                folder.name, len(keys),
            )  # fmt: skip
            resolve(later, group, [strings.add(key, answers[k]) for k, key in enumerate(keys)])
            flag(later, group, details)
    data, starts, ends = strings.arrays()
    if scanner is not None:  # a plain number holds no NUL; the string table may
        scanner.scan.nul_free = not bool((data == 0).any())
        scanner.scan.formats_shown = True
    if erring:  # a null error cell is there (as fastexcel sees it)
        at = np.array(erring, np.int64)
        kinds[at] = np.where(starts[a[at]] < 0, ERROR, STRING)
    return (data, starts, ends), problems


# Excel keeps and shows 15 significant digits of a number, and writes a double with up to
# 17 (`2.0000499999999999` for a typed 2.00005): rounded as written, such a half would round
# the wrong way (see _plain_text, and `shown` in scanner.c)
_EXCEL = Context(prec=15, rounding=ROUND_HALF_UP)
_R_PATTERN = r'[ \t\n\r\x0c\x0b]r="[A-Z]{1,3}[0-9]{1,8}"'  # _R_ATTRIBUTE, for polars


def _grouped(
    lib: ctypes.CDLL,
    buf: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    cells: np.ndarray,
    by: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`cells` grouped by their bytes buf[a:a+b] and by `by` (uint16, per cell of the sheet),
    the groups in the order they first come: the position in `cells` of each group's first
    cell, and each cell's group. By a hash table in C (scanner.c's wdh_group): a date column
    or a column of inline strings (some exports write them) has a cell of this kind in every
    row, and looked at one by one in Python they cost ~1.5 µs each (a 50,000-row sheet: 0.37
    s with its dates so; with inline strings 1.35 s); the ~600,000 inline strings of a
    50,000-row sheet group in ~30 ms, where polars over Arrow views took ~0.15 s."""
    cells = np.ascontiguousarray(cells, np.int64)
    if by is not None and by.dtype != np.uint16:
        raise TypeError(f"grouping key of {by.dtype}: the compiled grouping takes uint16")
    bits = max(4, (2 * cells.size).bit_length())
    table = np.full(1 << bits, -1, np.int32)  # group numbers: fewer than cells
    group = np.empty(cells.size, np.int64)
    first = np.empty(cells.size, np.int64)
    keys = None if by is None else np.ascontiguousarray(by)  # (held for the call)
    groups = lib.wdh_group(
        _at(buf), _at(a), _at(b), None if keys is None else _at(keys), _at(cells), cells.size,
        _at(table), bits, _at(group), _at(first),
    )  # fmt: skip
    return first[:groups].copy(), group


def _elements(
    buf: np.ndarray, a: np.ndarray, b: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`cells` (OTHER: the element at buf[a:a+b]) grouped as `_grouped` groups, by their
    element without its `r="B7"` (`_without_place`): by polars, over Arrow views into the
    XML, a regex taking the place out; one by one where polars cannot (text that is not
    UTF-8, an XML of 2 GiB or more, a big-endian machine)."""
    grouped = _elements_by_polars(buf, a, b, cells) if cells.size else None
    if grouped is None:
        grouped = _grouped_one_by_one(buf, a, b, cells, None, without_place=True)
    return grouped


def _elements_by_polars(
    buf: np.ndarray, a: np.ndarray, b: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    starts, lengths = a[cells], b[cells].astype(np.int64)
    # an element is longer than the 12 bytes a view holds itself (`<c r="A1"></c>`: 15), so
    # every view points into the XML: its length, its first 4 bytes, buffer 0, its offset
    if buf.size >= 2**31 or sys.byteorder != "little" or int(lengths.min()) <= 12:
        return None
    views = np.zeros((cells.size, 16), np.uint8)
    views[:, :4] = lengths.astype("<i4").view(np.uint8).reshape(-1, 4)
    for k in range(4):
        views[:, 4 + k] = buf[starts + k]
    views[:, 12:] = starts.astype("<i4").view(np.uint8).reshape(-1, 4)
    array = pa.Array.from_buffers(
        pa.binary_view(), cells.size, [None, pa.py_buffer(views), pa.py_buffer(buf)]
    )
    # through a table: an array alone makes polars import pyarrow.compute (~0.1 s)
    table = pl.from_arrow(pa.Table.from_arrays([array], names=["k"]))
    assert isinstance(table, pl.DataFrame)
    try:
        keys = table.select(pl.col("k").cast(pl.String).str.replace(_R_PATTERN, ""))
    except pl.exceptions.PolarsError:  # not UTF-8
        return None
    firsts = keys.with_row_index("i").unique("k", keep="first", maintain_order=True)
    group = keys.join(firsts.with_row_index("g"), on="k", how="left", maintain_order="left")["g"]
    return firsts["i"].to_numpy().astype(np.int64), group.to_numpy().astype(np.int64)


def _grouped_one_by_one(
    buf: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    cells: np.ndarray,
    by: np.ndarray | None,
    without_place: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """`_grouped` (and, `without_place`, `_elements`) in plain Python: the reference the
    tests hold both to, and `_elements`' way where polars cannot."""
    found: dict[tuple[bytes, int], int] = {}
    firsts: list[int] = []
    group = np.empty(cells.size, np.int64)
    for k, n in enumerate(cells.tolist()):
        value = buf[a[n] : a[n] + b[n]].tobytes()
        key = (_without_place(value) if without_place else value, -1 if by is None else int(by[n]))
        group[k] = found.setdefault(key, len(found))
        if group[k] == len(firsts):
            firsts.append(k)
    return np.array(firsts, np.int64), group


def _plain_text(raw: bytes) -> str | None:
    """A number spelled otherwise (exponent, sign, leading dot or zeros) in plain decimals:
    `1.5E-05` -> `0.000015`; None when it is no number. Written with decimals or an exponent
    and more than 15 significant digits (a double in full), it is shown to 15 as Excel shows
    it, as the scanner shows a plain one (LONG): `2.0000499999999999E-3` -> `0.00200005`. An
    integer written out keeps every digit."""
    try:
        number = Decimal(raw.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError):
        return None
    if not number.is_finite():
        return None
    text = _plain(number)
    # (`+69404598994780006.0` is an integer written out, as the scanner reads
    # `69404598994780006.0`: its digits are kept)
    written_as_double = re.search(rb"[eE]", raw) or "." in text
    if written_as_double and len(text.lstrip("-").replace(".", "").lstrip("0")) > _EXCEL.prec:
        return _plain(_EXCEL.plus(number))
    return text


def _plain(number: Decimal) -> str:
    """In plain decimals, without zeros at the end of its decimals."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
