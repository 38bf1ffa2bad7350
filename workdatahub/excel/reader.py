"""Read one sheet of a workbook into a frame of raw text cells, one row per data row.

fastexcel (Rust, calamine) reads the sheet straight into Arrow about fifteen times faster
than openpyxl. Every cell is read as text so that one column may mix numbers, dates and
text the way operators type them; the cleansing step parses them. The header row is the
first row that holds every required header (after NFKC and trimming); title rows above it
are skipped. Each data row keeps the row number the operator sees in Excel (`_row`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import fastexcel
import polars as pl

from workdatahub.errors import InputError
from workdatahub.sources.spec import ColumnSpec, DomainSpec, normalize_header

ROW = "_row"
HEADER_SEARCH_ROWS = 50
TOTALS_MARKERS = ("合计", "总计")



@dataclass
class SheetData:
    file: Path
    sheet: str
    header_row: int  # Excel row number of the header
    frame: pl.DataFrame  # `_row` + one text column per matched source column
    columns: dict[str, str] = field(default_factory=dict)  # target name -> header as found
    missing_optional: list[str] = field(default_factory=list)
    rows_read: int = 0
    skipped_blank: int = 0
    skipped_totals: int = 0


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def open_workbook(path: Path) -> fastexcel.ExcelReader:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        raise InputError(f"{path}: not an .xlsx/.xlsm workbook")
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path}: not a readable workbook (not an .xlsx zip container; an old .xls or "
            "a password-protected file must be re-saved as .xlsx)"
        )
    try:
        return fastexcel.read_excel(str(path))
    except Exception as error:  # fastexcel raises several error types for corrupt files
        raise InputError(f"{path}: not a readable workbook ({_short(error)})") from None


def select_sheet(reader: fastexcel.ExcelReader, path: Path, wanted: str | int) -> str:
    names = list(reader.sheet_names)
    if isinstance(wanted, int):
        if wanted < len(names):
            return names[wanted]
        raise InputError(f"{path}: has no sheet number {wanted + 1} (sheets: {', '.join(names)})")
    target = normalize_header(wanted)
    for name in names:
        if normalize_header(name) == target:
            return name
    raise InputError(f"{path}: sheet {wanted!r} not found (sheets: {', '.join(names) or 'none'})")


def _find_header(
    rows: list[tuple[str | None, ...]], spec: DomainSpec, path: Path, sheet: str, offset: int
) -> tuple[int, dict[int, ColumnSpec], dict[str, str]]:
    """Return (index in `rows`, sheet column index -> spec column, name -> header found)."""
    required = spec.required_headers
    best: tuple[int, int, list[str]] = (-1, -1, [c.header or c.name for c in required])
    for index, row in enumerate(rows):
        normalized = [normalize_header(cell) if cell is not None else "" for cell in row]
        present = set(normalized)
        missing = [c.header or c.name for c in required if not present.intersection(c.headers)]
        found = len(required) - len(missing)
        if found > best[1]:
            best = (index, found, missing)
        if missing:
            continue
        mapping: dict[int, ColumnSpec] = {}
        seen: dict[str, int] = {}
        found_headers: dict[str, str] = {}
        for position, header in enumerate(normalized):
            for column in spec.source_columns:
                if header in column.headers:
                    if column.name in seen:
                        raise InputError(
                            f"{path}: sheet {sheet!r}: row {offset + index}: header "
                            f"{row[position]!r} appears twice (columns {_col(seen[column.name])} "
                            f"and {_col(position)}) for {column.name}"
                        )
                    seen[column.name] = position
                    mapping[position] = column
                    found_headers[column.name] = str(row[position]).strip()
        return index, mapping, found_headers
    if best[1] <= 0:
        wanted = ", ".join(c.header or c.name for c in required)
        raise InputError(
            f"{path}: sheet {sheet!r}: no header row found in the first {len(rows)} rows "
            f"(expected headers: {wanted})"
        )
    raise InputError(
        f"{path}: sheet {sheet!r}: required column missing: {', '.join(best[2])} "
        f"(header row {offset + best[0]})"
    )


def _col(index: int) -> str:
    """0 -> A, 27 -> AB."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def read_sheet(path: Path, spec: DomainSpec) -> SheetData:
    reader = open_workbook(path)
    sheet = select_sheet(reader, path, spec.sheet)
    # An integer skip_rows (even 0) makes fastexcel count from the sheet's row 1 instead of
    # its first used row, so list index + 1 is the Excel row number (guarded by tests).
    offset = 1
    try:
        peek = reader.load_sheet(
            sheet, header_row=None, skip_rows=0, n_rows=HEADER_SEARCH_ROWS, dtypes="string"
        ).to_polars()
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"{path}: sheet {sheet!r}: unreadable ({_short(error)})") from None
    if peek.height == 0:
        raise InputError(f"{path}: sheet {sheet!r} is empty")
    header_index, mapping, found = _find_header(peek.rows(), spec, path, sheet, offset)
    positions = sorted(mapping)
    try:
        body = reader.load_sheet(
            sheet,
            header_row=None,
            skip_rows=header_index + 1,  # absolute: rows above and including the header
            use_columns=[peek.columns[p] for p in positions],  # names: ints mean absolute
            dtypes="string",
            schema_sample_rows=1,
        ).to_polars()
    except Exception as error:
        raise InputError(f"{path}: sheet {sheet!r}: unreadable ({_short(error)})") from None
    names = [mapping[p].name for p in positions]
    body = body.rename({peek.columns[p]: mapping[p].name for p in positions}).select(names)
    first_data_row = offset + header_index + 1
    body = body.with_row_index(ROW, offset=first_data_row).with_columns(pl.col(ROW).cast(pl.Int64))

    stripped = [pl.col(n).str.strip_chars() for n in names]
    blank = pl.all_horizontal([(s.is_null() | (s == "")) for s in stripped])
    first_text = pl.coalesce([pl.when(s != "").then(s) for s in stripped])
    totals = first_text.is_in(TOTALS_MARKERS)
    flagged = body.with_columns(_blank=blank, _totals=totals.fill_null(False) & ~blank)
    skipped_blank = int(flagged["_blank"].sum())
    skipped_totals = int(flagged["_totals"].sum())
    frame = flagged.filter(~pl.col("_blank") & ~pl.col("_totals")).drop("_blank", "_totals")
    missing_optional = [
        c.name for c in spec.source_columns if c.optional_header and c.name not in found
    ]
    return SheetData(
        file=path,
        sheet=sheet,
        header_row=offset + header_index,
        frame=frame,
        columns=found,
        missing_optional=missing_optional,
        rows_read=frame.height,
        skipped_blank=skipped_blank,
        skipped_totals=skipped_totals,
    )
