"""One partition of one domain: discover → read → cleanse → validate → plan → load.

The `wdh` CLI and the Dagster assets both call these functions; neither holds business
logic of its own.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import psycopg

from workdatahub import quality
from workdatahub.cleansing.cleanse import cleanse
from workdatahub.errors import (
    ConfigError,
    InputError,
    RejectThresholdExceeded,
    WarehouseError,
    WdhError,
    loaded_before_stopped,
    too_many_rejects,
)
from workdatahub.excel.reader import SheetData, read_sheet
from workdatahub.logs import get_logger
from workdatahub.reconcile import differences, totals_check, unchecked
from workdatahub.settings import get_settings, one_line
from workdatahub.sources.discovery import DiscoveryResult, SourceFile, discover
from workdatahub.sources.spec import DomainSpec, RefreshMode
from workdatahub.warehouse.db import CONNECT_TIMEOUT_S, database_url, is_transient
from workdatahub.warehouse.loader import (
    Head,
    LoadOutcome,
    LoadPlan,
    build_plan,
    copy_query,
    copy_types,
    execute,
    loaded_message,
    mark_failed,
    record_failed_read,
    refuse_appending_twice,
    rows_for_copy,
    timed,
)

if TYPE_CHECKING:
    from workdatahub.validation.schema import Validated

# waits between tries of a load whose connection failed: 0.5 s, 1 s, 2 s, … at most 8 s
RETRY_FIRST_WAIT_S = 0.5
RETRY_MAX_WAIT_S = 8.0


@dataclass
class CheckResult:
    """A workbook read, cleansed and validated: no database involved."""

    domain: str
    file: Path
    sheet: SheetData
    validated: Validated
    timings: dict[str, float] = field(default_factory=dict)
    # the sheet's totals row against the rows read (reconcile.totals_check), when it has one
    totals: dict[str, dict[str, Any]] | None = None

    @property
    def rows_read(self) -> int:
        return self.sheet.rows_read

    @property
    def reject_rate(self) -> float:
        return self.validated.rows_rejected / self.rows_read if self.rows_read else 0.0

    def refused_by(self, max_reject_rate: float) -> str | None:
        """Why a load of these rows is refused at this threshold (too many rejected), or
        None when it is not."""
        if self.reject_rate <= max_reject_rate:
            return None
        return too_many_rejects(self.validated.rows_rejected, self.rows_read, max_reject_rate)

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "file": str(self.file),
            "sheet": self.sheet.sheet,
            "rows_read": self.rows_read,
            "rows_valid": self.validated.rows_valid,
            "rows_rejected": self.validated.rows_rejected,
            "rejects": [
                {
                    "row": r["row"],
                    "column": r["column"],
                    "value": r["value"],
                    "reason": r["reason"],
                    "header": self.sheet.columns.get(r["column"]),
                }
                for r in self.validated.rejects.iter_rows(named=True)
            ],
            "totals": self.totals,
        }


@dataclass
class PartitionResult:
    domain: str
    period: date
    discovery: DiscoveryResult
    check: CheckResult
    plan: LoadPlan
    outcome: LoadOutcome | None  # None for plan-only
    threshold_exceeded: bool
    max_reject_rate: float
    timings: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)  # wdh.data_quality_metrics row

    @property
    def file(self) -> SourceFile:
        return self.discovery.files[0]

    def summary(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "period": f"{self.period:%Y-%m}",
            "load_id": str(self.plan.load_id),
            "status": self.outcome.status if self.outcome else "planned",
            "files": self.plan.files,
            "sheet": self.check.sheet.sheet,
            "rows_read": self.check.rows_read,
            "rows_loaded": self.outcome.rows_loaded if self.outcome else 0,
            "rows_to_load": self.plan.rows_to_load,
            "rows_rejected": self.plan.rows_rejected,
            "rows_deleted": self.outcome.rows_deleted if self.outcome else 0,
            "reject_rate": round(self.check.reject_rate, 6),
            "max_reject_rate": self.max_reject_rate,
            "threshold_exceeded": self.threshold_exceeded,
            "totals_off": differences(self.check.totals),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


# A sheet whose valid rows are loaded as they come (`check_file`'s `on_valid`) is cleansed
# and validated in parts, in order, and the COPY of a part's rows runs while the next parts
# are cleansed. The parts grow: FIRST_PART_ROWS, then each PART_GROWTH times the one
# before, the last taking the rest. A small first part starts the COPY soon after the read
# (~0.1 s after it; the server's COPY, 130,000-160,000 rows/s here, is the slowest stage),
# and as cleansing and validation run faster than that (~240,000 rows/s beside the COPY at
# 500,000 rows), the growing parts soon arrive faster than the COPY takes them, while each
# part's fixed cost (~17 ms of cleansing, ~10 ms of validation) is paid a handful of
# times (6 parts at 500,000 rows, 3 at 50,000), not once per 10,000 rows.
FIRST_PART_ROWS = 10_000
PART_GROWTH = 2


def part_sizes(rows: int) -> list[int]:
    """The rows of each part of a streamed sheet of `rows` rows (a rest smaller than
    FIRST_PART_ROWS joins the part before it)."""
    sizes: list[int] = []
    size = max(FIRST_PART_ROWS, 1)
    while rows > 0:
        take = rows if rows - size < FIRST_PART_ROWS else size
        sizes.append(take)
        rows -= take
        size *= PART_GROWTH
    return sizes or [0]


def check_file(
    spec: DomainSpec,
    path: Path,
    period: date | None = None,
    on_valid: Callable[[pl.DataFrame, SheetData], None] | None = None,
    timings: dict[str, float] | None = None,
) -> CheckResult:
    """Read, cleanse and validate one workbook (the period check applies when given).
    `on_valid`, when given, receives the valid rows part by part, in order, as soon as each
    part is validated (the rows of a part, cleansed and validated on their own, are those
    of the whole sheet: cleansing is row by row and a key seen in an earlier part makes a
    duplicate). `timings`, when given, gets the stages' times as they end (a caller
    stopped meanwhile learns how far it got)."""
    timings = {} if timings is None else timings
    with timed(timings, "read"):
        sheet = read_sheet(path, spec)
    # Pandera (and pandas behind it) take seconds to import: only once the file is readable
    from workdatahub.validation.schema import Validated, validate

    raw = sheet.frame
    # the raw text is not needed past cleansing; at 500,000 rows it is hundreds of MB
    sheet.frame = raw.clear()
    sizes = [raw.height] if on_valid is None else part_sizes(raw.height)
    parts: list[Validated] = []
    seen: pl.DataFrame | None = None
    offset = 0
    for size in sizes:
        part = raw.slice(offset, size)
        offset += size
        with timed(timings, "cleanse"):
            cleansed = cleanse(part, spec, period)
        with timed(timings, "validate"):
            validated = validate(cleansed, spec, seen)
            if spec.key and len(sizes) > 1:
                keys = validated.valid.select(spec.key)
                seen = keys if seen is None else pl.concat([seen, keys])
        del cleansed
        parts.append(validated)
        if on_valid is not None:
            on_valid(validated.valid, sheet)
    whole = Validated.concat(parts)
    with timed(timings, "validate"):
        totals = totals_check(spec, sheet, whole.valid, whole.rejected_rows)
    return CheckResult(spec.name, path, sheet, whole, timings, totals)


def cleaned_frame(result: CheckResult, spec: DomainSpec) -> pl.DataFrame:
    """Valid rows with the target column names (what `wdh check --out` writes)."""
    return result.validated.valid.select([c.name for c in spec.loaded_columns])


def run_partition(
    spec: DomainSpec,
    period: date,
    *,
    data_dir: Path,
    url: str | None = None,
    mode: RefreshMode | None = None,
    plan_only: bool = False,
    max_reject_rate: float | None = None,
) -> PartitionResult:
    """Load one month of one domain. Raises `RejectThresholdExceeded` (after quarantining
    the rejects and logging a refused load) when too many rows are rejected."""
    with contextlib.ExitStack() as cleanup:  # rolls back a load begun early, if still open
        return _run_partition(
            spec, period, data_dir, url, mode or spec.refresh, plan_only, max_reject_rate, cleanup
        )


def _run_partition(
    spec: DomainSpec,
    period: date,
    data_dir: Path,
    url: str | None,
    mode: RefreshMode,
    plan_only: bool,
    max_reject_rate: float | None,
    cleanup: contextlib.ExitStack,
) -> PartitionResult:
    started = time.perf_counter()
    limit = spec.max_reject_rate if max_reject_rate is None else max_reject_rate
    if mode == "upsert" and not spec.key:  # (data_sources.yml cannot say so; an override can)
        raise ConfigError(
            f"{spec.name}: refresh mode upsert needs a `key` in data_sources.yml, and "
            f"{spec.name} has none; load it with delete_insert or append"
        )
    load_id = uuid.uuid4()
    log = get_logger(domain=spec.name, partition=f"{period:%Y-%m}", load_id=str(load_id))
    timings: dict[str, float] = {}
    stages: dict[str, float] = {}  # check_file's, as they end
    found: DiscoveryResult | None = None
    head: Head | None = None
    # the warehouse's settings before anything is read (a production run without
    # WDH_DATABASE_URL says so at once, not after reading the month); a plan touches none,
    # even given a URL
    warehouse = None if plan_only else (url or database_url())
    try:
        with timed(timings, "discover"):
            found = discover(spec, period, data_dir)
        source = found.files[0]
        log.info(
            "discovered", file=str(source.path), version=source.version, sha256=source.sha256[:12]
        )
        for refused in (i for i in found.ignored if i.refused):  # (not what the rules leave)
            log.warning(f"not read: {refused.path} ({refused.reason})")
        try:
            source_file = str(source.path.relative_to(data_dir))
        except ValueError:
            source_file = str(source.path)
        on_valid = None
        if warehouse is not None and mode == "append":
            refuse_appending_twice(
                warehouse, spec, period, source.path.name, source.sha256, load_id
            )
        files = [{**source.to_json(data_dir), "size": source.size}]
        if warehouse is not None:  # the load's log row and transaction, beside the read
            head = Head(spec, period, mode, load_id, warehouse, files, started)
            cleanup.callback(head.close)
            on_valid = _streamed(head, spec, mode, load_id, source_file)
        log.info("reading", sheet=str(spec.sheet), megabytes=round(source.size / 1e6, 3))
        check = check_file(spec, source.path, period, on_valid, timings=stages)
        source.check_unchanged()  # the rows read are the file hashed (before anything commits)
    except BaseException as error:  # (the cleanup closes the head: the month's old rows stay)
        # an unreadable workbook, or a run stopped while reading (Ctrl-C, a stop from Dagster
        # or `kill`): the load never began, and the load log says so; so it does for any
        # other failure once the load's 'running' row is written (the head writes it)
        stopped = not isinstance(error, Exception)
        began = stopped or isinstance(error, InputError) or head is not None
        # (not where the load could not begin, or the load log may not take the row)
        unrecordable = isinstance(error, WdhError) and not error.recordable
        if warehouse is not None and began and not unrecordable:
            files = [f.to_json(data_dir) for f in found.files] if found else []
            # once cleansing has begun, the valid rows stream into the load's transaction
            phase = "cleansing and loading" if "cleanse" in stages else "reading"
            if stopped:
                reason = f"stopped while {phase}: {one_line(error)}"
            elif isinstance(error, WdhError):
                reason = error.message
            else:
                reason = f"failed while {phase}: {one_line(error)}"
            record_failed_read(warehouse, spec, period, mode, files, reason, load_id, started)
        raise
    timings.update(check.timings)
    log.info(
        "validated",
        rows_read=check.rows_read,
        rows_valid=check.validated.rows_valid,
        rows_rejected=check.validated.rows_rejected,
        blank_rows=check.sheet.skipped_blank,
        totals_rows=check.sheet.skipped_totals,
        footer_rows=check.sheet.skipped_footer,
    )
    off = differences(check.totals)
    if off:  # the load goes on: the rows are what the sheet holds; its own sum disagrees
        log.warning(
            f"{spec.name} {period:%Y-%m}: the sheet's totals row does not add up: " + "; ".join(off)
        )
    for reason in unchecked(check.totals):
        log.info(f"{spec.name} {period:%Y-%m}: the sheet's totals row is not checked: {reason}")
    why = check.refused_by(limit)
    refuse = (
        f"{spec.name} {period:%Y-%m}: {why}; table unchanged, rejects quarantined "
        f"(see `wdh rejects {spec.name} --period {period:%Y-%m}`)"
        if why
        else None
    )
    with timed(timings, "plan"):
        plan = build_plan(
            spec,
            period,
            mode=mode,
            source_file=source_file,
            source_sheet=check.sheet.sheet,
            files=files,
            rows_read=check.rows_read,
            valid=check.validated.valid,
            rejects=check.validated.rejects,
            rejected_rows=check.validated.rejected_rows,
            load_id=load_id,
            started=started,
            refuse=refuse,
            headers=dict(check.sheet.columns),
            totals=check.totals,
        )
    exceeded = refuse is not None
    result = PartitionResult(spec.name, period, found, check, plan, None, exceeded, limit, timings)
    if plan_only:
        if not plan.refused:
            plan.closing = quality.statement(result, spec)
        return result
    assert warehouse is not None  # (not a plan)
    with timed(timings, "load"):
        result.plan, result.outcome = execute_with_retry(plan, spec, warehouse, head=head)
    log = log.bind(load_id=str(result.plan.load_id))
    (log.info if not refuse else log.warning)(
        "loaded" if not refuse else "refused",
        rows_loaded=result.outcome.rows_loaded,
        rows_deleted=result.outcome.rows_deleted,
        rows_rejected=result.outcome.rows_rejected,
        seconds=round(sum(timings.values()), 3),
    )
    if refuse:
        raise RejectThresholdExceeded(refuse, result.summary())
    try:
        result.quality = quality.record(warehouse, result, spec)
    except psycopg.Error as error:  # the month is loaded; missing metrics must not undo that
        log.warning("quality metrics not recorded", error=one_line(error))
    except BaseException as error:  # a stop (Ctrl-C, SIGTERM) once the month is loaded
        raise loaded_before_stopped(error, loaded_message(result.plan)) from None
    return result


def _streamed(
    head: Head, spec: DomainSpec, mode: RefreshMode, load_id: uuid.UUID, source_file: str
) -> Callable[[pl.DataFrame, SheetData], None]:
    """Where `check_file` sends each part's valid rows: the head's COPY, which loads them
    while the next parts are cleansed (a refused or failed load rolls them back)."""
    feed = head.stream(copy_query(spec, mode), copy_types(spec))

    def send(valid: pl.DataFrame, sheet: SheetData) -> None:
        failure = head.lasting_failure()
        if failure is not None:  # the warehouse cannot take these rows: no use cleansing on
            raise failure from None
        feed.put(rows_for_copy(valid, spec, load_id, source_file, sheet.sheet))

    return send


def execute_with_retry(
    plan: LoadPlan,
    spec: DomainSpec,
    url: str,
    *,
    head: Head | None = None,
) -> tuple[LoadPlan, LoadOutcome]:
    """`execute` the plan; when the connection is refused or drops (a server restart, a
    network blip), try again after 0.5 s, 1 s, 2 s, … up to `WDH_LOAD_ATTEMPTS` tries.

    Trying again is safe because a load is one transaction: a failed try changed nothing.
    Each try gets its own load id, so the load log shows the failed try and the one that
    succeeded. Data errors, a busy month and other failures are raised at once. Returns the
    plan of the try that took effect, and its outcome."""
    log = get_logger(domain=spec.name, partition=f"{plan.period:%Y-%m}")
    attempts = get_settings().load_attempts
    wait = RETRY_FIRST_WAIT_S
    earlier: list[tuple[LoadPlan, str]] = []  # the tries before, and why each failed
    for attempt in range(1, attempts + 1):
        try:
            if earlier:
                # the connection can drop after COMMIT reached the server but before its
                # answer came back: then a try did take effect, and loading again would
                # double an append
                done = _committed_after_all(earlier, url)
                if done is not None:
                    log.warning(
                        "load committed; its confirmation was lost with the connection",
                        load_id=str(done[0].load_id),
                    )
                    return done
            try:
                return plan, execute(plan, spec, url, head=head)
            finally:
                head = None  # a try after this one begins its own transaction
        except WarehouseError as error:
            if attempt == attempts or not is_transient(error):
                raise
            log.warning(
                "load retried",
                load_id=str(plan.load_id),
                attempt=attempt,
                attempts=attempts,
                wait_s=wait,
                reason=error.message,
            )
            time.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_WAIT_S)
            earlier.append((plan, error.message))
            plan = _next_try(plan, spec)
    raise AssertionError("unreachable")


def _next_try(plan: LoadPlan, spec: DomainSpec) -> LoadPlan:
    """The same load under a new load id (the failed try keeps its load-log row)."""
    return build_plan(
        spec,
        plan.period,
        mode=plan.mode,
        source_file=plan.source_file,
        source_sheet=plan.source_sheet,
        files=plan.files,
        rows_read=plan.rows_read,
        valid=plan.valid,
        rejects=plan.rejects,
        rejected_rows=plan.rejected_rows,
        refuse=plan.refused,
        headers=plan.headers,
        totals=plan.totals,
    )  # (its log row starts when the try does: the tries of a run stay in order)


def _committed_after_all(
    earlier: list[tuple[LoadPlan, str]], url: str
) -> tuple[LoadPlan, LoadOutcome] | None:
    """The earlier try whose transaction committed after all: its load-log row, written in
    that transaction, says how it ended (a dropped connection only marks 'running' rows
    failed). When none did, each earlier try's row says it failed, and why: a try that
    lost the server could not say so then (its row stayed 'running', or this load's next
    try would have marked it 'abandoned')."""
    tries = [plan for plan, _ in earlier]
    current = tries[-1]
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            found = conn.execute(
                "select load_id, status, rows_deleted from wdh.load_log "
                "where load_id = any(%s) and status in ('succeeded', 'refused') limit 1",
                [[t.load_id for t in tries]],
            ).fetchone()
            if found is None:
                for plan, why in earlier:
                    mark_failed(conn, plan, why)
                return None
            conn.execute(
                "update wdh.load_log set message = 'committed; the confirmation was lost "
                "with the connection' where load_id = %s",
                [found[0]],
            )
    except psycopg.Error as error:
        # the server is still away: this try fails like any that cannot reach it
        raise WarehouseError(
            f"{current.table} {current.period:%Y-%m}: cannot start the load: {one_line(error)}"
        ) from None
    load_id, status, rows_deleted = found
    plan = next(t for t in tries if t.load_id == load_id)
    loaded = 0 if status == "refused" else plan.rows_to_load
    return plan, LoadOutcome(
        plan.load_id, status, loaded, int(rows_deleted or 0), plan.rows_rejected
    )
