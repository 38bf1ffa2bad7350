"""Warehouse helpers shared by the tests of loads: workbooks of one trustee month and what
the table must hold after loading them, and ways to make a load stop where a test wants it
(a gate inside the COPY, a load in the background, waiting for a session in a state)."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook

NOV, DEC = date(2024, 11, 1), date(2024, 12, 1)


# --- workbooks and what the table must hold after loading them ----------------------------


def month_rows(period: date, n: int, version: int = 1) -> list[list[Any]]:
    """n plain rows; `version` changes every net value, so two versions differ everywhere."""
    return [
        [period.year, period.month, f"P{i:05d}", "C01", 0.012345, version * 1000 + i + 0.25, i * 10]
        for i in range(n)
    ]


def write_month(data_dir: Path, period: date, n: int, version: int = 1) -> Path:
    folder = trustee_folder(data_dir, f"{period:%Y%m}", "受托部")
    sheet: list[list[Any] | None] = [TRUSTEE_HEADER, *month_rows(period, n, version)]
    return write_workbook(folder / "受托业绩.xlsx", {"Sheet1": sheet})


def expected_state(period: date, n: int, version: int = 1) -> tuple[int, str]:
    """Row count and checksum that `month_state` must read after loading `month_rows`."""
    lines = [
        f"({period.isoformat()},P{i:05d},C01,0.012345,{version * 1000 + i}.2500,{i * 10}.0000)"
        for i in range(n)
    ]
    return n, hashlib.md5("|".join(lines).encode()).hexdigest() if lines else ""


MONTH_STATE = """
    select count(*), coalesce(md5(string_agg(
        row(report_date, plan_code, company_code, return_rate, net_value, fund_scale)::text,
        '|' order by plan_code collate "C")), '')
    from {table} where report_date = %s
"""


def month_state(
    conn: psycopg.Connection[Any], period: date, table: str = "raw.trustee_performance"
) -> tuple[int, str]:
    """Row count and md5 of one month's business columns (lineage left out)."""
    row = conn.execute(MONTH_STATE.format(table=table), [period]).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def load_log(conn: psycopg.Connection[Any], period: date) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select load_id::text, status, coalesce(message, ''), rows_loaded, rows_deleted "
        "from wdh.load_log where period = %s order by started_at",
        [period],
    ).fetchall()


# --- making a load stop where we want it -----------------------------------------------------

GATE = 0x57444854  # advisory lock key the test holds while loads must wait in the COPY
HELD_IN_COPY = "wait_event = 'advisory' and query ilike 'copy %trustee_performance%'"
# a load's transaction, begun while its workbook is read, with the old month deleted
EARLY_DELETE = "state = 'idle in transaction' and query ilike 'delete from %trustee_performance%'"


class Gate:
    """Held by a session of the test: a load that reaches the trigger waits until `open`."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("select pg_advisory_lock(%s)", [GATE])
        self.held = True

    def open(self) -> None:
        if self.held:
            self.conn.execute("select pg_advisory_unlock(%s)", [GATE])
            self.held = False

    def close(self) -> None:
        self.open()
        self.conn.close()


@contextmanager
def hold_copy(url: str, at_row: int) -> Iterator[Gate]:
    """Loads stop inside their COPY, just before the row from Excel row `at_row` goes in
    (after the DELETE and the rows above it), until the gate opens."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""
            create or replace function public.wdh_test_gate() returns trigger
            language plpgsql as $$
            declare
                load_lock_timeout text := current_setting('lock_timeout');
            begin
                -- the gate is the test's, not a lock the load's own timeout is meant for
                perform set_config('lock_timeout', '0', true);
                perform pg_advisory_lock_shared({GATE});
                perform pg_advisory_unlock_shared({GATE});
                perform set_config('lock_timeout', load_lock_timeout, true);
                return new;
            end $$
            """
        )
        conn.execute(
            "create trigger wdh_test_gate before insert on raw.trustee_performance "
            f"for each row when (new.source_row = {int(at_row)}) "
            "execute function public.wdh_test_gate()"
        )
    gate = Gate(url)
    try:
        yield gate
    finally:
        gate.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("drop trigger if exists wdh_test_gate on raw.trustee_performance")
            conn.execute("drop function if exists public.wdh_test_gate()")


def wait_for_backend(conn: psycopg.Connection[Any], condition: str, count: int = 1) -> list[int]:
    """Pids of `count` sessions of this database matching `condition` (fails after 120 s)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = [
            row[0]
            for row in conn.execute(
                "select pid from pg_stat_activity where datname = current_database() "
                f"and pid <> pg_backend_pid() and {condition}"
            ).fetchall()
        ]
        if len(pids) >= count:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"no session matched {condition!r} within 120 s")


class Background:
    """Run a load in a thread; `result()` returns its value or raises its error."""

    def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target, args, kwargs))
        self.thread.start()

    def _run(self, target: Any, args: Any, kwargs: Any) -> None:
        try:
            self.value = target(*args, **kwargs)
        except BaseException as error:
            self.error = error

    def result(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the load did not finish"
        if self.error is not None:
            raise self.error
        return self.value


@contextmanager
def running(command: list[str], **options: Any) -> Iterator[subprocess.Popen[Any]]:
    """A process of the project, started in the project folder (killed at the end if it is
    still running, whatever happened)."""
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()


def dbt_started(
    pg_url: str, *args: str, env: dict[str, str] | None = None, project: Path | None = None
) -> Any:
    """dbt on the test warehouse, as Dagster's steps run it, started (output merged); in
    the project's dbt folder, or a copy of it."""
    import os
    import sys

    from workdatahub.defs.dbt import DBT_PROJECT_DIR
    from workdatahub.warehouse.db import dbt_env

    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dbt"), "--no-use-colors", *args, "--profiles-dir", "."],
        cwd=project or DBT_PROJECT_DIR, env={**os.environ, **dbt_env(pg_url), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def dbt(
    pg_url: str, *args: str, env: dict[str, str] | None = None, project: Path | None = None
) -> Any:
    """dbt on the test warehouse, run to its end: returncode and stdout."""
    process = dbt_started(pg_url, *args, env=env, project=project)
    output, _ = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")
