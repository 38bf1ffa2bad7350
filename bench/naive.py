"""The naive stack the benchmark compares against: how the job is usually first written.

pandas.read_excel with openpyxl, the rules applied row by row in Python, DataFrame.to_sql
into the same target table (the month deleted first, in the same transaction). The rules
are the row-by-row reference implementation (tests/reference_rules.py), which the
equivalence test holds equal to the fast path, so both stacks reject the same rows and
load the same values: the comparison is of how, not of what.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Date, Integer, Numeric, Text, Uuid, create_engine, text
from sqlalchemy.types import TypeEngine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.reference_rules

from tests.reference_rules import ROW, check_rows  # noqa: E402
from workdatahub.sources.spec import DomainSpec, normalize_header  # noqa: E402
from workdatahub.warehouse.db import sqlalchemy_url  # noqa: E402

HEADER_SEARCH_ROWS = 50
TOTALS = ("合计", "总计")


def _text(cell: Any) -> str | None:
    """A cell as the text the rules expect (the fast reader hands over text as well)."""
    if cell is None or (isinstance(cell, float) and cell != cell):  # NaN: an empty cell
        return None
    if isinstance(cell, datetime):
        return cell.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _header(rows: list[list[Any]], spec: DomainSpec, path: Path) -> tuple[int, list[str]]:
    """The first row holding every required header, and its normalised headers."""
    for index, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        headers = [normalize_header(str(c)) if _text(c) is not None else "" for c in row]
        if all(set(headers) & set(c.headers) for c in spec.required_headers):
            return index, headers
    raise ValueError(f"{path}: no header row")


def read(path: Path, spec: DomainSpec) -> list[dict[str, Any]]:
    """The sheet's data rows as dicts of text cells, with the Excel row number."""
    sheet = pd.read_excel(path, sheet_name=str(spec.sheet), header=None, engine="openpyxl")
    rows = sheet.values.tolist()
    index, headers = _header(rows, spec, path)
    positions = {
        position: column.name
        for position, header in enumerate(headers)
        for column in spec.source_columns
        if header in column.headers
    }
    records = []
    for offset, row in enumerate(rows[index + 1 :]):
        cells = {name: _text(row[p]) for p, name in positions.items()}
        filled = [c.strip() for c in cells.values() if c is not None and c.strip()]
        if not filled or filled[0] in TOTALS:
            continue  # blank rows and totals rows are not data
        records.append({ROW: index + offset + 2, **cells})
    return records


def _sql_types(spec: DomainSpec) -> dict[str, TypeEngine[Any]]:
    """Column types for to_sql: object columns would otherwise be bound as VARCHAR."""
    types: dict[str, TypeEngine[Any]] = {
        "source_row": Integer(), "load_id": Uuid(), "source_file": Text(), "source_sheet": Text(),
    }  # fmt: skip
    for column in spec.loaded_columns:
        types[column.name] = {
            "money": Numeric(18, 4), "rate": Numeric(10, 6), "month": Date(), "integer": Integer(),
        }.get(column.type, Text())  # fmt: skip
    return types


def run(path: Path, spec: DomainSpec, period: date, url: str, source_file: str) -> dict[str, Any]:
    """Read, cleanse row by row, to_sql; returns seconds per stage and row counts."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    rows = read(path, spec)
    timings["read"] = time.perf_counter() - start

    start = time.perf_counter()
    checked = check_rows(rows, spec, period)
    valid = pd.DataFrame(checked.valid)
    valid = valid.rename(columns={ROW: "source_row"}).assign(
        load_id=uuid.uuid4(), source_file=source_file, source_sheet=str(spec.sheet)
    )
    timings["cleanse"] = time.perf_counter() - start

    start = time.perf_counter()
    engine = create_engine(sqlalchemy_url(url))
    with engine.begin() as conn:
        conn.execute(
            text(f"delete from {spec.schema_name}.{spec.table} where {spec.partition_column} = :p"),
            {"p": period},
        )
        valid.to_sql(
            spec.table,
            conn,
            schema=spec.schema_name,
            if_exists="append",
            index=False,
            dtype=_sql_types(spec),  # type: ignore[arg-type]
        )
    engine.dispose()
    timings["load"] = time.perf_counter() - start
    return {
        "timings": timings,
        "rows_read": len(rows),
        "rows_valid": len(checked.valid),
        "rows_rejected": len(checked.rejected_rows),
    }
