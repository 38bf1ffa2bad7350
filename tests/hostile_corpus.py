"""A corpus of hostile workbooks, generated: what operators (and the odd program) really drop
into the shared folder. Each builder writes one file and returns its path; the outcome each
must give is asserted in tests/test_hostile.py.

Most are built with xlsxwriter (as tests/workbooks.py does); the rest are patched zips
(a workbook with no sheets, a #SPILL! cell, a DTD in workbook.xml), OLE compound files
(an encrypted workbook, an old .xls: the container alone decides the outcome, so a minimal
valid container with the right stream names stands in for Excel's), or openpyxl output
(formulas with no saved value, as a program writes them).
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import xlsxwriter

from tests.workbooks import TRUSTEE_HEADER, Merged, write_workbook

Row = list[Any]


def trustee_rows(n: int = 3, start: int = 1) -> list[Row]:
    """Valid trustee_performance rows for 2024-11: plan P0001…, company C01."""
    return [[2024, 11, f"P{i:04d}", "C01", "5%", 1.5, 100] for i in range(start, start + n)]


def trustee_book(path: Path, rows: Sequence[Sequence[Any] | None], **kwargs: Any) -> Path:
    table: list[Row | Merged | None] = [TRUSTEE_HEADER, *[list(r) if r else None for r in rows]]
    return write_workbook(path, {"Sheet1": table}, **kwargs)


def sheet_book(
    path: Path,
    rows: Sequence[Sequence[Any] | None],
    *,
    sheet: str = "Sheet1",
    edit: Callable[[Any, Any], object] | None = None,
    before: Sequence[tuple[str, list[Row]]] = (),
) -> Path:
    """A workbook written cell by cell, with a hook (`edit(book, sheet)`) for merges,
    formulas, hidden rows; `before` adds sheets ahead of it (name, rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False})
    book.set_properties({"created": datetime(2024, 1, 1)})
    for name, extra in before:
        _fill(book.add_worksheet(name), extra)
    target = book.add_worksheet(sheet)
    _fill(target, rows)
    if edit is not None:
        edit(book, target)
    book.close()
    return as_excel_saved(path)


def as_excel_saved(path: Path) -> Path:
    """The workbook as Excel saves it: its formulas' results saved, no request to recompute
    them when it is opened (xlsxwriter writes one, `fullCalcOnLoad`, whatever results it was
    given; a workbook that asks is read with its formulas rejected)."""
    written = path.with_name(path.name + ".written")
    path.replace(written)
    patch_zip(
        written, path, {"xl/workbook.xml": lambda xml: xml.replace(b' fullCalcOnLoad="1"', b"")}
    )
    written.unlink()
    return path


def _fill(sheet: Any, rows: Sequence[Sequence[Any] | None]) -> None:
    for r, row in enumerate(rows):
        for c, value in enumerate(row or []):
            if isinstance(value, str):
                sheet.write_string(r, c, value)
            elif value is not None:
                sheet.write(r, c, value)


def patch_zip(
    source: Path,
    target: Path,
    edits: dict[str, Callable[[bytes], bytes | None]] | None = None,
    add: dict[str, bytes] | None = None,
) -> Path:
    """Copy a zip, rewriting (or dropping, when the edit returns None) some members."""
    edits = edits or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            if info.filename in edits:
                changed = edits[info.filename](data)
                if changed is None:
                    continue
                data = changed
            new.writestr(zipfile.ZipInfo(info.filename, info.date_time), data)
        for name, data in (add or {}).items():
            new.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return target


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return path


# ---------------------------------------------------------------- OLE compound files (CFB v3)

_FREE, _END, _FAT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def _dir_entry(name: str, kind: int, start: int, size: int, child: int, right: int) -> bytes:
    encoded = (name + "\x00").encode("utf-16-le") if name else b""
    return (
        encoded.ljust(64, b"\x00")
        + struct.pack("<HBB", len(encoded), kind, 1)  # name length, type, colour black
        + struct.pack("<III", _NOSTREAM, right, child)  # left, right sibling, child
        + b"\x00" * 16  # CLSID
        + b"\x00" * 4  # state bits
        + b"\x00" * 16  # creation and modification time
        + struct.pack("<IQ", start, size)
    )


def ole_file(path: Path, streams: dict[str, bytes]) -> Path:
    """A minimal valid compound file (512-byte sectors; each stream padded to the 4,096-byte
    mini-stream cutoff so all live in regular sectors), streams in name order as siblings."""
    sector = 512
    names = sorted(streams, key=lambda n: (len(n), n.upper()))  # CFB's sibling order
    assert len(names) <= 3, "one directory sector holds the root and three streams"
    data: list[bytes] = []
    starts: list[int] = []
    next_sector = 2  # 0: FAT, 1: directory
    fat = [_FAT, _END]
    for name in names:
        body = streams[name].ljust(4096, b"\x00")
        body = body.ljust(-(-len(body) // sector) * sector, b"\x00")
        count = len(body) // sector
        starts.append(next_sector)
        fat += [next_sector + i + 1 for i in range(count - 1)] + [_END]
        next_sector += count
        data.append(body)
    assert len(fat) <= sector // 4
    fat += [_FREE] * (sector // 4 - len(fat))
    entries = [_dir_entry("Root Entry", 5, _END, 0, 1 if names else _NOSTREAM, _NOSTREAM)]
    for index, name in enumerate(names):
        right = index + 2 if index + 1 < len(names) else _NOSTREAM
        entries.append(_dir_entry(name, 2, starts[index], len(streams[name]), _NOSTREAM, right))
    while len(entries) < 4:
        entries.append(_dir_entry("", 0, 0, 0, _NOSTREAM, _NOSTREAM))
    header = (
        bytes.fromhex("d0cf11e0a1b11ae1")
        + b"\x00" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\x00" * 6
        + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, _END, 0, _END, 0)
        + struct.pack("<I", 0)  # DIFAT[0]: the FAT is sector 0
        + struct.pack("<I", _FREE) * 108
    )
    assert len(header) == sector
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    path.write_bytes(header + fat_bytes + b"".join(entries) + b"".join(data))
    return path


def encrypted_workbook(path: Path) -> Path:
    """What Excel writes for a workbook with an open password: an OLE container holding
    EncryptionInfo and EncryptedPackage (agile encryption, XML descriptor)."""
    info = b"\x04\x00\x04\x00\x40\x00\x00\x00" + b'<?xml version="1.0"?><encryption/>'
    return ole_file(path, {"EncryptionInfo": info, "EncryptedPackage": b"\x10" * 5000})


def old_xls(path: Path) -> Path:
    """An Excel 97-2003 workbook: a BIFF8 `Workbook` stream in an OLE container."""
    bof = struct.pack("<HHHHHHII", 0x0809, 16, 0x0600, 0x0005, 0, 0, 0, 0)
    return ole_file(path, {"Workbook": bof + struct.pack("<HH", 0x000A, 0)})


# ---------------------------------------------------------------- workbook XML surgery


def sheet_xml_edit(edit: Callable[[str], str]) -> dict[str, Callable[[bytes], bytes | None]]:
    return {"xl/worksheets/sheet1.xml": lambda data: edit(data.decode()).encode()}


def without_sheets(path: Path, tmp: Path) -> Path:
    """A workbook whose sheet list is empty (Excel never saves one; programs can)."""
    source = trustee_book(tmp / "source-nosheets.xlsx", trustee_rows(1))
    return patch_zip(
        source,
        path,
        {
            "xl/workbook.xml": lambda d: re.sub(rb"<sheets>.*</sheets>", b"<sheets/>", d),
            "xl/worksheets/sheet1.xml": lambda d: None,
        },
    )


def with_dtd(path: Path, tmp: Path) -> Path:
    """workbook.xml declaring entities (an XML bomb's first step)."""
    source = trustee_book(tmp / "source-dtd.xlsx", trustee_rows(1))
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    return patch_zip(
        source,
        path,
        {"xl/workbook.xml": lambda d: d.replace(b"?>", b"?>" + bomb, 1)},
    )


def corrupt_sheet_xml(path: Path, tmp: Path) -> Path:
    source = trustee_book(tmp / "source-corrupt.xlsx", trustee_rows(2))
    return patch_zip(
        source,
        path,
        sheet_xml_edit(lambda x: x[: x.index("<sheetData>") + 60] + "<<<not xml"),
    )


def truncated(path: Path, tmp: Path) -> Path:
    """A copy cut off half-way (a network drive dropped the connection)."""
    source = trustee_book(tmp / "source-cut.xlsx", trustee_rows(50))
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def spill_error(path: Path, tmp: Path) -> Path:
    """Excel 365's #SPILL! in 净值 of row 3 (xlsxwriter writes it as text; Excel as t="e")."""

    def edit(book: Any, sheet: Any) -> None:
        sheet.write_formula(2, 5, "SEQUENCE(2)", None, "#SPILL!")

    source = sheet_book(tmp / "source-spill.xlsx", [TRUSTEE_HEADER, *trustee_rows(2)], edit=edit)
    return patch_zip(
        source,
        path,
        sheet_xml_edit(lambda x: x.replace('<c r="F3" cm="1" t="str">', '<c r="F3" cm="1" t="e">')),
    )


def unsaved_formulas(path: Path) -> Path:
    """Written by a program (openpyxl): formulas carry no saved result."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Sheet1"
    sheet.append(TRUSTEE_HEADER)
    sheet.append([2024, 11, "P0001", "C01", "5%", 1.5, 100])
    sheet.append([2024, 11, "P0002", "C01", "5%", "=F2*2", 100])
    sheet.append([2024, 11, "P0003", "C01", "5%", 2.5, "=G2+1"])
    book.save(path)
    return path
