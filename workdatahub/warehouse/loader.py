"""Load one partition of one domain: a plan, then (unless plan-only) one transaction.

The plan lists every statement with its row counts, rendered with literal values so an
operator can read exactly what would run; plan-only needs no database at all. Execution
runs the same statements with values as parameters or COPY data:

    begin
      lock the (table, period) with a transaction-scoped advisory lock
      delete the period                      (delete_insert)
      copy the valid rows                    (append / delete_insert)
      copy into a temp table + insert … on conflict (key) do update   (upsert)
      copy the rejects into wdh.rejected_rows
      mark the load-log row succeeded
    commit

A failure anywhere rolls the whole transaction back: the table is exactly as it was. The
load-log row is written first in its own short transaction ("running"), so a load that
fails, or a process that is killed, still leaves a trace; a later load of the same
(table, period) marks such stale rows "abandoned".
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from workdatahub.errors import LoadBusyError, WarehouseError
from workdatahub.excel.reader import ROW
from workdatahub.settings import mask_url
from workdatahub.sources.spec import DomainSpec, RefreshMode

LINEAGE = ["load_id", "source_file", "source_sheet", "source_row"]
REJECT_COLUMNS = [
    "load_id", "domain", "period", "source_file", "source_sheet", "source_row",
    "column_name", "value", "reason", "raw_row",
]  # fmt: skip
COPY_BATCH_ROWS = 100_000
LOCK_TIMEOUT = "10min"


@dataclass(frozen=True)
class Deferred:
    """A parameter known only while the load runs (shown as a comment in the plan)."""

    what: str


@dataclass(frozen=True)
class Statement:
    """One SQL statement: `query` runs with `params`; `display` is what plan-only prints."""

    purpose: str
    query: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None  # rows the statement writes (COPY), when known up front

    def display(self) -> str:
        rendered = self.query.as_string(None)
        for key, value in self.params.items():
            shown = (
                f"/* {value.what} */ null"
                if isinstance(value, Deferred)
                else sql.Literal(value).as_string(None)
            )
            rendered = rendered.replace(f"%({key})s", shown)
        return rendered


@dataclass
class LoadPlan:
    load_id: uuid.UUID
    domain: str
    period: date
    mode: RefreshMode
    table: str  # schema.table, for messages
    source_file: str
    source_sheet: str
    files: list[dict[str, Any]]
    rows_read: int
    valid: pl.DataFrame
    rejects: pl.DataFrame  # row, column, value, reason
    rejected_rows: pl.DataFrame  # ROW + raw source columns
    statements: list[Statement]

    @property
    def rows_to_load(self) -> int:
        return self.valid.height

    @property
    def rows_rejected(self) -> int:
        return self.rejected_rows.height

    def render(self) -> str:
        lines = [
            f"-- load plan {self.load_id}: {self.domain} {self.period:%Y-%m} into {self.table} "
            f"({self.mode})",
            f"-- source: {self.source_file} [{self.source_sheet}]",
            f"-- rows read {self.rows_read}, to load {self.rows_to_load}, "
            f"rejected {self.rows_rejected} ({self.rejects.height} reasons)",
        ]
        for statement in self.statements:
            lines.append(f"-- {statement.purpose}" + (f" ({statement.rows} rows)" if statement.rows is not None else ""))
            lines.append(statement.display().strip() + ";")
        return "\n".join(lines)


@dataclass
class LoadOutcome:
    load_id: uuid.UUID
    status: str
    rows_loaded: int
    rows_deleted: int
    rows_rejected: int
    message: str = ""


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _lock_key(spec: DomainSpec, period: date) -> str:
    return f"{spec.schema_name}.{spec.table}:{period.isoformat()}"


def build_plan(
    spec: DomainSpec,
    period: date,
    *,
    mode: RefreshMode,
    source_file: str,
    source_sheet: str,
    files: list[dict[str, Any]],
    rows_read: int,
    valid: pl.DataFrame,
    rejects: pl.DataFrame,
    rejected_rows: pl.DataFrame,
    load_id: uuid.UUID | None = None,
) -> LoadPlan:
    load_id = load_id or uuid.uuid4()
    table = _ident(spec.schema_name, spec.table)
    columns = [c.name for c in spec.loaded_columns] + LINEAGE
    column_list = sql.SQL(", ").join(_ident(c) for c in columns)
    statements = [
        Statement("limit waiting for a concurrent load", sql.SQL(f"set local lock_timeout = '{LOCK_TIMEOUT}'")),
        Statement(
            "one load per (table, period) at a time",
            sql.SQL("select pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))"),
            {"lock_key": _lock_key(spec, period)},
        ),
        Statement(
            "earlier loads of this period that never finished",
            sql.SQL(
                "update wdh.load_log set status = 'abandoned', finished_at = clock_timestamp(), "
                "message = 'the process ended before the load finished' "
                "where domain = %(domain)s and period = %(period)s and status = 'running' "
                "and load_id <> %(load_id)s"
            ),
            {"domain": spec.name, "period": period, "load_id": load_id},
        ),
    ]
    part = _ident(spec.partition_column)
    if mode == "delete_insert":
        statements.append(
            Statement(
                "replace the month: remove its rows",
                sql.SQL("delete from {} where {} = %(period)s").format(table, part),
                {"period": period},
            )
        )
    if mode == "upsert":
        staging = _ident(f"_wdh_stage_{spec.table}")
        key = sql.SQL(", ").join(_ident(k) for k in spec.key)
        updates = sql.SQL(", ").join(
            sql.SQL("{} = excluded.{}").format(_ident(c), _ident(c))
            for c in columns
            if c not in spec.key
        )
        statements += [
            Statement(
                "staging table for the upsert",
                sql.SQL(
                    "create temporary table {} (like {} including defaults) on commit drop"
                ).format(staging, table),
            ),
            Statement(
                "copy the valid rows",
                sql.SQL("copy {} ({}) from stdin with (format csv)").format(staging, column_list),
                rows=valid.height,
            ),
            Statement(
                "insert new keys, update existing ones",
                sql.SQL(
                    "insert into {} ({cols}) select {cols} from {} on conflict ({}) do update set {}"
                ).format(table, staging, key, updates, cols=column_list),
            ),
        ]
    else:
        statements.append(
            Statement(
                "copy the valid rows",
                sql.SQL("copy {} ({}) from stdin with (format csv)").format(table, column_list),
                rows=valid.height,
            )
        )
    statements += [
        Statement(
            "quarantine the rejected rows with their reasons",
            sql.SQL("copy wdh.rejected_rows ({}) from stdin with (format csv)").format(
                sql.SQL(", ").join(_ident(c) for c in REJECT_COLUMNS)
            ),
            rows=rejects.height,
        ),
        Statement(
            "record the load",
            sql.SQL(
                "update wdh.load_log set status = 'succeeded', rows_loaded = %(rows_loaded)s, "
                "rows_rejected = %(rows_rejected)s, rows_deleted = %(rows_deleted)s, "
                "finished_at = clock_timestamp() where load_id = %(load_id)s"
            ),
            {
                "rows_loaded": valid.height,
                "rows_rejected": rejected_rows.height,
                "rows_deleted": Deferred("rows deleted above"),
                "load_id": load_id,
            },
        ),
    ]
    return LoadPlan(
        load_id=load_id,
        domain=spec.name,
        period=period,
        mode=mode,
        table=f"{spec.schema_name}.{spec.table}",
        source_file=source_file,
        source_sheet=source_sheet,
        files=files,
        rows_read=rows_read,
        valid=valid,
        rejects=rejects,
        rejected_rows=rejected_rows,
        statements=statements,
    )


def _csv_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    for batch in frame.iter_slices(COPY_BATCH_ROWS):
        buffer = io.BytesIO()
        batch.write_csv(buffer, include_header=False, null_value="", datetime_format="%Y-%m-%dT%H:%M:%S")
        yield buffer.getvalue()


def valid_rows_for_copy(plan: LoadPlan, spec: DomainSpec) -> pl.DataFrame:
    return plan.valid.select(
        *[pl.col(c.name) for c in spec.loaded_columns],
        pl.lit(str(plan.load_id)).alias("load_id"),
        pl.lit(plan.source_file).alias("source_file"),
        pl.lit(plan.source_sheet).alias("source_sheet"),
        pl.col(ROW).cast(pl.Int32).alias("source_row"),
    )


def reject_rows_for_copy(plan: LoadPlan) -> pl.DataFrame:
    raw = plan.rejected_rows
    source_columns = [c for c in raw.columns if c != ROW]
    as_json = raw.select(
        pl.col(ROW).alias("row"),
        pl.struct(source_columns).struct.json_encode().alias("raw_row")
        if source_columns
        else pl.lit("{}").alias("raw_row"),
    )
    return plan.rejects.join(as_json, on="row", how="left").select(
        pl.lit(str(plan.load_id)).alias("load_id"),
        pl.lit(plan.domain).alias("domain"),
        pl.lit(plan.period).alias("period"),
        pl.lit(plan.source_file).alias("source_file"),
        pl.lit(plan.source_sheet).alias("source_sheet"),
        pl.col("row").alias("source_row"),
        pl.col("column").alias("column_name"),
        pl.col("value"),
        pl.col("reason"),
        pl.col("raw_row").fill_null("{}"),
    )


def _start_log(conn: psycopg.Connection, plan: LoadPlan, spec: DomainSpec, status: str, message: str = "") -> None:
    conn.execute(
        "insert into wdh.load_log (load_id, domain, period, target_table, mode, status, files, "
        "sheet, rows_read, rows_rejected, reject_rate, message) values "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            plan.load_id, plan.domain, plan.period, plan.table, plan.mode, status,
            json.dumps(plan.files, ensure_ascii=False), plan.source_sheet, plan.rows_read,
            plan.rows_rejected, round(plan.rows_rejected / plan.rows_read, 6) if plan.rows_read else 0,
            message or None,
        ],
    )  # fmt: skip


def _finish_failed(url: str, plan: LoadPlan, message: str) -> None:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                "update wdh.load_log set status = 'failed', message = %s, "
                "finished_at = clock_timestamp() where load_id = %s",
                [message[:2000], plan.load_id],
            )
    except psycopg.Error:
        pass  # the database is gone; the row stays 'running' and the next load marks it


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return mask_url(text[0] if text else type(error).__name__)


def execute(plan: LoadPlan, spec: DomainSpec, url: str, *, refuse: str | None = None) -> LoadOutcome:
    """Run the plan in one transaction. With `refuse` set (reject threshold exceeded), only
    the rejects and a 'refused' load-log row are written: the table is not touched."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            _start_log(conn, plan, spec, "running")
    except psycopg.Error as error:
        raise WarehouseError(f"{plan.table} {plan.period:%Y-%m}: cannot start the load: {_one_line(error)}") from None

    rows_deleted = 0
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.transaction(), conn.cursor() as cur:
            if refuse:
                _write_rejects(cur, plan)
                cur.execute(
                    "update wdh.load_log set status = 'refused', message = %s, "
                    "finished_at = clock_timestamp() where load_id = %s",
                    [refuse, plan.load_id],
                )
                return LoadOutcome(plan.load_id, "refused", 0, 0, plan.rows_rejected, refuse)
            for statement in plan.statements:
                if statement.purpose == "copy the valid rows":
                    with cur.copy(statement.query) as copy:
                        for chunk in _csv_chunks(valid_rows_for_copy(plan, spec)):
                            copy.write(chunk)
                elif statement.purpose.startswith("quarantine"):
                    _write_rejects(cur, plan, statement)
                elif statement.purpose == "record the load":
                    params = {**statement.params, "rows_deleted": rows_deleted}
                    cur.execute(statement.query, params)
                else:
                    cur.execute(statement.query, statement.params or None)
                    if statement.purpose.startswith("replace the month"):
                        rows_deleted = cur.rowcount
    except psycopg.errors.LockNotAvailable:
        message = f"{plan.table} {plan.period:%Y-%m}: another load holds this month; try again later"
        _finish_failed(url, plan, message)
        raise LoadBusyError(message) from None
    except psycopg.Error as error:
        message = f"{plan.table} {plan.period:%Y-%m}: load failed and was rolled back, table unchanged: {_one_line(error)}"
        _finish_failed(url, plan, message)
        raise WarehouseError(message) from None
    except BaseException as error:
        _finish_failed(url, plan, f"interrupted: {_one_line(error)}")
        raise
    return LoadOutcome(plan.load_id, "succeeded", plan.rows_to_load, rows_deleted, plan.rows_rejected)


def _write_rejects(cur: psycopg.Cursor, plan: LoadPlan, statement: Statement | None = None) -> None:
    if plan.rejects.height == 0:
        return
    query = statement.query if statement else sql.SQL(
        "copy wdh.rejected_rows ({}) from stdin with (format csv)"
    ).format(sql.SQL(", ").join(_ident(c) for c in REJECT_COLUMNS))
    with cur.copy(query) as copy:
        for chunk in _csv_chunks(reject_rows_for_copy(plan)):
            copy.write(chunk)
