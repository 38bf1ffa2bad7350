"""`make demo` / `wdh demo`: sample workbooks → embedded Postgres → Dagster → summary.

Runs the `monthly_refresh` job in-process on the Dagster instance under DAGSTER_HOME, one
run over the months (so it shows up in the UI afterwards), then prints what each month
loaded, rejected and built. Running it twice gives the same tables. It runs in the embedded
warehouse; in the one WDH_DATABASE_URL names only when asked, never in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import click

from workdatahub.errors import ConfigError, InputError, Interrupted
from workdatahub.periods import compact, month_range, period_key
from workdatahub.settings import PROJECT_ROOT, failure_line, get_settings, mask_url, one_line


def _instance() -> Any:
    import dagster as dg

    home = Path(os.environ.get("DAGSTER_HOME") or get_settings().dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


_INTERRUPTS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}


@contextlib.contextmanager
def _lost_interrupts() -> Iterator[list[BaseException]]:
    """The Ctrl-Cs Python could not raise during the block. Dagster raises one from its
    signal handler in whatever code is running; in a finaliser or a garbage-collector
    callback Python prints "Exception ignored in …" with a traceback, drops it, and the run
    goes on to its end. Those are kept here, silently; any other unraisable error is printed
    as before."""
    lost: list[BaseException] = []
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if type(unraisable.exc_value).__name__ in _INTERRUPTS:
            lost.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield lost
    finally:
        sys.unraisablehook = previous


def _interrupted(result: Any) -> bool:
    """Whether the run failed because it was interrupted (Ctrl-C)."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None) if event.is_failure else None
        while error is not None:
            if error.cls_name in _INTERRUPTS:
                return True
            error = error.cause
    return False


def _said(entries: Any, events: Any) -> list[str]:
    """The run's warnings and errors, and its failures, one line each and each once: a
    failure's text without its exception class, a month's error left out when a failure
    says it again (with the months loaded besides)."""
    lines: list[tuple[str, str]] = []
    for entry in entries:
        if entry.level >= logging.WARNING and entry.dagster_event is None:  # the run's own
            level = "error" if entry.level >= logging.ERROR else "warning"
            lines.append((level, one_line(entry.user_message)))
    for event in events:
        error = getattr(event.event_specific_data, "error", None) if event.is_failure else None
        if error is not None:
            lines.append(("failed", failure_line(error)))
    failures = [text for level, text in lines if level == "failed"]
    said: list[str] = []
    for level, text in lines:
        repeated = level != "failed" and any(text in failure for failure in failures)
        line = f"{level}: {text}"
        if not repeated and line not in said:
            said.append(line)
    return said


def refuse_a_named_warehouse(periods: list[date], named_warehouse: bool) -> None:
    """The demo replaces its months of every domain with synthetic rows: in the embedded
    warehouse, never in a production one, and in another only when asked to."""
    from workdatahub.warehouse.db import masked_url

    settings = get_settings()
    where = None
    if settings.dbt_database_url is not None:  # (dbt would build the demo's models there)
        named = mask_url(settings.dbt_database_url.get_secret_value())
        where = f"WDH_DBT_DATABASE_URL names {named}, not the embedded Postgres"
    elif not settings.embedded:
        where = f"WDH_DATABASE_URL names {masked_url()}, not the embedded Postgres"
    if settings.environment == "prod":
        # (before a sample is written: into the operators' share, given as --data-dir, their
        # V2 folders would win over the month's)
        raise ConfigError(
            "wdh demo never runs in production (WDH_ENVIRONMENT=prod)"
            + (f": {where}" if where else ", nor does the embedded Postgres")
        )
    if where is not None and not named_warehouse:
        months = compact([period_key(period) for period in periods])
        raise ConfigError(
            f"wdh demo replaces {months} of every domain with synthetic rows, and {where}: "
            "unset it to use the embedded one, or pass --named-warehouse"
        )


def run_demo(months: str, rows: int, data_dir: Path | None, named_warehouse: bool = False) -> int:
    from workdatahub.cli import _table
    from workdatahub.samples import SAMPLE_DIR, write_samples
    from workdatahub.warehouse.db import connect, masked_url
    from workdatahub.warehouse.migrate import upgrade

    periods = month_range(months)
    refuse_a_named_warehouse(periods, named_warehouse)
    data_dir = (data_dir or SAMPLE_DIR).resolve()
    try:
        written = write_samples(data_dir, periods, rows=rows)
    except OSError as unwritable:
        where = unwritable.filename or data_dir
        why = unwritable.strerror or unwritable
        raise InputError(f"{where}: cannot write it ({why})") from None
    kept = len({s.path for s in written if s.kept})
    reused = (
        f" ({kept} there already, kept as they were: delete them to write new ones)" if kept else ""
    )
    click.echo(f"samples: {len({s.path for s in written})} workbooks under {data_dir}{reused}")
    revision = upgrade()
    click.echo(f"warehouse: {masked_url()} at revision {revision}")

    from workdatahub.definitions import defs

    job = defs.resolve_job_def("monthly_refresh")
    instance = _instance()
    run_config = {
        "resources": {"warehouse": {"config": {"data_dir": str(data_dir)}}},
        # the runs' full logs are in the UI; the terminal gets the summary, and each warning
        # and failure in one line (below), not Dagster's stack traces
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    first, last = period_key(periods[0]), period_key(periods[-1])
    log_file = Path(os.environ["DAGSTER_HOME"]).parent / "logs" / "demo.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"materialising {first}…{last} through Dagster in one run (dbt output: {log_file}) …"
    )
    with (
        log_file.open("w", encoding="utf-8") as sink,
        contextlib.redirect_stdout(sink),
        _lost_interrupts() as lost,
    ):
        # one run over the month range: raw assets load each month in its own transaction,
        # dbt builds the whole window once (single-run backfill)
        result = job.execute_in_process(
            instance=instance,
            run_config=run_config,
            raise_on_error=False,
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
        )
    built = [
        event.asset_key
        for event in result.get_asset_materialization_events()
        if event.asset_key and event.asset_key.path[0] in ("staging", "marts")
    ]  # one per model and month
    models = f"{len(set(built))} ({len(built)} model-months)"
    checks = list(result.get_asset_check_evaluations())
    passed = sum(1 for c in checks if c.passed)
    failures = 0 if result.success else 1
    if _interrupted(result):
        # a Ctrl-C: Dagster stopped the step and failed the run; the months loaded before
        # it stay loaded (each its own transaction), and a summary would show older loads
        raise Interrupted(
            f"interrupted: run {result.run_id[:8]} stopped; the months loaded before the stop "
            "are in the warehouse (`wdh history`)"
        )
    if lost:  # (a Ctrl-C that arrived where it could not stop the run)
        raise Interrupted(
            f"interrupted: run {result.run_id[:8]} went on to its end (the Ctrl-C came where "
            "it could not stop it); its months are in the warehouse (`wdh history`)"
        )
    for line in _said(instance.all_logs(result.run_id), result.all_events):
        click.echo(f"  {line}", err=True)

    loads: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    with connect() as conn:
        rows_found = conn.execute(
            """
            select distinct on (domain, period) domain, to_char(period, 'YYYY-MM'),
                   jsonb_array_length(files), rows_loaded, rows_rejected, status
            from wdh.load_log
            where period = any(%s)
            order by domain, period, started_at desc
            """,
            [periods],
        ).fetchall()
    for domain, key, files, loaded, rejected, status in rows_found:
        loads[(domain, key)] = {
            "files": files,
            "loaded": loaded,
            "rejected": rejected,
            "status": status,
        }

    table_rows = []
    for (domain, key), load in sorted(loads.items(), key=lambda item: (item[0][1], item[0][0])):
        table_rows.append(
            [domain, key, load["files"], load["loaded"], load["rejected"], load["status"]]
        )
    click.echo("")
    click.echo(
        _table(
            table_rows,
            ["domain", "month", "files", "rows loaded", "rejected", "status"],
        )
    )
    click.echo(
        f"run {result.run_id[:8]}: {'succeeded' if result.success else 'FAILED'}; dbt models built "
        f"{models}; checks passed {passed}, failed {len(checks) - passed}"
    )
    click.echo("")
    click.echo(
        "open the UI with `make dev` (http://localhost:3000); query with `make shell` or "
        "`.venv/bin/wdh db shell -c 'select * from marts.fct_monthly_branch_product_line'`"
    )
    return 1 if failures else 0
