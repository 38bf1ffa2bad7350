"""Loads at the same time, and the same load again and again.

- two loads of one (table, month) at once: the second waits on the advisory lock (or,
  past lock_timeout, is told the month is busy); the table ends with one month's rows
- four months of one table loading in parallel do not wait for each other and all land
- a reader polling the month while it is replaced sees the old month or the new one,
  never a mixture or a half
- loading a month ten times gives the same table every time and one load-log row per run
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.warehouse import (
    EARLY_DELETE,
    HELD_IN_COPY,
    NOV,
    Background,
    expected_state,
    hold_copy,
    load_log,
    month_rows,
    month_state,
    running,
    wait_for_backend,
    write_month,
)
from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook
from workdatahub.errors import LoadBusyError, RejectThresholdExceeded
from workdatahub.pipeline import run_partition
from workdatahub.sources.spec import DomainSpec

pytestmark = pytest.mark.db
WAITING_FOR_THE_MONTH = "wait_event_type = 'Lock' and wait_event = 'advisory'"


def test_two_loads_of_one_month_at_once_end_with_exactly_one_month(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """Two operators load November at once from different workbooks (40 and 60 rows): the
    second waits for the first, then replaces its rows. Never 100 rows, never a mixture."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    write_month(first_dir, NOV, 40, version=1)
    write_month(second_dir, NOV, 60, version=2)
    with hold_copy(pg_url, at_row=21) as gate:
        first = Background(run_partition, trustee, NOV, data_dir=first_dir, url=pg_url)
        wait_for_backend(pg, HELD_IN_COPY)
        second = Background(run_partition, trustee, NOV, data_dir=second_dir, url=pg_url)
        wait_for_backend(pg, WAITING_FOR_THE_MONTH)
        # while the first holds the month and the second waits: still the (empty) old month
        assert month_state(pg, NOV) == (0, "")
        gate.open()
        first_result, second_result = first.result(), second.result()
    assert month_state(pg, NOV) == expected_state(NOV, 60, version=2)
    log = {row[0]: row for row in load_log(pg, NOV)}
    assert log[str(first_result.plan.load_id)][1:] == ("succeeded", "", 40, 0)
    assert log[str(second_result.plan.load_id)][1:] == ("succeeded", "", 60, 40)
    assert len(log) == 2


def test_a_refused_load_is_never_taken_for_a_dead_one(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused load rolls its transaction back, which lets a load waiting for the month
    in; that load marks `abandoned` the month's 'running' rows whose own lock is free. The
    refused load keeps its lock all along (its second connection takes it, shared, before
    the first ends): its row goes from 'running' to 'refused', never through 'abandoned'."""
    from workdatahub import pipeline

    refused_dir, loaded_dir = tmp_path / "refused", tmp_path / "loaded"
    folder = trustee_folder(refused_dir, "202411", "受托部")
    bad = [[2024, 11, f"P{i:04d}", "C01", "abc", 1, 1] for i in range(5)]
    write_workbook(folder / "受托业绩.xlsx", {"Sheet1": [TRUSTEE_HEADER, *bad]})
    write_month(loaded_dir, NOV, 20)
    pg.execute("create table if not exists public.wdh_test_statuses (load_id uuid, status text)")
    pg.execute("truncate public.wdh_test_statuses")
    pg.execute(
        "create or replace function public.wdh_test_status() returns trigger language plpgsql "
        "as $$ begin insert into public.wdh_test_statuses values (new.load_id, new.status); "
        "return new; end $$"
    )
    pg.execute(
        "create or replace trigger wdh_test_status after insert or update of status "
        "on wdh.load_log for each row execute function public.wdh_test_status()"
    )
    read = pipeline.check_file
    go = threading.Event()

    def held(spec: Any, path: Path, *args: Any, **kwargs: Any) -> Any:
        if refused_dir in path.parents:
            assert go.wait(60)
        return read(spec, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "check_file", held)
    try:
        refused = Background(run_partition, trustee, NOV, data_dir=refused_dir, url=pg_url)
        wait_for_backend(pg, EARLY_DELETE)
        loaded = Background(run_partition, trustee, NOV, data_dir=loaded_dir, url=pg_url)
        wait_for_backend(pg, WAITING_FOR_THE_MONTH)
        go.set()
        with pytest.raises(RejectThresholdExceeded):
            refused.result()
        result = loaded.result()
        statuses = pg.execute(
            "select load_id::text, array_agg(status order by ctid) "
            "from public.wdh_test_statuses group by 1"
        ).fetchall()
    finally:
        go.set()
        pg.execute("drop trigger if exists wdh_test_status on wdh.load_log")
        pg.execute("drop table if exists public.wdh_test_statuses")
        pg.execute("drop function if exists public.wdh_test_status()")
    by_load = dict(statuses)
    assert by_load.pop(str(result.plan.load_id)) == ["running", "succeeded"]
    assert list(by_load.values()) == [["running", "refused"]]
    assert month_state(pg, NOV) == expected_state(NOV, 20)


def test_ctrl_c_stops_a_load_waiting_for_the_month(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """A load waits for the month while another holds it (up to 10 minutes): Ctrl-C stops
    it then and there, its row failed, not once the other load is done."""
    import os
    import signal
    import subprocess
    import sys

    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    write_month(first_dir, NOV, 40, version=1)
    write_month(second_dir, NOV, 60, version=2)
    command = [sys.executable, "-m", "workdatahub.cli", "load", "trustee_performance"]
    command += ["--period", "2024-11", "--data-dir", str(second_dir)]
    with hold_copy(pg_url, at_row=21) as gate:
        first = Background(run_partition, trustee, NOV, data_dir=first_dir, url=pg_url)
        wait_for_backend(pg, HELD_IN_COPY)
        env = {**os.environ, "WDH_DATABASE_URL": pg_url}
        with running(command, env=env, stderr=subprocess.PIPE, text=True) as second:
            wait_for_backend(pg, WAITING_FOR_THE_MONTH, count=2)  # (the first: at the gate)
            # best effort: its 60 rows read and validated, the process waits for its head (a
            # slower read would make this a stop while reading, which test_loader covers)
            time.sleep(2)
            second.send_signal(signal.SIGINT)
            try:
                _, stderr = second.communicate(timeout=20)  # with the first load still held
            except subprocess.TimeoutExpired:
                pytest.fail("Ctrl-C did not stop the load waiting for the month")
        # 130, or ended by the SIGINT itself once its message is out (as a shell sees it: 130)
        assert second.returncode in (130, -signal.SIGINT), stderr
        assert stderr.strip() == "wdh: error: aborted"
        gate.open()
        first.result()
    statuses = [row[1] for row in load_log(pg, NOV)]
    assert statuses == ["succeeded", "failed"]
    assert month_state(pg, NOV) == expected_state(NOV, 40, version=1)


def test_a_lock_another_session_holds_on_the_table_is_named_as_such(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An analyst's LOCK TABLE (or a long transaction's row locks) is not another load:
    the load that waited past its lock timeout says whose lock it was."""
    monkeypatch.setattr("workdatahub.warehouse.loader.LOCK_TIMEOUT", "300ms")
    write_month(tmp_path, NOV, 40, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    before = month_state(pg, NOV)
    with psycopg.connect(pg_url) as analyst:
        analyst.execute("lock table raw.trustee_performance in share mode")
        with pytest.raises(LoadBusyError) as caught:
            run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
        analyst.rollback()
    assert caught.value.message == (
        "raw.trustee_performance 2024-11: waited 300ms for a lock another session holds on the "
        "table (an open transaction or a LOCK TABLE: see pg_stat_activity); table unchanged, "
        "try again later"
    )
    assert month_state(pg, NOV) == before


def test_a_load_that_waits_too_long_for_the_month_is_told_it_is_busy(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the loader waits up to 10 minutes; a shorter wait shows what happens past it
    monkeypatch.setattr("workdatahub.warehouse.loader.LOCK_TIMEOUT", "300ms")
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    write_month(first_dir, NOV, 40, version=1)
    write_month(second_dir, NOV, 60, version=2)
    with hold_copy(pg_url, at_row=21) as gate:
        first = Background(run_partition, trustee, NOV, data_dir=first_dir, url=pg_url)
        wait_for_backend(pg, HELD_IN_COPY)
        started = time.monotonic()
        with pytest.raises(LoadBusyError, match="another load holds this month; try again later"):
            run_partition(trustee, NOV, data_dir=second_dir, url=pg_url)
        assert time.monotonic() - started < 5  # refused once, not retried
        gate.open()
        first.result()
    assert month_state(pg, NOV) == expected_state(NOV, 40, version=1)
    assert [row[1] for row in load_log(pg, NOV)] == ["succeeded", "failed"]

    run_partition(trustee, NOV, data_dir=second_dir, url=pg_url)  # later, it goes in
    assert month_state(pg, NOV) == expected_state(NOV, 60, version=2)


def test_four_months_load_in_parallel_without_waiting_for_each_other(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    months = [date(2024, m, 1) for m in (8, 9, 10, 11)]
    sizes = {period: 20 + 7 * i for i, period in enumerate(months)}
    for i, period in enumerate(months):
        write_month(tmp_path, period, sizes[period], version=i + 5)
    with hold_copy(pg_url, at_row=11) as gate, ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(run_partition, trustee, period, data_dir=tmp_path, url=pg_url)
            for period in months
        ]
        # all four inside their transactions at the same moment: no lock is table-wide
        assert len(wait_for_backend(pg, HELD_IN_COPY, count=4)) == 4
        gate.open()
        results = [future.result(timeout=120) for future in futures]
    assert [r.outcome.status for r in results] == ["succeeded"] * 4
    for i, period in enumerate(months):
        assert month_state(pg, period) == expected_state(period, sizes[period], version=i + 5)
        assert [row[1] for row in load_log(pg, period)] == ["succeeded"]


def test_readers_never_see_a_half_loaded_month(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    write_month(tmp_path, NOV, 40, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    old, new = expected_state(NOV, 40, version=1), expected_state(NOV, 60, version=2)
    assert month_state(pg, NOV) == old
    write_month(tmp_path, NOV, 60, version=2)

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(month_state(conn, NOV))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        # half the new rows are in (uncommitted) for a second while the reader polls
        with hold_copy(pg_url, at_row=31) as gate:
            load = Background(run_partition, trustee, NOV, data_dir=tmp_path, url=pg_url)
            wait_for_backend(pg, HELD_IN_COPY)
            held_from = len(seen)
            time.sleep(1)
            assert len(seen) - held_from > 5  # the reader polled while the load was held
            gate.open()
            load.result()
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] != new) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        reader.join()
    assert set(seen) == {old, new}, set(seen) - {old, new}
    first_new = seen.index(new)
    assert all(state == new for state in seen[first_new:])  # and never went back


def test_loading_one_month_ten_times_is_idempotent(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    bad = [[2024, 11, "PBAD1", "C01", "abc", 1, 1], [2024, 11, "PBAD2", "C01", 0.01, "x", 1]]
    folder = trustee_folder(tmp_path, "202411", "受托部")
    write_workbook(
        folder / "受托业绩.xlsx", {"Sheet1": [TRUSTEE_HEADER, *month_rows(NOV, 50), *bad]}
    )
    states, rejects = set(), []
    for _ in range(10):
        run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
        states.add(month_state(pg, NOV))
        rejects.append(
            pg.execute(
                "select source_row, column_name, value, reason from wdh.rejected_rows "
                "where load_id = (select load_id from wdh.load_log order by started_at desc "
                "limit 1) order by 1, 2"
            ).fetchall()
        )
    assert states == {expected_state(NOV, 50)}
    log = load_log(pg, NOV)
    assert len(log) == 10 and len({row[0] for row in log}) == 10
    assert {row[1] for row in log} == {"succeeded"}
    assert [(row[3], row[4]) for row in log] == [(50, 0)] + [(50, 50)] * 9
    # every run quarantined the same two rows, each under its own load id
    assert len(rejects[0]) == 2 and all(r == rejects[0] for r in rejects)
    assert pg.execute("select count(*) from wdh.rejected_rows").fetchone() == (20,)
