"""Load one partition of one domain: a plan, then (unless plan-only) one transaction.

The plan lists every statement with its row counts, rendered with literal values so an
operator can read exactly what would run; plan-only needs no database at all. Execution
runs the same statements with values as parameters or COPY data:

    the load's own lock (shared, for the session), its "running" row, and the month's
    earlier "running" rows whose own lock is free marked "abandoned" (autocommit)
    begin
      lock the (table, period) with a transaction-scoped advisory lock
      delete the period                      (delete_insert)
      copy the valid rows                    (append / delete_insert)
      copy into a temp table + insert … on conflict (key) do update   (upsert)
      copy the rejects into wdh.rejected_rows
      mark the load-log row succeeded
    commit

The statements before the rows (the load log's, the month's lock, delete the month) do not
depend on the workbook: `run_partition` begins the transaction with them on a thread while
the workbook is still read (`Head`), and `execute` goes on in it. The valid rows go in
COPY's binary format, encoded column-wise (numpy, then a compiled join into rows) in a
worker thread that starts with the load and keeps up to COPY_AHEAD_BYTES ahead of the
COPY; the rejects (a handful) go as CSV.

A failure anywhere rolls the whole transaction back: the table is exactly as it was. The
load-log row is written first in its own short transaction ("running"), before the workbook
is read, so a load that fails, or a process that is killed, still leaves a trace; a later
load of the same (table, period) marks such stale rows "abandoned" (see
`opening_statements`).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import queue
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from threading import Condition, Event, Thread
from typing import Any

import numpy as np
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from workdatahub.errors import (
    InputError,
    LoadBusyError,
    WarehouseError,
    WdhError,
    loaded_before_stopped,
)
from workdatahub.excel import native
from workdatahub.excel.reader import ROW
from workdatahub.logs import get_logger
from workdatahub.settings import one_line
from workdatahub.sources.spec import DomainSpec, RefreshMode
from workdatahub.warehouse import contract
from workdatahub.warehouse.db import (
    CONNECT_TIMEOUT_S,
    database_url,
    is_transient,
    unmigrated_hint,
)

LINEAGE = ["load_id", "source_file", "source_sheet", "source_row"]
LOADED_AT = "loaded_at"  # every raw table's, beside the lineage: the load's time by default
REJECT_COLUMNS = [
    "load_id", "domain", "period", "source_file", "source_sheet", "source_row",
    "column_name", "value", "reason", "raw_row",
]  # fmt: skip
# COPY batches of 20,000 rows (~12 MB binary): small enough that a 50,000-row month already
# overlaps encoding with sending and that only two batches are in memory, large enough that
# per-batch overhead stays small (10,000 costs ~10% more encoding CPU at 500,000 rows).
COPY_BATCH_ROWS = 20_000
# encoded COPY data held ahead of the server at most (500,000 rows: ~300 MB encoded in
# 1.5 CPU-seconds)
COPY_AHEAD_BYTES = 256 << 20
LOCK_TIMEOUT = "10min"
# how long a load that is stopped or fails waits for the server to cancel its statement
CLOSE_WAIT_S = 10.0
COPY_PURPOSE = "copy the valid rows"
DELETE_PURPOSE = "replace the month: remove its rows"
QUARANTINE_PURPOSE = "quarantine the rejected rows, a line per reason"
RECORD_PURPOSE = "record the load"
REPEAT_PURPOSE = "refuse the load if an earlier one of this month appended the same file"
OPEN_PURPOSE = "open the load log (committed on its own: a failed load keeps its row)"
LIVE_PURPOSE = "hold the load's own lock while it runs (a load whose process ended lets it go)"
ABANDON_PURPOSE = "earlier loads of this period whose process ended (their own lock is free)"
# again once the month is this load's: a load killed while this one waited for it, or read
ABANDON_AGAIN_PURPOSE = "loads of this period that ended while this one waited for the month"
# (its process killed, or cut from the warehouse, which then could not record why)
ABANDONED = "the process ended, or lost the warehouse, before the load finished"


@dataclass(frozen=True)
class Deferred:
    """A parameter known only while the load runs (shown as a comment in the plan)."""

    what: str


@dataclass(frozen=True)
class Statement:
    """One SQL statement: `query` runs with `params`; `display` is what plan-only prints."""

    purpose: str
    query: sql.SQL | sql.Composed
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

    def bound(self, **known: Any) -> dict[str, Any]:
        """The parameters to run with: each deferred one given its value from `known`
        (values for parameters the statement does not have are not used)."""
        params = {k: known[k] if isinstance(v, Deferred) else v for k, v in self.params.items()}
        assert not any(isinstance(v, Deferred) for v in params.values()), params
        return params


def _log_insert(values: dict[str, Any], **computed: sql.Composable) -> sql.Composed:
    """A row of wdh.load_log: the `computed` columns (SQL, such as a clock) first, then
    `values`' columns as named placeholders (the values go as parameters)."""
    columns = [*computed, *values]
    return sql.SQL("insert into wdh.load_log ({}) values ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join([*computed.values(), *map(sql.Placeholder, values)]),
    )


# when a load began, on the server's clock: the seconds since then are known when its row
# of wdh.load_log is written
_STARTED_AGO = sql.SQL("clock_timestamp() - make_interval(secs => %(started_ago)s)")


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
    started: float | None = None  # time.perf_counter() when the run began (the log's start)
    # why the load is refused (too many rejects): its statements then quarantine the
    # rejects and record the refusal, and leave the table as it is
    refused: str | None = None
    # what runs after the commit, on its own (the load's metrics; set by the pipeline)
    closing: Statement | None = None
    headers: dict[str, str] | None = None  # loaded column -> the header it was read from
    totals: dict[str, Any] | None = None  # the sheet's totals row checked (reconcile.py)

    @property
    def opening(self) -> list[Statement]:
        """What a load runs first, on the connection of its transaction, before that begins
        (see `opening_statements`)."""
        return opening_statements(
            self.load_id, self.domain, self.period, self.table, self.mode, self.files
        )

    @property
    def counts(self) -> dict[str, Any]:
        return _log_counts(
            self.source_sheet, self.rows_read, self.rows_rejected, self.headers, self.totals
        )

    @property
    def shown(self) -> list[Statement]:
        """Every statement the load runs, in order: the opening, the transaction, the
        closing."""
        return [*self.opening, *self.statements, *([self.closing] if self.closing else [])]

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
            f"-- rows read {self.rows_read}, {'valid' if self.refused else 'to load'} "
            f"{self.rows_to_load}, "
            f"rejected {self.rows_rejected} ({self.rejects.height} reasons)",
        ]
        if self.refused:
            lines.append("-- refused, too many rejects: the table is not touched")
        for statement in self.shown:
            lines.append(
                f"-- {statement.purpose}"
                + (
                    f" ({statement.rows} {'row' if statement.rows == 1 else 'rows'})"
                    if statement.rows is not None
                    else ""
                )
            )
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
    # seconds per step of the load (start, delete, copy, quarantine, audit, commit), so a
    # slow load says where its time went
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the block's wall time to `timings[step]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


# the load log's columns `_log_counts` gives, set when a load ends (and its end)
_COUNTED = (
    "sheet = %(sheet)s, headers = %(headers)s::jsonb, totals = %(totals)s::jsonb, "
    "rows_read = %(rows_read)s, rows_rejected = %(rows_rejected)s, "
    "reject_rate = %(reject_rate)s, finished_at = clock_timestamp()"
)


def _log_counts(
    sheet: str,
    rows_read: int,
    rows_rejected: int,
    headers: dict[str, str] | None,
    totals: dict[str, Any] | None,
) -> dict[str, Any]:
    """The load-log columns known once the workbook is validated."""
    rate = round(rows_rejected / rows_read, 6) if rows_read else 0
    return {
        "sheet": sheet,
        "headers": None if headers is None else json.dumps(headers, ensure_ascii=False),
        "totals": None if totals is None else json.dumps(totals, ensure_ascii=False),
        "rows_read": rows_read,
        "rows_rejected": rows_rejected,
        "reject_rate": rate,
    }


def _live_key(load_id: uuid.UUID | sql.Composable) -> sql.Composable:
    """The key of a load's own advisory lock, from its load id (a value, or SQL)."""
    text = sql.Literal(str(load_id)) if isinstance(load_id, uuid.UUID) else load_id
    return sql.SQL("hashtextextended('wdh.load:' || {}, 0)").format(text)


def opening_statements(
    load_id: uuid.UUID,
    domain: str,
    period: date,
    table: str,
    mode: RefreshMode,
    files: list[dict[str, Any]],
) -> list[Statement]:
    """A load's start, before its transaction and before the workbook is read: it takes
    a lock of its own (a session lock, held until its connection ends, so also if its process
    is killed), then writes its 'running' row of wdh.load_log, committed at once, so that a
    load that never finishes (killed, out of memory) still shows in the log; last, it marks
    `abandoned` the month's 'running' rows whose own lock is free (their process ended). The lock
    is shared: a second connection of the load (`_execute`'s) takes it too before the first
    ends, so that the load never lets it go while it runs, and never waits for it. The row
    starts at the run's start, so that `wdh history` shows how long the whole load took, on
    the server's clock as finished_at is: `started_ago`, the seconds since the run began,
    is known when the row is written. Its counts come when the load ends."""
    values: dict[str, Any] = {
        "load_id": load_id,
        "domain": domain,
        "period": period,
        "target_table": table,
        "mode": mode,
        "status": "running",
        "files": json.dumps(files, ensure_ascii=False),
    }
    insert = _log_insert(values, started_at=_STARTED_AGO)
    return [
        Statement(
            LIVE_PURPOSE,
            sql.SQL("select pg_advisory_lock_shared({})").format(_live_key(load_id)),
        ),
        Statement(
            OPEN_PURPOSE,
            sql.SQL("{} on conflict (load_id) do nothing").format(insert),
            {**values, "started_ago": Deferred("seconds since the run began")},
        ),
        # on its own, not in the load's transaction: the rows it marks are not held locked
        # while this load runs (a load that lost its connection records its failure at
        # once); the lock it tries, per row, is the only guard needed
        _abandon(ABANDON_PURPOSE, domain, period, load_id),
    ]


def _abandon(purpose: str, domain: str, period: date, load_id: uuid.UUID) -> Statement:
    """Mark `abandoned` the month's other 'running' rows whose own lock is free."""
    return Statement(
        purpose,
        sql.SQL(
            "update wdh.load_log set status = 'abandoned', finished_at = clock_timestamp(), "
            "message = %(abandoned)s "
            "where domain = %(domain)s and period = %(period)s and status = 'running' "
            "and load_id <> %(load_id)s and pg_try_advisory_xact_lock({}) "
            "returning load_id::text, to_char(started_at, 'YYYY-MM-DD HH24:MI:SS TZ')"
        ).format(_live_key(sql.SQL("load_id::text"))),
        {"domain": domain, "period": period, "load_id": load_id, "abandoned": ABANDONED},
    )


MONTH_LOCK_PURPOSE = "one load per (table, period) at a time"


def _lock_key(spec: DomainSpec, period: date) -> str:
    return f"{spec.qualified_table}:{period.isoformat()}"


def head_statements(
    spec: DomainSpec, period: date, mode: RefreshMode, load_id: uuid.UUID
) -> list[Statement]:
    """The statements of a load that come before its rows: they depend on the month and the
    mode, not on the workbook, so `Head` can run them while the workbook is read."""
    table = _ident(spec.schema_name, spec.table)
    statements = [
        Statement(
            "limit waiting for a concurrent load",
            sql.SQL(f"set local lock_timeout = '{LOCK_TIMEOUT}'"),
        ),
        Statement(
            MONTH_LOCK_PURPOSE,
            sql.SQL("select pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))"),
            {"lock_key": _lock_key(spec, period)},
        ),
        # in the transaction this time: the rows it marks (loads whose process ended) stay
        # locked until this load ends; a load whose connection dropped, recording its own
        # failure over the mark, waits at most 5 s for that (`_finish_failed`)
        _abandon(ABANDON_AGAIN_PURPOSE, spec.name, period, load_id),
    ]
    if mode == "delete_insert":
        statements.append(
            Statement(
                DELETE_PURPOSE,
                sql.SQL("delete from {} where {} = %(period)s").format(
                    table, _ident(spec.partition_column)
                ),
                {"period": period},
            )
        )
    if mode == "upsert":
        statements.append(
            Statement(
                "staging table for the upsert",
                sql.SQL(
                    "create temporary table {} (like {} including defaults) on commit drop"
                ).format(_ident(f"_wdh_stage_{spec.table}"), table),
            )
        )
    return statements


def _repeat_check(spec: DomainSpec, period: date, sha256: str, load_id: uuid.UUID) -> Statement:
    """The earlier load of `period` that appended the file with this sha256, if its rows
    are still in the table (see `_refuse_a_repeat`)."""
    query = sql.SQL(
        "select l.load_id::text || ' on ' || to_char(l.started_at, 'YYYY-MM-DD HH24:MI') "
        "from wdh.load_log l where l.domain = %(domain)s and l.period = %(period)s "
        "and l.status = 'succeeded' and l.load_id <> %(load_id)s "
        "and l.files @> %(file)s::jsonb and exists "
        "(select 1 from {} t where t.{} = %(period)s and t.load_id = l.load_id) "
        "order by l.finished_at desc limit 1"
    ).format(_ident(spec.schema_name, spec.table), _ident(spec.partition_column))
    file = json.dumps([{"sha256": sha256}])
    params = {"domain": spec.name, "period": period, "file": file, "load_id": load_id}
    return Statement(REPEAT_PURPOSE, query, params)


def _refuse_a_repeat(
    run: psycopg.Connection[Any] | psycopg.Cursor[Any], check: Statement, name: str, sha256: str
) -> None:
    """Refuse (InputError) an append of file `name` (`sha256`) when `check` (`_repeat_check`
    of it) finds an earlier succeeded load of the month that added its rows, still in the
    table: appending it again would hold each of them twice."""
    earlier = run.execute(check.query, check.params).fetchone()
    if earlier:
        domain, period = check.params["domain"], check.params["period"]
        raise InputError(
            f"{domain} {period:%Y-%m}: {name} (sha256 {sha256[:12]}) was loaded already "
            f"by load {earlier[0]} and its rows are still in the table; appending it again "
            "would duplicate them (to reload the month from it, use --mode delete_insert)"
        )


def refuse_appending_twice(
    url: str, spec: DomainSpec, period: date, name: str, sha256: str, load_id: uuid.UUID
) -> None:
    """`_refuse_a_repeat` before a load begins, to refuse it at once; the load asks again
    under its lock, before its commit (`_execute`), as two appends of one file may run at
    once."""
    from workdatahub.warehouse.db import connect

    try:
        with connect(url, autocommit=True) as conn:  # (a read: nothing to commit)
            _refuse_a_repeat(conn, _repeat_check(spec, period, sha256, load_id), name, sha256)
    except psycopg.Error as error:
        raise WarehouseError(f"{spec.name} {period:%Y-%m}: {one_line(error)}") from None


def copy_query(spec: DomainSpec, mode: RefreshMode) -> sql.Composed:
    """The COPY of the valid rows (`rows_for_copy`): into the table, or for an upsert into
    the staging table the head creates."""
    target = (
        _ident(f"_wdh_stage_{spec.table}")
        if mode == "upsert"
        else _ident(spec.schema_name, spec.table)
    )
    columns = [c.name for c in spec.loaded_columns] + LINEAGE
    return sql.SQL("copy {} ({}) from stdin with (format binary)").format(
        target, sql.SQL(", ").join(_ident(c) for c in columns)
    )


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
    started: float | None = None,
    refuse: str | None = None,
    headers: dict[str, str] | None = None,
    totals: dict[str, Any] | None = None,
) -> LoadPlan:
    load_id = load_id or uuid.uuid4()
    table = _ident(spec.schema_name, spec.table)
    columns = [c.name for c in spec.loaded_columns] + LINEAGE
    column_list = sql.SQL(", ").join(_ident(c) for c in columns)
    statements: list[Statement] = []  # a refused load does not touch the table
    if not refuse:
        statements = head_statements(spec, period, mode, load_id)
        statements.append(Statement(COPY_PURPOSE, copy_query(spec, mode), rows=valid.height))
    if mode == "upsert" and not refuse:
        staging = _ident(f"_wdh_stage_{spec.table}")
        key = sql.SQL(", ").join(_ident(k) for k in spec.key)
        updates = sql.SQL(", ").join(
            [
                *(
                    sql.SQL("{} = excluded.{}").format(_ident(c), _ident(c))
                    for c in columns
                    if c not in spec.key
                ),
                # an updated row was loaded now, as a new one is (the column's default)
                sql.SQL("{} = now()").format(_ident(LOADED_AT)),
            ]
        )
        statements.append(
            Statement(
                "insert new keys, update existing ones",
                sql.SQL(
                    "insert into {} ({cols}) select {cols} from {} "
                    "on conflict ({}) do update set {}"
                ).format(table, staging, key, updates, cols=column_list),
            )
        )
    statements.append(
        Statement(
            QUARANTINE_PURPOSE,
            sql.SQL("copy wdh.rejected_rows ({}) from stdin with (format csv)").format(
                sql.SQL(", ").join(_ident(c) for c in REJECT_COLUMNS)
            ),
            rows=rejects.height,
        )
    )
    counts = _log_counts(source_sheet, rows_read, rejected_rows.height, headers, totals)
    counted = f"{_COUNTED} where load_id = %(load_id)s"
    if refuse:
        record = Statement(
            RECORD_PURPOSE,
            sql.SQL(
                "update wdh.load_log set status = 'refused', message = %(message)s, " + counted
            ),
            {"message": refuse, **counts, "load_id": load_id},
        )
    else:
        record = Statement(
            RECORD_PURPOSE,
            sql.SQL(
                "update wdh.load_log set status = 'succeeded', rows_loaded = %(rows_loaded)s, "
                "rows_deleted = %(rows_deleted)s, " + counted
            ),
            {
                "rows_loaded": valid.height,
                "rows_deleted": Deferred("rows deleted above"),
                **counts,
                "load_id": load_id,
            },
        )
    statements.append(record)
    if mode == "append" and files and not refuse:
        # asked again under the month's lock, before the commit: an append of the same file
        # that committed while this one waited for the lock (the check before the load
        # could not see it)
        statements.append(_repeat_check(spec, period, files[0]["sha256"], load_id))
    return LoadPlan(
        load_id=load_id,
        domain=spec.name,
        period=period,
        mode=mode,
        table=spec.qualified_table,
        source_file=source_file,
        source_sheet=source_sheet,
        files=files,
        rows_read=rows_read,
        valid=valid,
        rejects=rejects,
        rejected_rows=rejected_rows,
        statements=statements,
        started=started,
        refused=refuse,
        headers=headers,
        totals=totals,
    )


def _csv(batch: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    batch.write_csv(
        buffer, include_header=False, null_value="", datetime_format="%Y-%m-%dT%H:%M:%S"
    )
    return buffer.getvalue()


class _Ahead:
    """`encode` each batch in a thread of its own, running ahead of whoever sends them, by
    at most `budget` bytes of encoded batches. The server parses and stores a batch (one
    core, the larger share of a load) while the thread encodes the next ones (polars, numpy
    and pyarrow release the GIL); `execute` starts it before the COPY, so the first batches
    are ready when the COPY begins. Iterating yields the batches in order (and re-raises an
    encoding error after the batches before it); `close` stops the thread. `sent`: the rows
    of the batches taken and done with (those before the one being taken)."""

    def __init__(self, batches: Iterator[Any], encode: Callable[[Any], bytes], budget: int):
        self._ready: deque[tuple[bytes, int]] = deque()
        self._held = 0
        self.sent = 0
        self._finished = self._stopped = False
        self._error: BaseException | None = None
        self._changed = Condition()
        self._thread = Thread(
            target=self._encode, args=(batches, encode, budget), name="wdh-copy", daemon=True
        )
        self._thread.start()

    def _encode(self, batches: Iterator[Any], encode: Callable[[Any], bytes], budget: int) -> None:
        try:
            for batch in batches:
                chunk = encode(batch)
                with self._changed:
                    self._changed.wait_for(lambda: self._stopped or self._held < budget)
                    if self._stopped:
                        return
                    self._ready.append((chunk, len(batch)))
                    self._held += len(chunk)
                    self._changed.notify_all()
        except BaseException as error:  # handed to the reader of the batches
            self._error = error
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._ready) or self._finished)
                if not self._ready:
                    if self._error is not None:
                        raise self._error
                    return
                chunk, rows = self._ready.popleft()
                self._held -= len(chunk)
                self._changed.notify_all()
            yield chunk
            self.sent += rows

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()


def _drained(ahead: _Ahead) -> Iterator[bytes]:
    """The batches of `ahead`, its thread stopped when the caller stops (or is done)."""
    try:
        yield from ahead
    finally:
        ahead.close()


def _csv_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    return _drained(_Ahead(frame.iter_slices(COPY_BATCH_ROWS), _csv, COPY_AHEAD_BYTES))


# -- COPY in Postgres' binary format ---------------------------------------------------------
# The valid rows go in binary: the server then skips parsing text into numeric, date and
# uuid, which is a third of a COPY's time here (500,000 rows: 3.2-5.4 s binary against
# 5.6-7.0 s CSV, the same rows). Each column's fields are encoded column-wise with numpy;
# a row is its fields joined, and a batch is the rows back to back. The join is a compiled
# loop (wdh_copy_rows, in the library of the sheet scanner): 500,000 rows encode in
# 0.61-0.73 s, against 1.36-1.59 s with pyarrow's binary_join_element_wise, which remains
# the way without a C compiler. tests/test_equivalence.py loads the same rows as CSV and as
# binary and compares the tables, and compares the two joins byte for byte.

_PG_EPOCH_DAYS = 10_957  # 1970-01-01 (polars dates) to 2000-01-01 (Postgres dates)
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
BINARY_TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class _Field:
    """One column's COPY fields, before they are joined into rows: fixed-width records
    (length prefix and value, one per row), the same record in every row (`constant`), or
    text (a length prefix, then the column's bytes: `text`, an Arrow large binary array).
    `nulls` marks the rows whose field is the length -1 alone (None: no row is null)."""

    records: np.ndarray | None = None  # fixed: a numpy record per row
    constant: bytes = b""
    text: pa.Array | None = None
    nulls: np.ndarray | None = None


def _numbers(series: pl.Series, physical: pl.DataType) -> tuple[np.ndarray, np.ndarray | None]:
    nulls = series.is_null().to_numpy() if series.null_count() else None
    return series.to_physical().fill_null(0).cast(physical).to_numpy(), nulls


def _text_field(series: pl.Series) -> _Field:
    payload = series.cast(pl.String).rechunk().to_arrow().cast(pa.large_binary())
    nulls = series.is_null().to_numpy() if series.null_count() else None
    return _Field(text=payload, nulls=nulls)


def _integer_field(series: pl.Series, size: int) -> _Field:
    values, nulls = _numbers(series, pl.Int64())
    record = np.dtype([("length", ">i4"), ("value", f">i{size}")])
    blobs = np.empty(len(values), dtype=record)
    blobs["length"], blobs["value"] = size, values
    return _Field(records=blobs, nulls=nulls)


def _date_field(series: pl.Series) -> _Field:
    days, nulls = _numbers(series, pl.Int32())
    record = np.dtype([("length", ">i4"), ("value", ">i4")])
    blobs = np.empty(len(days), dtype=record)
    blobs["length"], blobs["value"] = 4, days - _PG_EPOCH_DAYS
    return _Field(records=blobs, nulls=nulls)


def _numeric_field(series: pl.Series) -> _Field:
    """numeric(p, s) from polars' scaled integers: base-10000 digits, fixed width (Postgres
    strips the leading and trailing zero digits itself)."""
    dtype = series.dtype
    assert isinstance(dtype, pl.Decimal) and dtype.precision is not None
    scaled, nulls = _numbers(series, pl.Int64())
    fraction_groups = -(-dtype.scale // 4)
    integer_groups = max(1, -(-(dtype.precision - dtype.scale) // 4))
    digits = integer_groups + fraction_groups
    if dtype.precision - dtype.scale + 4 * fraction_groups > 19:  # must fit in 64 bits
        raise ValueError(f"numeric({dtype.precision},{dtype.scale}) is too wide for COPY here")
    magnitude = np.abs(scaled).astype(np.uint64) * np.uint64(
        10 ** (4 * fraction_groups - dtype.scale)
    )
    record = np.dtype(
        [("length", ">i4"), ("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">u2"),
         ("dscale", ">i2"), ("digits", ">i2", (digits,))]
    )  # fmt: skip
    blobs = np.empty(len(scaled), dtype=record)
    blobs["length"] = 8 + 2 * digits
    blobs["ndigits"], blobs["weight"], blobs["dscale"] = digits, integer_groups - 1, dtype.scale
    blobs["sign"] = np.where(scaled < 0, 0x4000, 0x0000)
    for i in range(digits):
        power = np.uint64(10_000 ** (digits - 1 - i))
        blobs["digits"][:, i] = (magnitude // power) % np.uint64(10_000)
    return _Field(records=blobs, nulls=nulls)


def _uuid_field(series: pl.Series) -> _Field:
    # the load id: one value per load
    values = series.unique()
    if values.len() != 1 or values[0] is None:
        raise ValueError("a load copies one load_id")
    return _Field(constant=(16).to_bytes(4, "big") + uuid.UUID(values[0]).bytes)


def _binary_field(series: pl.Series, sql_type: str) -> _Field:
    if sql_type == "text":
        return _text_field(series)
    if sql_type == "date":
        return _date_field(series)
    if sql_type.startswith("numeric"):
        return _numeric_field(series)
    if sql_type in ("bigint", "integer"):
        return _integer_field(series, 8 if sql_type == "bigint" else 4)
    if sql_type == "uuid":
        return _uuid_field(series)
    raise ValueError(f"no binary COPY encoding for {sql_type}")


_FIXED, _TEXT, _CONSTANT = 0, 1, 2  # scanner.c's FIELD_FIXED, FIELD_TEXT, FIELD_CONST


def _joined_compiled(lib: Any, fields: list[_Field], height: int) -> bytes:
    """The rows, joined by the compiled loop (wdh_copy_rows): one pass, one buffer."""
    kinds, widths, data, offsets, nulls = (np.zeros(len(fields), np.int64) for _ in range(5))
    keep: list[Any] = []  # the buffers the addresses point into, alive until the call returns
    size = height * 2
    for c, column in enumerate(fields):
        if column.text is not None:
            array = column.text
            _, offset_buffer, data_buffer = array.buffers()
            at = np.frombuffer(offset_buffer, np.int64)[array.offset : array.offset + height + 1]
            present = data_buffer is not None and data_buffer.size
            values = np.frombuffer(data_buffer, np.uint8) if present else np.zeros(1, np.uint8)
            kinds[c], data[c], offsets[c] = _TEXT, values.ctypes.data, at.ctypes.data
            lengths = np.diff(at)
            if column.nulls is not None:  # a null's span in Arrow may hold bytes: not sent
                lengths = lengths[~column.nulls]
            size += 4 * height + int(lengths.sum())
            keep += [at, values]
        elif column.records is not None:
            records = np.ascontiguousarray(column.records)
            kinds[c], widths[c], data[c] = _FIXED, records.dtype.itemsize, records.ctypes.data
            size += widths[c] * height
            keep.append(records)
        else:
            constant = np.frombuffer(column.constant, np.uint8)
            kinds[c], widths[c], data[c] = _CONSTANT, constant.size, constant.ctypes.data
            size += widths[c] * height
            keep.append(constant)
        if column.nulls is not None and column.nulls.any():
            mask = np.ascontiguousarray(column.nulls, np.uint8)
            nulls[c] = mask.ctypes.data
            keep.append(mask)
            if column.text is None:  # a null fixed field is its length alone
                size -= (int(widths[c]) - 4) * int(mask.sum())
    out = bytearray(size)
    target = np.frombuffer(out, np.uint8)
    written = lib.wdh_copy_rows(
        height, len(fields), *(a.ctypes.data for a in (kinds, widths, data, offsets, nulls)),
        target.ctypes.data, size,
    )  # fmt: skip
    if written != size:
        raise AssertionError(f"COPY rows: {written} bytes written, {size} expected")
    return out  # COPY takes it as it is (a copy into bytes would cost ~3 ms a batch)


_NOTHING = pa.scalar(b"", pa.large_binary())  # the separator when joining fields
_NULL_FIELD = b"\xff\xff\xff\xff"  # length -1


def _fixed_width(blobs: np.ndarray, nulls: np.ndarray | None) -> pa.Array:
    """Fixed-width fields (one numpy record each) as a binary array."""
    width = blobs.dtype.itemsize
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(blobs), [None, pa.py_buffer(blobs.tobytes())]
    ).cast(pa.large_binary())
    if nulls is None or not nulls.any():
        return fixed
    return pc.if_else(pa.array(nulls), pa.scalar(_NULL_FIELD, pa.large_binary()), fixed)


def _joined_arrow(fields: list[_Field], height: int) -> bytes:
    """The rows, joined with pyarrow (binary_join_element_wise): without the compiled loop."""
    count = len(fields).to_bytes(2, "big")
    pieces = [pa.repeat(pa.scalar(count, pa.large_binary()), height)]
    for column in fields:
        if column.text is not None:  # the length (-1 for null), then the bytes (null: none)
            lengths = pc.binary_length(column.text).fill_null(-1).to_numpy(zero_copy_only=False)
            pieces += [_fixed_width(lengths.astype(">i4").view("V4"), None), column.text]
        elif column.records is not None:
            pieces.append(_fixed_width(column.records, column.nulls))
        else:
            pieces.append(pa.repeat(pa.scalar(column.constant, pa.large_binary()), height))
    rows = pc.binary_join_element_wise(
        *pieces, _NOTHING, null_handling="replace", null_replacement=b""
    )
    _, offsets, data = rows.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64)[rows.offset : rows.offset + len(rows) + 1]
    return bytes(memoryview(data)[bounds[0] : bounds[-1]])  # no row is null: back to back


def _binary_rows(batch: pl.DataFrame, sql_types: list[str], compiled: bool = True) -> bytes:
    """The rows of `batch` in COPY's binary format (without the header and trailer): each
    column's fields encoded column-wise with numpy, then joined into rows by the compiled
    loop (scanner.c's wdh_copy_rows), or by pyarrow where there is no compiler."""
    if not batch.height:
        return b""
    fields = [_binary_field(batch.to_series(i), t) for i, t in enumerate(sql_types)]
    lib = native.library() if compiled else None
    if lib is not None:
        return _joined_compiled(lib, fields, batch.height)
    return _joined_arrow(fields, batch.height)


LINEAGE_TYPES = {"load_id": "uuid", "source_file": "text", "source_sheet": "text",
                 "source_row": "integer"}  # fmt: skip


def copy_types(spec: DomainSpec) -> list[str]:
    """SQL types of the columns `valid_rows_for_copy` gives, in order."""
    return [c.sql_type for c in spec.loaded_columns] + [LINEAGE_TYPES[c] for c in LINEAGE]


class _Progress:
    """A log line at most every few seconds while a large COPY runs."""

    EVERY_S = 5.0

    def __init__(self, domain: str, period: date, load_id: uuid.UUID) -> None:
        self.last = time.monotonic()
        self.log = get_logger(domain=domain, partition=f"{period:%Y-%m}", load_id=str(load_id))

    def send(self, copy: psycopg.Copy, ahead: _Ahead, total: int | None = None) -> None:
        """The binary COPY stream of `ahead`'s batches (`total` rows, if known)."""
        copy.write(BINARY_HEADER)
        for chunk in ahead:
            now = time.monotonic()
            if ahead.sent and now - self.last >= self.EVERY_S:
                self.last = now
                more = {"rows_total": total} if total is not None else {}
                self.log.info("copying", rows_sent=ahead.sent, **more)
            copy.write(chunk)
        copy.write(BINARY_TRAILER)


def binary_batches(frame: pl.DataFrame, sql_types: list[str]) -> Iterator[bytes]:
    """`frame`'s rows in COPY's binary format, one chunk per batch (encoded ahead)."""
    return _drained(_binary_ahead(frame.iter_slices(COPY_BATCH_ROWS), sql_types))


def _binary_ahead(batches: Iterator[pl.DataFrame], sql_types: list[str]) -> _Ahead:
    return _Ahead(batches, lambda batch: _binary_rows(batch, sql_types), COPY_AHEAD_BYTES)


def binary_chunks(frame: pl.DataFrame, sql_types: list[str]) -> Iterator[bytes]:
    """`frame` as a whole binary COPY stream: header, batches of rows, trailer."""
    yield BINARY_HEADER
    yield from binary_batches(frame, sql_types)
    yield BINARY_TRAILER


def rows_for_copy(
    valid: pl.DataFrame, spec: DomainSpec, load_id: uuid.UUID, source_file: str, source_sheet: str
) -> pl.DataFrame:
    """Valid rows as COPY sends them: the loaded columns, then the lineage."""
    return valid.select(
        *[pl.col(c.name) for c in spec.loaded_columns],
        pl.lit(str(load_id)).alias("load_id"),
        pl.lit(source_file).alias("source_file"),
        pl.lit(source_sheet).alias("source_sheet"),
        pl.col(ROW).cast(pl.Int32).alias("source_row"),
    )


def valid_rows_for_copy(plan: LoadPlan, spec: DomainSpec) -> pl.DataFrame:
    return rows_for_copy(plan.valid, spec, plan.load_id, plan.source_file, plan.source_sheet)


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


def _insert_log(conn: psycopg.Connection, started_ago: float, **values: Any) -> None:
    """One finished row of wdh.load_log (finished_at now, started `started_ago` s before),
    or the load's 'running' row, when it wrote one, finished so."""
    query = sql.SQL("{} on conflict (load_id) do update set {}").format(
        _log_insert(values, started_at=_STARTED_AGO, finished_at=sql.SQL("clock_timestamp()")),
        sql.SQL(", ").join(
            sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in [*values, "finished_at"]
            if c != "load_id"
        ),
    )
    conn.execute(query, {**values, "started_ago": max(started_ago, 0.0)})


def record_failed_read(
    url: str | None,
    spec: DomainSpec,
    period: date,
    mode: RefreshMode,
    files: list[dict[str, Any]],
    message: str,
    load_id: uuid.UUID,
    started: float,
) -> None:
    """A month that could not even be read (or whose run was stopped while it was read)
    still leaves a `failed` row in the load log, so `wdh history` shows the attempt, how long
    it ran (from `started`, the run's time.perf_counter()) and why, under the run's load id
    (its log lines carry it). Best effort: the input error is what matters."""
    try:
        url = url or database_url()  # (may start the embedded Postgres)
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            _insert_log(
                conn,
                time.perf_counter() - started,
                load_id=load_id,
                domain=spec.name,
                period=period,
                target_table=spec.qualified_table,
                mode=mode,
                status="failed",
                files=json.dumps(files, ensure_ascii=False),
                message=message[:2000],
            )
    except Exception as error:
        get_logger(domain=spec.name, partition=f"{period:%Y-%m}", load_id=str(load_id)).warning(
            "could not record the failed load", reason=message, error=one_line(error)
        )


def _finish_failed(url: str, plan: LoadPlan, message: str) -> str | None:
    """Mark the try failed, unless its transaction committed after all (the connection can
    drop after COMMIT reached the server, a stop can come as it is confirmed): then its row
    already says how it ended. (A row another load marked `abandoned`, in the moment
    between this load's connection ending and now, is this load's: failed, with its
    reason.) Returns the row's status now, None when the warehouse cannot be asked."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            # (a load that has this month's lock holds the row while it marks it abandoned:
            # not waited for to the end of that load; the row stays 'abandoned' then)
            conn.execute("set lock_timeout = '5s'")
            mark_failed(conn, plan, message)
            found = conn.execute(
                "select status from wdh.load_log where load_id = %s", [plan.load_id]
            ).fetchone()
            return None if found is None else str(found[0])
    except psycopg.Error:  # the database is gone; the row stays 'running' (a retry, or the
        return None  # next load, marks it)


def loaded_message(plan: LoadPlan) -> str:
    """What a stop that came once the load had committed leaves: the month loaded."""
    return (
        f"{plan.table} {plan.period:%Y-%m} was loaded before the stop ({plan.rows_to_load} "
        f"rows, load {plan.load_id})"
    )


def mark_failed(conn: psycopg.Connection, plan: LoadPlan, message: str) -> None:
    """The try's row of the load log: failed, with why and its counts (unless it ended
    otherwise: succeeded, refused)."""
    conn.execute(
        f"update wdh.load_log set status = 'failed', message = %(message)s, {_COUNTED} "
        "where load_id = %(load_id)s and status in ('running', 'abandoned')",
        {"message": message[:2000], **plan.counts, "load_id": plan.load_id},
    )


def _head_length(plan: LoadPlan) -> int:
    """How many of the plan's statements come before its rows (see `head_statements`;
    a refused plan has none)."""
    return next((i for i, s in enumerate(plan.statements) if s.purpose == COPY_PURPOSE), 0)


def _run_head(
    cur: psycopg.Cursor,
    statements: list[Statement],
    timings: dict[str, float],
    stop: Event | None = None,
) -> int:
    """Run the head statements in the load's transaction (until `stop` is set); returns the
    rows deleted."""
    rows_deleted = 0
    for statement in statements:
        if stop is not None and stop.is_set():
            break
        step = "delete" if statement.purpose == DELETE_PURPOSE else "lock"
        try:
            with timed(timings, step):
                cur.execute(statement.query, statement.params or None)
            if statement.purpose == ABANDON_AGAIN_PURPOSE:
                _warn_abandoned(statement.params, cur.fetchall())
        except psycopg.errors.LockNotAvailable as error:  # whose lock it waited for
            error.wdh_month_lock = statement.purpose == MONTH_LOCK_PURPOSE  # type: ignore[attr-defined]
            raise
        if step == "delete":
            rows_deleted = cur.rowcount
    return rows_deleted


def _join(thread: Thread) -> None:
    """`thread.join()` in steps, so that Ctrl-C is heard while waiting (a join without a
    timeout is not interrupted once polars has set its SIGINT handler to restart calls)."""
    while thread.is_alive():
        thread.join(0.1)


class _Aborted(Exception):
    """The rows stop coming: the load is being rolled back."""


class Feed:
    """Valid rows handed, part by part, from the thread that cleanses them to the COPY that
    `Head.stream` runs: `put` each part (rows as `rows_for_copy` gives them), then `end`;
    `abort` makes the COPY fail, so that its transaction is rolled back."""

    _END = object()

    def __init__(self) -> None:
        self._parts: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, rows: pl.DataFrame) -> None:
        self._parts.put(rows)

    def end(self) -> None:
        self._parts.put(self._END)

    def abort(self) -> None:
        self._parts.put(_Aborted("the load was rolled back before its rows were all sent"))

    def batches(self) -> Iterator[pl.DataFrame]:
        while True:
            part = self._parts.get()
            if part is self._END:
                return
            if isinstance(part, _Aborted):
                raise part
            yield from part.iter_slices(COPY_BATCH_ROWS)


class Head:
    """The start of a load's transaction, run on a thread while the workbook is still being
    read: connect, take the load's own lock and write its row of the load log
    (`opening_statements`), take the month's lock, delete the month's old rows
    (`head_statements`). At 500,000 rows the delete takes the server 0.7-1.3 s, now
    beside the read. With `stream`, the COPY of the valid rows follows in that transaction
    as they are cleansed. `execute` goes on in the same transaction (`take`), or the head is
    rolled back (`close`: an unreadable workbook, too many rejects, any error); a failure of
    the head itself (or of its COPY) is raised by `take`, as if `execute` had met it."""

    def __init__(
        self,
        spec: DomainSpec,
        period: date,
        mode: RefreshMode,
        load_id: uuid.UUID,
        url: str,
        files: list[dict[str, Any]],
        started: float,
    ) -> None:
        self.load_id = load_id
        self._spec, self._period, self._mode = spec, period, mode
        # the load's own lock and its 'running' row, before the transaction
        self.opening = opening_statements(
            load_id, spec.name, period, spec.qualified_table, mode, files
        )
        self._started = started
        self._opened = False
        self._open_done = Event()
        self.statements = head_statements(spec, period, mode, load_id)
        self._progress = _Progress(spec.name, period, load_id)
        self.timings: dict[str, float] = {}
        self.rows_deleted = 0
        self.rows_copied: int | None = None  # rows the streamed COPY loaded, once it ended
        self._conn: psycopg.Connection | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._stop = Event()
        self._feed: Feed | None = None
        self._copier: Thread | None = None
        self._thread = Thread(target=self._run, args=(url,), name="wdh-load-head", daemon=True)
        self._thread.start()

    @property
    def streams(self) -> bool:
        return self._feed is not None

    def lasting_failure(self) -> WdhError | None:
        """What the head met before the load began, once it has, when trying again would
        not help: the warehouse not matching this code (it looks first), or a connection it
        could not open or begin with for a reason that lasts (a wrong password, no such
        database, no load log). The load can stop at its first part instead of cleansing
        the rest, and (the latter) need not try to record itself where it could not begin."""
        error = self._error
        if isinstance(error, contract.ContractError):
            return error
        if (
            isinstance(error, psycopg.Error)
            and self._open_done.is_set()
            and not self._opened
            and not is_transient(error)
        ):
            return LoadNotStarted(cannot_start(self._spec.qualified_table, self._period, error))
        return None

    def stream(self, query: sql.Composed, sql_types: list[str]) -> Feed:
        """Run `query`, the COPY of the valid rows, in this transaction once the head
        statements are done, fed by the returned `Feed` (its parts encoded ahead, as
        `execute` encodes them): the server stores the first rows while the next ones are
        still cleansed."""
        if self._feed is not None:
            raise ValueError("a head streams one COPY")
        self._feed = Feed()
        self._copier = Thread(
            target=self._copy, args=(query, self._feed, sql_types), name="wdh-copy", daemon=True
        )
        self._copier.start()
        return self._feed

    def _copy(self, query: sql.Composed, feed: Feed, sql_types: list[str]) -> None:
        self._thread.join()
        if self._error is not None or self._stop.is_set() or self._conn is None:
            return
        # the COPY begins with the first rows: until then (the read) the session is idle in
        # its transaction, as without a stream
        batches = feed.batches()
        try:
            first = next(batches, None)
        except _Aborted:
            return
        if first is None:
            self.rows_copied = 0
            return
        ahead = _binary_ahead(itertools.chain([first], batches), sql_types)
        try:
            with self._conn.cursor() as cur:
                with timed(self.timings, "copy"), cur.copy(query) as copy:
                    self._progress.send(copy, ahead)
                self.rows_copied = cur.rowcount
        except BaseException as error:  # raised again by `take`
            self._error = error
            feed.abort()  # the encoder may wait for parts that are never sent
        finally:
            ahead.close()

    def _run(self, url: str) -> None:
        try:
            try:
                with timed(self.timings, "connect"):
                    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
                self._conn = conn
                if not self._stop.is_set():
                    contract.check(conn, self._spec, self._mode)  # (before anything is written)
                    _open_log(conn, self.opening, time.perf_counter() - self._started)
                    self._opened = True
                conn.autocommit = False  # the transaction begins with the next statement
            except BaseException as error:
                self._error = error  # (before `opened()` returns: `lasting_failure` reads it)
                raise
            finally:
                self._open_done.set()
            with conn.cursor() as cur:
                self.rows_deleted = _run_head(cur, self.statements, self.timings, self._stop)
        except BaseException as error:  # raised again by `take`
            self._error = error

    def opened(self) -> bool:
        """Whether the load's own lock is held and its 'running' row written (waits until
        the head has tried)."""
        while not self._open_done.wait(0.1):  # (in steps: Ctrl-C is heard meanwhile)
            pass
        return self._opened

    def take(self, plan: LoadPlan) -> psycopg.Connection:
        """The connection, its transaction open with the head run (and the streamed COPY
        ended: every part was put by now), once the threads are done; raises what the head
        met."""
        if self._taken or plan.load_id != self.load_id:
            raise ValueError("a head serves the one load it was started for, once")
        self._taken = True
        _join(self._thread)
        if self._feed is not None and self._copier is not None:
            self._feed.end()
            _join(self._copier)
        if self._error is not None:
            error, self._error = self._error, None
            self._discard()
            raise error
        assert self._conn is not None
        conn, self._conn = self._conn, None
        return conn

    def close(self) -> None:
        """Roll the head back (if not taken): the table is as it was. Returns promptly even
        while the head waits for the month's lock (held by another load): the statement it
        is in is cancelled and it runs no further one."""
        self._taken = True
        self._stop.set()
        if self._feed is not None:
            self._feed.abort()
        threads = [t for t in (self._thread, self._copier) if t is not None]
        deadline = time.monotonic() + CLOSE_WAIT_S
        while any(t.is_alive() for t in threads):
            conn = self._conn
            if conn is not None:  # (a cancel between two statements is lost: sent again)
                left = min(max(deadline - time.monotonic(), 1.0), CONNECT_TIMEOUT_S)
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe(timeout=left)
            for thread in threads:
                thread.join(0.1)
            if time.monotonic() > deadline and any(t.is_alive() for t in threads):
                # the server does not answer (hung, or cut off): the connection is closed
                # once its threads are done, or ends with the process; the server rolls
                # the transaction back either way, as it does for a killed load
                self._progress.log.warning(
                    f"the warehouse did not answer the cancel within {CLOSE_WAIT_S:g} s; the "
                    "load goes on without waiting (nothing was committed)"
                )
                Thread(
                    target=self._discard_after, args=(threads,), name="wdh-head-end", daemon=True
                ).start()
                return
        self._discard()

    def _discard_after(self, threads: list[Thread]) -> None:
        for thread in threads:
            thread.join()
        self._discard()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # closing rolls back an open transaction


def execute(
    plan: LoadPlan,
    spec: DomainSpec,
    url: str,
    *,
    head: Head | None = None,
) -> LoadOutcome:
    """Run the plan in one transaction (begun by `head`, when given). A refused plan
    (`plan.refused`: reject threshold exceeded) writes only the rejects and its 'refused'
    load-log row: the table is not touched."""
    timings: dict[str, float] = {}
    copies = any(s.purpose == COPY_PURPOSE for s in plan.statements)
    if head is not None and head.streams:
        copies = False  # the head copies the rows
    ahead = None
    if copies:
        rows = valid_rows_for_copy(plan, spec)
        ahead = _binary_ahead(rows.iter_slices(COPY_BATCH_ROWS), copy_types(spec))
    log = None
    try:
        log = _own_log(plan, url, timings, head)
        if head is not None and plan.refused:
            head.close()  # a refused load leaves the table untouched
            head = None
        return _execute(plan, spec, url, timings, ahead, head)
    finally:
        if log is not None:
            log.close()  # (the load's own lock goes with it)
        if ahead is not None:
            ahead.close()
        if head is not None:
            head.close()


def _own_log(
    plan: LoadPlan, url: str, timings: dict[str, float], head: Head | None
) -> psycopg.Connection | None:
    """The load's own lock and its 'running' row are taken and written by the head, on its
    connection, before the workbook was read. Else (no head, or one that could not, or a
    refused load's, about to be rolled back) now: on the connection returned, to be kept
    until the load ends, taken before the head's connection ends (the lock is shared), so
    that it is never let go."""
    if head is not None:
        opened = head.opened()
        failure = head.lasting_failure()  # (found after the last part was sent: a small sheet)
        if failure is not None and not failure.recordable:
            raise failure  # no row in the load log of a warehouse the load could not begin in
        if opened and not plan.refused:
            return None
    log = None
    try:
        with timed(timings, "start"):
            log = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            ago = time.perf_counter() - plan.started if plan.started is not None else 0.0
            _open_log(log, plan.opening, ago)
    except psycopg.Error as error:
        if log is not None:
            log.close()
        raise WarehouseError(cannot_start(plan.table, plan.period, error)) from None
    return log


class LoadNotStarted(WarehouseError):
    """The load's connection could not be opened, or its row of the load log written, for a
    reason that lasts: there is nowhere to record it."""

    recordable = False


def cannot_start(table: str, period: date, error: psycopg.Error) -> str:
    return f"{table} {period:%Y-%m}: cannot start the load: {one_line(error)}" + (
        unmigrated_hint(error)
    )


def _open_log(conn: psycopg.Connection, opening: list[Statement], started_ago: float) -> None:
    """Run a load's `opening_statements` on `conn` (autocommit); an earlier load of the
    month it marks abandoned is a warning (the operator may be about to look for it)."""
    for statement in opening:
        bound = statement.bound(started_ago=max(started_ago, 0.0)) or None
        done = conn.execute(statement.query, bound)
        if statement.purpose == ABANDON_PURPOSE and bound:
            _warn_abandoned(bound, done.fetchall())


def _warn_abandoned(bound: Mapping[str, Any], marked: list[tuple[Any, ...]]) -> None:
    """Each load of the month just marked abandoned is a warning (the operator may be about
    to look for it)."""
    for earlier, started in marked:
        get_logger(
            domain=bound["domain"], partition=f"{bound['period']:%Y-%m}",
            load_id=str(bound["load_id"]),
        ).warning(
            f"an earlier load of this month marked abandoned: {ABANDONED}",
            abandoned_load_id=earlier, abandoned_started_at=started,
        )  # fmt: skip


def _execute(
    plan: LoadPlan,
    spec: DomainSpec,
    url: str,
    timings: dict[str, float],
    ahead: _Ahead | None,
    head: Head | None,
) -> LoadOutcome:
    rows_deleted = 0
    copied: int | None = None  # rows the head's COPY loaded
    try:
        if head is not None:
            conn = head.take(plan)
            rows_deleted, copied = head.rows_deleted, head.rows_copied
            timings.update(
                {
                    f"{step} ({'while cleansing' if step == 'copy' else 'while reading'})": s
                    for step, s in head.timings.items()
                }
            )
        else:
            conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
        with conn, conn.cursor() as cur:  # one transaction: committed as the block ends
            start = _head_length(plan)
            if head is None:
                rows_deleted = _run_head(cur, plan.statements[:start], timings)
            for statement in plan.statements[start:]:
                if statement.purpose == COPY_PURPOSE and copied is not None:
                    if copied != plan.rows_to_load:  # never seen: the parts and the plan differ
                        raise psycopg.DataError(
                            f"{copied} rows copied while cleansing, {plan.rows_to_load} planned"
                        )
                elif statement.purpose == COPY_PURPOSE:
                    assert ahead is not None
                    with timed(timings, "copy"), cur.copy(statement.query) as copy:
                        progress = _Progress(plan.domain, plan.period, plan.load_id)
                        progress.send(copy, ahead, plan.rows_to_load)
                elif statement.purpose == QUARANTINE_PURPOSE:
                    with timed(timings, "quarantine"):
                        _write_rejects(cur, plan, statement)
                elif statement.purpose == REPEAT_PURPOSE:
                    file = plan.files[0]
                    name = Path(file["path"]).name
                    _refuse_a_repeat(cur, statement, name, file["sha256"])
                elif statement.purpose == RECORD_PURPOSE:
                    with timed(timings, "audit"):
                        cur.execute(statement.query, statement.bound(rows_deleted=rows_deleted))
                else:
                    with timed(timings, "upsert"):
                        cur.execute(statement.query, statement.params or None)
            with timed(timings, "commit"):
                conn.commit()
    except psycopg.errors.LockNotAvailable as error:
        message = (
            f"{plan.table} {plan.period:%Y-%m}: another load holds this month; try again later"
            if getattr(error, "wdh_month_lock", False)
            else f"{plan.table} {plan.period:%Y-%m}: waited {LOCK_TIMEOUT} for a lock another "
            "session holds on the table (an open transaction or a LOCK TABLE: see "
            "pg_stat_activity); table unchanged, try again later"
        )
        _finish_failed(url, plan, message)
        raise LoadBusyError(message) from None
    except psycopg.errors.UniqueViolation as error:  # an append of rows the table holds
        message = _already_in_the_table(plan, error)
        _finish_failed(url, plan, message)
        raise InputError(message) from None
    except psycopg.Error as error:
        message = (
            f"{plan.table} {plan.period:%Y-%m}: load failed and was rolled back, "
            f"table unchanged: {one_line(error)}"
        )
        _finish_failed(url, plan, message)
        raise WarehouseError(message) from None
    except WdhError as error:  # refused under the lock: rolled back
        _finish_failed(url, plan, error.message)
        raise
    except BaseException as error:
        if _finish_failed(url, plan, f"interrupted: {one_line(error)}") == "succeeded":
            # the stop came as COMMIT was confirmed (psycopg cancels the wait and raises
            # the stop, the server having committed): the month is loaded, and says so
            raise loaded_before_stopped(error, loaded_message(plan)) from None
        raise
    if plan.refused:
        return LoadOutcome(plan.load_id, "refused", 0, 0, plan.rows_rejected, plan.refused, timings)
    return LoadOutcome(
        plan.load_id, "succeeded", plan.rows_to_load, rows_deleted, plan.rows_rejected, "", timings
    )


_KEY_DETAIL = re.compile(r"Key \((?P<columns>.*)\)=\((?P<values>.*)\) already exists\.?")


def _already_in_the_table(plan: LoadPlan, error: psycopg.errors.UniqueViolation) -> str:
    """What an operator is told when rows of the workbook repeat a key the table already
    holds (only an append can: a replaced month has no rows left, and the workbook's own
    repeats are rejects): the key, and the Excel row that holds it when it can be told."""
    found = _KEY_DETAIL.fullmatch((error.diag.message_detail or "").strip())
    key = f"key ({found['columns']}) = ({found['values']})" if found else "a key"
    where = f"{plan.source_file} [{plan.source_sheet}]"
    if found:
        columns = [c.strip().strip('"') for c in found["columns"].split(",")]
        values = [v.strip() for v in found["values"].split(",")]
        if len(columns) == len(values) and set(columns) <= set(plan.valid.columns):
            match = plan.valid.filter(
                pl.all_horizontal(
                    pl.col(c).cast(pl.String) == v for c, v in zip(columns, values, strict=True)
                )
            )
            if match.height:
                where += f" row {match[ROW][0]}"
    return (
        f"{plan.table} {plan.period:%Y-%m}: {where}: {key} is already in the table; an append "
        "adds rows (to update them load with --mode upsert, to replace the month with "
        "--mode delete_insert); table unchanged"
    )


def _write_rejects(cur: psycopg.Cursor, plan: LoadPlan, statement: Statement) -> None:
    if plan.rejects.height == 0:
        return
    with cur.copy(statement.query) as copy:
        for chunk in _csv_chunks(reject_rows_for_copy(plan)):
            copy.write(chunk)
