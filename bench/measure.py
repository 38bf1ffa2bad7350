"""One measurement in a fresh process: `python bench/measure.py KIND DATA_DIR [options]`.

Each run gets its own process so that its peak RSS is its own and nothing stays warm
between runs except what stays warm in production (the Postgres server and the OS file
cache). Imports, the database connection set-up and a VACUUM of the target table happen
before the clock starts. The last line on stdout is one JSON object.

Kinds:
  wdh     WorkDataHub's pipeline for one partition, `run_partition` (discover → read →
          cleanse → validate → plan → load: delete + COPY + quarantine + audit, one
          transaction), with its own stage timings;
  naive   the naive stack (bench/naive.py) on the same file and table;
  reader  a read limit: fastexcel alone, the whole sheet to a polars frame;
  scan    the other read limit: WorkDataHub's native scan alone (inflate, the compiled
          scanner, the cells to a polars frame; workdatahub/excel/native.py), at any size;
  copy    the pure load limit: the cleaned rows, encoded beforehand as the loader encodes
          them (binary), sent with one COPY into the target table (rolled back);
  dagster the month through Dagster (raw + dbt) and the same work called directly;
  prepare not timed, run first: migrates the warehouse, loads the month once (the warm-up,
          so every timed load replaces a month of its own size) and writes the cleaned
          rows, as the loader COPYs them, for `copy`.

Every timed run begins right after a throwaway process has written memory (25 times the
workbook's bytes, 0.5-4 GB) and exited (`_clock`). This machine is a VM whose host takes
back memory the guest has freed, within ~20 s, and the next process to use it waits for
the host to back it again: touching 1 GB took 8.1 s, 1.7 s, then 0.11 s in three processes
one after the other; the native scan of the 500,000-row sheet took 5.3-6.1 s after 20 s
idle and 1.8-2.0 s right after another process had touched 2.5 GB (CPU time 7.6-8.4 s
against 2.4-2.6 s). Without this, a run's time depended on how long the machine had been
idle and how much memory the run before had used, the more so the more memory a contender
uses; with it every contender meets memory as on a machine whose memory stays its own.

Besides wall time, a run records its own CPU time (every thread) and, for the runs that
use the warehouse (`wdh`, `naive`, `copy`) when it runs on this machine (the embedded one
does), the server's: the postmaster's and its children's, the run's ended backends
included (`_server_cpu`). A load's rows/s is the cores it keeps busy over the CPU time a
row costs; bench/run.py shows both, per size.

The loads (`wdh`, `naive`, `copy`) VACUUM the target table and take a CHECKPOINT in their
untimed set-up (`_settle`), as autovacuum and the regular checkpoints would have done in
the month between two loads, so that each timed run meets the warehouse in the same state
rather than behind the dead rows and the unwritten WAL of the runs before it (and
autovacuum's or a checkpoint's work in the middle of it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from workdatahub.periods import next_month, parse_period, period_key

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "annuity_performance"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# memory written before each run: 25 times the workbook's bytes (the naive stack, the most
# any contender holds, peaks at ~24 times: 3.6 GB for the 148 MB of 500,000 rows), at least
# 0.5 GB and at most 4; WDH_BENCH_BACK_GB sets it (0: none)
BACK_PER_BYTE = 25
BACK_MIN_GB, BACK_MAX_GB = 0.5, 4.0


def _back_memory_gb(data_dir: Path) -> float:
    if "WDH_BENCH_BACK_GB" in os.environ:
        return float(os.environ["WDH_BENCH_BACK_GB"])
    workbooks = sum(p.stat().st_size for p in data_dir.rglob("*.xlsx"))
    return min(BACK_MAX_GB, max(BACK_MIN_GB, BACK_PER_BYTE * workbooks / 2**30))


class _Clock:
    """A run's clock: wall time, this process's CPU time (every thread) and, when the
    warehouse runs on this machine, the server's (`_postmaster`)."""

    def __init__(self, postmaster: int | None) -> None:
        self._postmaster = postmaster
        self._server = None if postmaster is None else _server_cpu(postmaster)
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> dict[str, Any]:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        server = None
        if self._postmaster is not None and self._server is not None:
            now = _server_cpu(self._postmaster)
            server = None if now is None else now - self._server
        return {"seconds": wall, "cpu_seconds": cpu, "server_cpu_seconds": server}


def _clock(data_dir: Path, url: str | None = None) -> _Clock:
    """Start the clock once a throwaway process has written and freed memory for a run on
    `data_dir` (see the module's docstring); in a process of its own, so that this run's
    peak RSS stays its own. With `url`, the clock also counts the server's CPU time (the
    connection that finds the server has ended, and its time been counted, by then)."""
    postmaster = None if url is None else _postmaster(url)
    gigabytes = _back_memory_gb(data_dir)
    if gigabytes > 0:
        touch = f"import numpy; numpy.ones({int(gigabytes * 2**30) // 8})"
        subprocess.run([sys.executable, "-c", touch], check=True)
    return _Clock(postmaster)


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (field 3 on), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _postmaster(url: str) -> int | None:
    """The warehouse's postmaster when it runs on this machine (the embedded one does), else
    None: the server's CPU time is then not measured."""
    import psycopg

    with psycopg.connect(url) as conn:
        backend = conn.execute("select pg_backend_pid()").fetchone()
        fields = _stat(backend[0]) if backend else None  # read while the backend is there
    if fields is None:
        return None
    parent = int(fields[1])
    try:
        ours = Path(f"/proc/{parent}/comm").read_text().strip() == "postgres"
    except OSError:
        return None
    return parent if ours else None


def _server_cpu(postmaster: int) -> float | None:
    """CPU seconds the server has used so far: the postmaster's, its live children's
    (backends, WAL writer, checkpointer, autovacuum) and those of its children that have
    ended (a connection's backend ends with it; once the postmaster has reaped it, the
    kernel counts its time in the postmaster's cutime/cstime). A child reaped while the
    children are listed would be in neither: the postmaster's counts are read before and
    after the listing, and the listing is taken again until they agree."""
    for _ in range(1000):
        before = _stat(postmaster)
        if before is None:
            return None
        ticks = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != postmaster:
                fields = _stat(int(entry.name))
                if fields is not None and int(fields[1]) == postmaster:
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
        after = _stat(postmaster)
        if after is None:
            return None
        if after[13:15] == before[13:15]:  # cutime, cstime: no child reaped meanwhile
            ticks += sum(int(v) for v in after[11:15])
            return ticks / os.sysconf("SC_CLK_TCK")
    return None


# The bench replaces whole months of raw.annuity_performance with synthetic rows (and through
# Dagster, dbt rebuilds those months of the marts): it never runs against the warehouse the
# settings name (WDH_DATABASE_URL, a .env file). Its database is WDH_BENCH_DATABASE_URL, or
# else a database of its own on the embedded server under WDH_HOME; dbt's files go to a
# target folder of its own, so the developer's partial parse (made for their profile) stays.
BENCH_DATABASE = "workdatahub_bench"
BENCH_URL = "WDH_BENCH_DATABASE_URL"


def bench_environment() -> dict[str, str]:
    """The variables that point a bench process, and the dbt processes it starts, at the
    bench's database (they win over a .env file: pydantic-settings reads the environment
    first)."""
    from workdatahub.settings import Settings
    from workdatahub.warehouse.db import database_url

    url = os.environ.get(BENCH_URL)
    if not url:
        own = Settings(
            database_url=None, dbt_database_url=None, database_name=BENCH_DATABASE,
            environment="dev",
        )  # fmt: skip
        url = database_url(own)
    home = Settings().home
    return {
        "WDH_DATABASE_URL": url,
        "WDH_DBT_DATABASE_URL": url,
        "DBT_TARGET_PATH": str(home / "bench-dbt-target"),
    }


def _use_bench_database() -> None:
    from workdatahub.settings import reset_settings

    os.environ.update(bench_environment())
    reset_settings()


def _spec() -> Any:
    from workdatahub.sources.spec import load_sources

    return load_sources(ROOT / "data_sources.yml").domain(DOMAIN)


def _url() -> str:
    """The warehouse (started on demand if embedded); `prepare` has migrated it."""
    from workdatahub.warehouse.db import database_url

    return database_url()


def _settle(spec: Any, url: str) -> None:
    """Untimed set-up of a load: the warehouse as a month between two loads leaves it. The
    target table vacuumed, as autovacuum would have done (and any autovacuum of it running
    now, started by the runs before, gives way: it would otherwise share the cores with the
    timed run); then a checkpoint, as the regular ones (every 5 minutes) would have made:
    the runs before wrote hundreds of MB of WAL (the naive stack's 500,000 rows, the bare
    COPY's), whose checkpoint would otherwise write those pages out during this run."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        table = sql.Identifier(spec.schema_name, spec.table)
        conn.execute(sql.SQL("vacuum (analyze) {}").format(table))
        # a warehouse user without pg_checkpoint: the runs are noisier, not wrong
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("checkpoint")


def _source(spec: Any, period: date, data_dir: Path) -> Path:
    from workdatahub.sources.discovery import discover

    return discover(spec, period, data_dir).files[0].path


def measure_wdh(data_dir: Path, period: date) -> dict[str, Any]:
    # the pipeline imports Pandera (~0.3 s) once the workbook proves readable: an import,
    # kept out of the clock like the naive stack's pandas
    import workdatahub.validation.schema  # noqa: F401
    from workdatahub.pipeline import run_partition

    spec, url = _spec(), _url()
    _settle(spec, url)
    clock = _clock(data_dir, url)
    result = run_partition(spec, period, data_dir=data_dir, url=url)
    timed = clock.stop()
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome
    return {
        **timed,
        "stages": dict(result.timings),
        "load_steps": dict(outcome.timings),
        "rows_read": result.check.rows_read,
        "rows_valid": outcome.rows_loaded,
        "rows_rejected": outcome.rows_rejected,
    }


def measure_naive(data_dir: Path, period: date) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "bench"))
    import naive

    spec, url = _spec(), _url()
    path = _source(spec, period, data_dir)
    _settle(spec, url)
    clock = _clock(data_dir, url)
    result = naive.run(path, spec, period, url, str(path.relative_to(data_dir)))
    return {**clock.stop(), "stages": result.pop("timings"), **result}


def measure_reader(data_dir: Path, period: date) -> dict[str, Any]:
    import fastexcel

    spec = _spec()
    path = _source(spec, period, data_dir)
    clock = _clock(data_dir)
    frame = (
        fastexcel.read_excel(str(path))
        .load_sheet(spec.sheet, header_row=None, dtypes="string")
        .to_polars()
    )
    return {**clock.stop(), "rows_read": frame.height}


def measure_scan(data_dir: Path, period: date) -> dict[str, Any]:
    from workdatahub.excel import native, reader

    native.library()  # imported (pyarrow with it) and loaded before the clock, as in a load

    spec = _spec()
    path = _source(spec, period, data_dir)
    reader.NATIVE_MIN_BYTES = 0  # the scan's speed at any size (as the pipeline reads)
    clock = _clock(data_dir)
    book = reader.open_workbook(path)
    scanned = reader._load_native(book, reader.select_sheet(book, spec.sheet))
    timed = clock.stop()
    if scanned is None:
        raise SystemExit(f"{path}: the native scan gave up")
    return {**timed, "rows_read": scanned[0][0].height}


def _cleaned_path(data_dir: Path) -> Path:
    return data_dir / "cleaned_rows.parquet"


def measure_prepare(data_dir: Path, period: date) -> dict[str, Any]:
    """Not a measurement: migrate the warehouse, load the month once (the warm-up), and
    write the cleaned rows of that load, as the loader COPYs them, for `copy`."""
    from workdatahub.pipeline import run_partition
    from workdatahub.warehouse import loader
    from workdatahub.warehouse.migrate import upgrade

    spec, url = _spec(), _url()
    upgrade(url)
    result = run_partition(spec, period, data_dir=data_dir, url=url)
    assert result.outcome is not None and result.outcome.status == "succeeded", result.outcome
    frame = loader.valid_rows_for_copy(result.plan, spec)
    frame.write_parquet(_cleaned_path(data_dir))
    return {"seconds": 0.0, "rows_valid": frame.height}


def measure_copy(data_dir: Path, period: date) -> dict[str, Any]:
    import psycopg
    from psycopg import sql

    from workdatahub.warehouse import loader

    spec, url = _spec(), _url()
    frame = pl.read_parquet(_cleaned_path(data_dir))
    # encoded before the clock starts, in the loader's format: this is the bare COPY, the
    # server's side of a load
    payload = list(loader.binary_chunks(frame, loader.copy_types(spec)))
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    query = sql.SQL("copy {} ({}) from stdin with (format binary)").format(
        sql.Identifier(spec.schema_name, spec.table), columns
    )
    _settle(spec, url)
    with psycopg.connect(url) as conn:
        clock = _clock(data_dir, url)
        with conn.cursor() as cur, cur.copy(query) as copy:
            for chunk in payload:
                copy.write(chunk)
        timed = clock.stop()
        conn.rollback()  # the month keeps the pipeline's rows
    return {**timed, "rows_valid": frame.height}


def measure_dagster(data_dir: Path, period: date, runs: int) -> dict[str, Any]:
    """Per run: the pipeline function directly; the raw asset through Dagster; raw + the
    dbt models downstream through Dagster; and `dbt build` of those models on its own."""
    from workdatahub.settings import reset_settings

    # the month is a partition whatever the settings' first month (the bench's smaller sizes
    # take months years back)
    os.environ["WDH_PARTITIONS_START"] = period_key(period)
    reset_settings()
    started = time.perf_counter()
    import dagster as dg

    from workdatahub.definitions import defs
    from workdatahub.defs.dbt import window_variables
    from workdatahub.defs.partitions import dbt_vars_for_window
    from workdatahub.pipeline import run_partition
    from workdatahub.warehouse.db import dbt_env

    import_s = time.perf_counter() - started
    spec, url = _spec(), _url()
    partition = period_key(period)
    raw = dg.AssetKey(["raw", DOMAIN])
    graph = defs.resolve_asset_graph()
    downstream = sorted(dg.AssetSelection.assets(raw).downstream().resolve(graph), key=str)
    job = defs.resolve_implicit_global_asset_job_def()
    config = {"resources": {"warehouse": {"config": {"data_dir": str(data_dir)}}}}
    instance = dg.DagsterInstance.ephemeral()
    midnight = datetime.min.time()
    dbt_vars = dbt_vars_for_window(
        datetime.combine(period, midnight), datetime.combine(next_month(period), midnight)
    )
    dbt = [str(Path(sys.executable).parent / "dbt"), "--quiet"]
    common = ["--profiles-dir", "."]
    # the month window as Dagster passes it (environment variables, not --vars, which would
    # leave target/partial_parse.msgpack parsed with other vars than Dagster's runs: each
    # would then parse the whole project again)
    env = {**os.environ, **dbt_env(url), **window_variables(dbt_vars)}

    def dbt_run(*args: str) -> None:
        subprocess.run(
            [*dbt, *args, *common], cwd=ROOT / "dbt_project", env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    # untimed set-up: reference seeds and every model once, so that marts reading other
    # domains' models find them (as in a warehouse that is already running)
    dbt_run("seed")
    dbt_run("run")
    selected = ["--select", f"source:raw.{DOMAIN}+", "--exclude", "resource_type:seed"]
    rows: list[dict[str, float]] = []
    for _ in range(runs):
        timing: dict[str, float] = {}
        start = time.perf_counter()
        run_partition(spec, period, data_dir=data_dir, url=url)
        timing["direct_pipeline"] = time.perf_counter() - start
        for label, keys in (("dagster_raw", [raw]), ("dagster_raw_dbt", downstream)):
            start = time.perf_counter()
            result = job.execute_in_process(
                asset_selection=keys, partition_key=partition, instance=instance, run_config=config
            )
            timing[label] = time.perf_counter() - start
            assert result.success, label
        start = time.perf_counter()
        dbt_run("build", *selected)
        timing["dbt_build_cli"] = time.perf_counter() - start
        rows.append(timing)
    return {
        "import_seconds": import_s,
        "assets": [k.to_user_string() for k in downstream],
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    kinds = ["wdh", "naive", "reader", "scan", "prepare", "copy", "dagster"]
    parser.add_argument("kind", choices=kinds)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--period", default="2024-11")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    period = parse_period(args.period)
    args.data_dir = args.data_dir.resolve()
    if args.kind not in ("reader", "scan"):  # the others use the warehouse
        _use_bench_database()
    load_before = os.getloadavg()[0]
    if args.kind == "dagster":
        result = measure_dagster(args.data_dir, period, args.runs)
    else:
        result = globals()[f"measure_{args.kind}"](args.data_dir, period)
    result.update(
        kind=args.kind, peak_rss_mb=_peak_rss_mb(), load_avg_before=load_before,
        load_avg_after=os.getloadavg()[0],
    )  # fmt: skip
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
