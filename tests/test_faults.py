"""Faults during a load, made for real (no mocks): a connection killed mid-COPY, a loading
process killed with SIGKILL, the database restarted between two partitions, a commit
whose confirmation is lost, a dbt model failing after the raw load.

After each, the month in the table is either the complete new month or the complete
previous one (row count and checksum of the business columns), the load log says what
happened, and loading again succeeds.

The window inside a load is made deterministic with a trigger that, when a chosen source
row is inserted, waits for an advisory lock the test holds (the "gate"): the load is then
provably inside its transaction, after the DELETE and midway through the COPY, for as
long as the test needs.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import sql

from tests.warehouse import (
    DEC,
    EARLY_DELETE,
    HELD_IN_COPY,
    NOV,
    Background,
    expected_state,
    hold_copy,
    load_log,
    month_state,
    running,
    wait_for_backend,
    write_month,
)
from workdatahub.errors import InputError, WarehouseError
from workdatahub.pipeline import run_partition
from workdatahub.settings import get_settings, reset_settings
from workdatahub.sources.spec import DomainSpec
from workdatahub.warehouse.loader import ABANDONED

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def load_events() -> Iterator[list[dict[str, Any]]]:
    """The structured log lines the loads write (retries among them)."""
    from workdatahub.logs import configure_logging

    configure_logging()
    with structlog.testing.capture_logs() as events:
        yield events


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set WDH_LOAD_ATTEMPTS for one test."""

    def set_attempts(n: int) -> None:
        monkeypatch.setenv("WDH_LOAD_ATTEMPTS", str(n))
        reset_settings()

    yield set_attempts
    monkeypatch.delenv("WDH_LOAD_ATTEMPTS", raising=False)
    reset_settings()


def retries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "load retried"]


# --- 1. the connection dropped mid-COPY ----------------------------------------------------


def test_connection_killed_mid_copy_keeps_the_previous_month_then_reload_succeeds(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None, attempts: Any
) -> None:
    """No retry allowed: the failed load must leave the previous month exactly."""
    write_month(tmp_path, NOV, 40, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    previous = month_state(pg, NOV)
    assert previous == expected_state(NOV, 40, version=1)

    attempts(1)
    write_month(tmp_path, NOV, 60, version=2)
    with hold_copy(pg_url, at_row=31) as gate:
        load = Background(run_partition, trustee, NOV, data_dir=tmp_path, url=pg_url)
        (pid,) = wait_for_backend(pg, HELD_IN_COPY)
        # inside the load's transaction: 40 rows deleted, 29 new ones copied, not committed
        assert month_state(pg, NOV) == previous
        assert pg.execute("select pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        gate.open()
        with pytest.raises(WarehouseError, match="rolled back, table unchanged: terminating"):
            load.result()
    assert month_state(pg, NOV) == previous
    log = load_log(pg, NOV)
    assert [row[1] for row in log] == ["succeeded", "failed"]
    assert "terminating connection due to administrator command" in log[1][2]
    assert pg.execute("select count(*) from wdh.rejected_rows").fetchone() == (0,)

    again = run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    assert again.outcome is not None and again.outcome.rows_deleted == 40
    assert month_state(pg, NOV) == expected_state(NOV, 60, version=2)


@pytest.mark.parametrize("server_away", [False, True], ids=["failure recorded", "server away"])
def test_connection_killed_mid_copy_is_retried_with_a_new_load_id(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    load_events: list[dict[str, Any]],
    attempts: Any,
    monkeypatch: pytest.MonkeyPatch,
    server_away: bool,
) -> None:
    """The killed try keeps its own row, failed with its reason. With the server away, the
    try cannot mark its row failed then: the next try, before it begins, does (its row
    stayed 'running', and the next try's start would have marked it 'abandoned')."""
    if server_away:
        from workdatahub.warehouse import loader

        monkeypatch.setattr(loader, "_finish_failed", lambda *args: None)
    attempts(4)
    write_month(tmp_path, NOV, 40, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    write_month(tmp_path, NOV, 60, version=2)
    with hold_copy(pg_url, at_row=31) as gate:
        load = Background(run_partition, trustee, NOV, data_dir=tmp_path, url=pg_url)
        (pid,) = wait_for_backend(pg, HELD_IN_COPY)
        pg.execute("select pg_terminate_backend(%s)", [pid])
        gate.open()  # the retry, 0.5 s later, goes through
        result = load.result()
    assert result.outcome.status == "succeeded"
    assert month_state(pg, NOV) == expected_state(NOV, 60, version=2)
    log = load_log(pg, NOV)
    # the killed try keeps its own row; the retry is a new load that replaced the 40 rows
    assert [row[1] for row in log] == ["succeeded", "failed", "succeeded"]
    assert "terminating connection due to administrator command" in log[1][2]
    assert log[2][0] == str(result.plan.load_id) and log[2][3:] == (60, 40)
    (retry,) = retries(load_events)
    assert retry["load_id"] == log[1][0] and retry["wait_s"] == 0.5
    assert "terminating connection" in retry["reason"]


# --- 2. the loading process killed ---------------------------------------------------------


def _kill_9(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL


def test_sigkill_mid_load_leaves_the_previous_month_and_a_running_row_marked_abandoned(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    write_month(tmp_path, NOV, 40, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    previous = month_state(pg, NOV)
    write_month(tmp_path, NOV, 60, version=2)
    # the server notices a vanished client within 0.2 s even while the session waits
    # (otherwise only when it next talks to the client): worth setting on the server too
    env = {**os.environ, "PGOPTIONS": "-c client_connection_check_interval=200"}
    command = [sys.executable, "-m", "workdatahub.cli", "load", "trustee_performance"]
    command += ["--period", "2024-11", "--data-dir", str(tmp_path), "--json"]
    with hold_copy(pg_url, at_row=31):
        with running(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            (pid,) = wait_for_backend(pg, HELD_IN_COPY)
            live = load_log(pg, NOV)[-1]
            assert live[1] == "running"
            _kill_9(process)
        # the orphaned session ends on its own (the gate is still shut) and rolls back
        deadline = time.monotonic() + 30
        while pg.execute("select 1 from pg_stat_activity where pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the killed load's session did not end"
            time.sleep(0.05)
        assert month_state(pg, NOV) == previous
    assert month_state(pg, NOV) == previous
    assert load_log(pg, NOV)[-1] == live  # nobody was left to write 'failed'

    rerun = run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    assert month_state(pg, NOV) == expected_state(NOV, 60, version=2)
    log = {row[0]: row for row in load_log(pg, NOV)}
    assert log[live[0]][1:3] == ("abandoned", ABANDONED)
    assert log[str(rerun.plan.load_id)][1] == "succeeded"
    assert len(log) == 3


_KILLED_WHILE_READING = """
import sys, time
from datetime import date
from pathlib import Path
from workdatahub import pipeline
from workdatahub.pipeline import run_partition
from workdatahub.sources.spec import load_sources

def reading(*args, **kwargs):
    time.sleep(600)  # a read that never ends: the test kills the process

pipeline.check_file = reading
spec = load_sources().domain("trustee_performance")
run_partition(spec, date(2024, 11, 1), data_dir=Path(sys.argv[1]), url=sys.argv[2])
"""


def test_sigkill_while_reading_leaves_a_running_row_marked_abandoned(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A load killed before its rows were even read (out of memory on a huge workbook, a
    `kill -9`) shows in the load log: its 'running' row is written before the read, and
    the next load of the month, finding the killed load's own lock free, marks it."""
    write_month(tmp_path, NOV, 40, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    previous = month_state(pg, NOV)
    command = [sys.executable, "-c", _KILLED_WHILE_READING, str(tmp_path), pg_url]
    with running(command, stderr=subprocess.PIPE) as process:
        deadline = time.monotonic() + 60
        while len(load_log(pg, NOV)) < 2:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the load wrote no 'running' row"
            time.sleep(0.05)
        killed = load_log(pg, NOV)[-1]
        assert killed[1] == "running"
        _kill_9(process)
    assert month_state(pg, NOV) == previous

    capsys.readouterr()
    rerun = run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)  # (waits for the
    # killed load's session to end: it held the month's lock, rolled back when it ends)
    log = {row[0]: row for row in load_log(pg, NOV)}
    assert log[killed[0]][1:3] == ("abandoned", ABANDONED)
    # and says so, naming the load it marked
    said = capsys.readouterr().err
    assert "an earlier load of this month marked abandoned" in said and killed[0] in said
    assert log[str(rerun.plan.load_id)][1] == "succeeded"


# --- 3. the database restarted between two partitions -------------------------------------


def test_database_restart_between_two_partitions_is_ridden_out_by_retries(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    fresh_tables: None,
    attempts: Any,
    load_events: list[dict[str, Any]],
) -> None:
    """As a backfill does: November loads, the server goes down, December starts while it
    is down and goes in once the server is back (waits 0.5 s, 1 s, 2 s, …)."""
    from workdatahub.warehouse.db import database_url, stop_embedded

    settings = get_settings()
    if not settings.embedded:
        pytest.skip("restarts the embedded server; WDH_DATABASE_URL names another one")
    attempts(6)
    write_month(tmp_path, NOV, 30, version=1)
    write_month(tmp_path, DEC, 25, version=3)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)

    assert stop_embedded(settings)
    restart = threading.Timer(1.2, database_url, args=[settings])
    restart.start()
    started = time.monotonic()
    try:
        result = run_partition(trustee, DEC, data_dir=tmp_path, url=pg_url)
    finally:
        restart.join()
        database_url(settings)  # whatever happened, later tests need the server
    assert time.monotonic() - started >= 1.0
    assert result.outcome is not None and result.outcome.status == "succeeded"
    tried = retries(load_events)
    assert tried and all("cannot start the load" in e["reason"] for e in tried)
    assert [e["wait_s"] for e in tried] == [0.5, 1.0, 2.0, 4.0][: len(tried)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert month_state(conn, NOV) == expected_state(NOV, 30, version=1)
        assert month_state(conn, DEC) == expected_state(DEC, 25, version=3)
        # the tries that could not reach the server could not log; the one that did, did
        assert [row[1] for row in load_log(conn, DEC)] == ["succeeded"]


def test_database_down_longer_than_the_retries_fails_in_one_line_then_rerun_succeeds(
    trustee: DomainSpec, tmp_path: Path, pg_url: str, fresh_tables: None, attempts: Any
) -> None:
    from workdatahub.warehouse.db import database_url, stop_embedded

    settings = get_settings()
    if not settings.embedded:
        pytest.skip("stops the embedded server; WDH_DATABASE_URL names another one")
    attempts(2)
    write_month(tmp_path, DEC, 25, version=3)
    assert stop_embedded(settings)
    try:
        with pytest.raises(WarehouseError) as failure:
            run_partition(trustee, DEC, data_dir=tmp_path, url=pg_url)
    finally:
        database_url(settings)
    assert "cannot start the load" in failure.value.message
    assert "\n" not in failure.value.message
    result = run_partition(trustee, DEC, data_dir=tmp_path, url=pg_url)
    assert result.outcome is not None and result.outcome.status == "succeeded"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert month_state(conn, DEC) == expected_state(DEC, 25, version=3)


def test_a_load_whose_early_transaction_the_server_ended_is_tried_again_after_the_read(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The load's transaction begins while the workbook is read and is idle meanwhile; a
    server with idle_in_transaction_session_timeout ends such a session. The try fails
    and the next one, begun after the read, loads the month."""
    from workdatahub import pipeline

    write_month(tmp_path, NOV, 30, version=1)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    write_month(tmp_path, NOV, 40, version=2)
    real_check = pipeline.check_file

    def slow_check(*args: Any, **kwargs: Any) -> Any:
        wait_for_backend(pg, EARLY_DELETE)
        time.sleep(1.5)  # longer than the server lets a transaction sit idle
        return real_check(*args, **kwargs)

    monkeypatch.setattr(pipeline, "check_file", slow_check)
    database = pg.execute("select current_database()").fetchone()[0]
    alter = "alter database {} set idle_in_transaction_session_timeout = {}"
    pg.execute(sql.SQL(alter).format(sql.Identifier(database), sql.Literal("300ms")))
    try:
        result = run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    finally:
        pg.execute(sql.SQL(alter).format(sql.Identifier(database), sql.Literal(0)))
    assert month_state(pg, NOV) == expected_state(NOV, 40, version=2)
    log = load_log(pg, NOV)
    assert [row[1] for row in log] == ["succeeded", "failed", "succeeded"]
    assert result.plan.load_id != log[1][0] and str(result.plan.load_id) == log[2][0]


# --- 4. data errors are not retried; which failures count as transient --------------------


def test_a_data_error_is_not_retried(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    load_events: list[dict[str, Any]],
) -> None:
    write_month(tmp_path, NOV, 10)
    run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url)
    before = month_state(pg, NOV)
    write_month(tmp_path, NOV, 10, version=2)
    started = time.monotonic()
    # append onto the same keys: a unique violation, the same on every try (the operator's
    # input: an input error naming the row and the key)
    with pytest.raises(InputError, match=r"row 2: key .* is already in the table"):
        run_partition(trustee, NOV, data_dir=tmp_path, url=pg_url, mode="append")
    assert time.monotonic() - started < 5
    assert retries(load_events) == []
    assert [row[1] for row in load_log(pg, NOV)] == ["succeeded", "failed"]
    assert month_state(pg, NOV) == before


@pytest.mark.parametrize(
    ("statement", "transient"),
    [
        ("do $$ begin raise exception 'x' using errcode = '57P01'; end $$", True),  # shutdown
        ("do $$ begin raise exception 'x' using errcode = '57P03'; end $$", True),  # starting
        ("do $$ begin raise exception 'x' using errcode = '08006'; end $$", True),  # conn. lost
        ("do $$ begin raise exception 'x' using errcode = '40P01'; end $$", True),  # deadlock
        ("do $$ begin raise exception 'x' using errcode = '25P03'; end $$", True),  # idle txn
        ("select 1 / 0", False),
        ("select 'abc'::numeric", False),
        ("insert into raw.trustee_performance (report_date) values (null)", False),
        ("set lock_timeout = 1; select pg_advisory_lock(1)", False),  # busy, see below
        ("select * from no_such_table", False),
    ],
)
def test_which_database_errors_are_transient(
    pg_url: str, pg: Any, statement: str, transient: bool
) -> None:
    from workdatahub.warehouse.db import is_transient

    pg.execute("select pg_advisory_lock(1)")  # held here, so the other session is busy
    try:
        with (
            psycopg.connect(pg_url, autocommit=True) as other,
            pytest.raises(psycopg.Error) as raised,
        ):
            other.execute(statement)
    finally:
        pg.execute("select pg_advisory_unlock(1)")
    assert is_transient(raised.value) is transient
    # as the loader raises it: a one-line WarehouseError whose context is the database error
    try:
        try:
            raise raised.value
        except psycopg.Error:
            raise WarehouseError("load failed") from None
    except WarehouseError as wrapped:
        assert is_transient(wrapped) is transient


def test_connection_failures_transient_unless_misconfigured(pg_url: str) -> None:
    from workdatahub.warehouse.db import is_transient

    def failure(url: str) -> psycopg.Error:
        with pytest.raises(psycopg.OperationalError) as raised:
            psycopg.connect(url, connect_timeout=5)
        return raised.value

    assert is_transient(failure("postgresql://u@127.0.0.1:1/x"))  # refused: maybe restarting
    missing = psycopg.conninfo.make_conninfo(pg_url, dbname="no_such_database")
    assert not is_transient(failure(missing))
    nobody = psycopg.conninfo.make_conninfo(pg_url, user="no_such_role")
    assert not is_transient(failure(nobody))


def test_connect_retries_a_refused_server_but_not_a_wrong_database(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workdatahub.warehouse import db

    waits: list[float] = []
    monkeypatch.setattr(db.time, "sleep", waits.append)
    with pytest.raises(WarehouseError, match="cannot connect to the warehouse"):
        db.connect("postgresql://u@127.0.0.1:1/x", retries=3)
    assert waits == [0.5, 1.0]  # refused: maybe restarting, so tried three times
    waits.clear()
    missing = psycopg.conninfo.make_conninfo(pg_url, dbname="no_such_database")
    with pytest.raises(WarehouseError, match="no_such_database"):
        db.connect(missing, retries=3)
    assert waits == []  # a database that does not exist will not appear by waiting


# --- 5. the COMMIT went through but its confirmation was lost ------------------------------


class DropCommitAck:
    """A TCP proxy in front of the embedded server's socket that cuts the connection
    exactly when the server confirms the first COMMIT: the transaction is committed, the
    client only sees the connection drop."""

    COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete "COMMIT"

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.armed = True
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.socket_path)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server and self.armed and self.COMMIT_COMPLETE in data:
                    self.armed = False
                    target.sendall(data[: data.index(self.COMMIT_COMPLETE)])
                    self.dropped.set()
                    break
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_commit_whose_confirmation_is_lost_is_not_loaded_twice(
    trustee: DomainSpec,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    load_events: list[dict[str, Any]],
) -> None:
    """Append mode, where loading twice would duplicate: the retry first looks for the
    rows of the try whose COMMIT it never heard back from, finds them, and stops."""
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    if not str(info.get("host", "")).startswith("/"):
        pytest.skip("the proxy fronts the embedded server's unix socket")
    proxy = DropCommitAck(f"{info['host']}/.s.PGSQL.{info.get('port') or 5432}")
    url = (
        f"postgresql://{info.get('user') or 'postgres'}@127.0.0.1:{proxy.port}/{info['dbname']}"
        "?sslmode=disable&gssencmode=disable"
    )
    write_month(tmp_path, NOV, 20)
    try:
        result = run_partition(trustee, NOV, data_dir=tmp_path, url=url, mode="append")
    finally:
        proxy.close()
    assert proxy.dropped.is_set()
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert month_state(pg, NOV) == expected_state(NOV, 20)
    ((load_id, status, message, rows_loaded, _),) = load_log(pg, NOV)
    assert (load_id, status, rows_loaded) == (str(result.plan.load_id), "succeeded", 20)
    assert message == "committed; the confirmation was lost with the connection"
    assert len(retries(load_events)) == 1


# --- 6. a dbt model failing after the raw load ---------------------------------------------


@pytest.fixture
def dbt_target(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """dbt's target folder for these runs, kept under WDH_HOME from run to run: dbt's
    partial parse is only valid for the profile it was made with, and the one in
    dbt_project/target is for the developer's database, so each run would parse the whole
    project again (the slowest part of a small dbt build)."""
    root = get_settings().home / "test-dbt-target"
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DBT_TARGET_PATH", str(root))
    yield root


def keep_partial_parse(root: Path) -> None:
    """Keep the newest run's partial parse for the next run; drop the runs' folders."""
    runs = sorted(
        (p for p in root.iterdir() if (p / "partial_parse.msgpack").exists()),
        key=lambda p: p.stat().st_mtime,
    )
    if runs:
        shutil.copy(runs[-1] / "partial_parse.msgpack", root / "partial_parse.msgpack")
    for run in root.iterdir():
        if run.is_dir():
            shutil.rmtree(run, ignore_errors=True)


@pytest.mark.slow
def test_a_dbt_model_failing_after_the_raw_load(
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    dbt_target: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One Dagster run (raw asset, then the dbt models) for 2024-11: the mart refuses its
    insert, so dbt fails after the raw month went in. Raw holds the complete new month, the
    run is reported failed, the mart keeps what it had; the re-run builds it."""
    import dagster as dg

    raw = dg.AssetKey(["raw", "trustee_performance"])
    mart = dg.AssetKey(["marts", "fct_trustee_performance"])
    # only the trustee models' own tests: the reconciliation test needs every mart built
    monkeypatch.setenv("DBT_INDIRECT_SELECTION", "cautious")
    # a mart that exists (dbt then inserts into it incrementally) and refuses inserts
    pg.execute(
        "create table if not exists marts.fct_trustee_performance as select report_date, "
        "plan_code, company_code, return_rate, net_value, fund_scale, load_id, source_file, "
        "source_sheet, source_row from raw.trustee_performance with no data"
    )
    pg.execute(
        """
        create or replace function marts.wdh_test_refuse() returns trigger language plpgsql
        as $$ begin raise exception 'mart refuses writes (simulated model failure)'; end $$;
        create trigger wdh_test_refuse before insert on marts.fct_trustee_performance
            for each statement execute function marts.wdh_test_refuse();
        """
    )
    mart_before = month_state(pg, NOV, "marts.fct_trustee_performance")
    write_month(tmp_path, NOV, 30, version=4)
    # run folders of earlier dbt steps, two hours old, and a folder that is not one: the
    # failed step keeps its own (the newest) and removes the others beyond WDH_DBT_KEEP_RUNS
    earlier = [dbt_target / f"dbt_models-{n}" for n in ("0a1b2c3-4d5e6f7", "89abcde-f012345")]
    other = dbt_target / "kept-by-a-modeler"
    hours_ago = time.time() - 7200
    for folder in [*earlier, other]:
        folder.mkdir(exist_ok=True)
        (folder / "run_results.json").write_text("{}")
        os.utime(folder, (hours_ago, hours_ago))
    monkeypatch.setenv("WDH_DBT_KEEP_RUNS", "1")
    reset_settings()
    try:
        failed = materialize_trustee(tmp_path, "2024-11")
        folders = {p.name for p in dbt_target.iterdir() if p.is_dir()}
        shutil.rmtree(other)
        keep_partial_parse(dbt_target)
    finally:
        pg.execute("drop trigger if exists wdh_test_refuse on marts.fct_trustee_performance")
        pg.execute("drop function if exists marts.wdh_test_refuse()")
        monkeypatch.delenv("WDH_DBT_KEEP_RUNS")
        reset_settings()
    assert not failed.success
    runs = {name for name in folders if name.startswith("dbt_models-")}
    assert other.name in folders and not runs & {f.name for f in earlier}
    (own,) = runs
    assert own.startswith(f"dbt_models-{failed.run_id[:7]}-")
    failures = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["dbt_models"]
    materialized = {e.asset_key for e in failed.get_asset_materialization_events()}
    assert raw in materialized and mart not in materialized
    assert month_state(pg, NOV) == expected_state(NOV, 30, version=4)
    assert [row[1] for row in load_log(pg, NOV)] == ["succeeded"]
    assert month_state(pg, NOV, "marts.fct_trustee_performance") == mart_before

    rerun = materialize_trustee(tmp_path, "2024-11")
    keep_partial_parse(dbt_target)
    assert rerun.success
    assert month_state(pg, NOV) == expected_state(NOV, 30, version=4)
    assert month_state(pg, NOV, "marts.fct_trustee_performance") == expected_state(
        NOV, 30, version=4
    )
    assert [row[1] for row in load_log(pg, NOV)] == ["succeeded", "succeeded"]


def materialize_trustee(data_dir: Path, partition: str) -> Any:
    """Materialise raw/trustee_performance and its two dbt models for one month, in process."""
    import dagster as dg

    from workdatahub.defs.dbt import dbt_models
    from workdatahub.defs.raw_assets import build_raw_asset
    from workdatahub.defs.resources import WarehouseResource
    from workdatahub.sources.spec import load_sources

    raw = build_raw_asset(load_sources(ROOT / "data_sources.yml").domain("trustee_performance"))
    selection = dg.AssetSelection.assets(
        dg.AssetKey(["raw", "trustee_performance"]),
        dg.AssetKey(["staging", "stg_trustee_performance"]),
        dg.AssetKey(["marts", "fct_trustee_performance"]),
    )
    dbt = _dbt_resource()
    return dg.materialize(
        [raw, dbt_models],
        selection=selection,
        partition_key=partition,
        resources={"warehouse": WarehouseResource(data_dir=str(data_dir)), "dbt": dbt},
        raise_on_error=False,
    )


@functools.cache
def _dbt_resource() -> Any:
    """One dbt resource for all runs: it asks `dbt --version` once, not once per run."""
    from dagster_dbt import DbtCliResource

    from workdatahub.defs.dbt import dbt_project

    return DbtCliResource(
        project_dir=dbt_project, dbt_executable=str(Path(sys.executable).parent / "dbt")
    )


def test_a_failed_read_that_cannot_be_recorded_says_why(
    sources: Any, load_events: list[dict[str, Any]]
) -> None:
    """Best effort, but not silent about its own failure: the warning carried the load's
    reason and not why the record failed (here: nothing listens on the port)."""
    import time
    import uuid
    from datetime import date

    from workdatahub.warehouse.loader import record_failed_read

    spec = sources.domain("trustee_performance")
    nowhere = "postgresql://wdh:secret@127.0.0.1:1/wdh?connect_timeout=2"
    record_failed_read(
        nowhere, spec, date(2024, 11, 1), "delete_insert", [], "workbook unreadable",
        uuid.uuid4(), time.perf_counter(),
    )  # fmt: skip
    (said,) = [e for e in load_events if e["event"] == "could not record the failed load"]
    assert said["reason"] == "workbook unreadable"
    assert "port 1 failed: Connection refused" in said["error"]
    assert "secret" not in str(said)


def test_a_head_that_could_not_open_says_why_as_soon_as_it_says_so(
    sources: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`opened()` returned once the head had tried, but its error was stored after that:
    `lasting_failure()` right after it saw none, and the load went on to open a second
    connection (the same failure, said less well). The signal's thread is slowed here, as
    a busy machine can."""
    import uuid
    from datetime import date
    from urllib.parse import urlsplit, urlunsplit

    from workdatahub.warehouse import loader

    class SlowEvent(threading.Event):
        def set(self) -> None:
            super().set()
            time.sleep(0.3)  # (the setter's thread goes on later than its waiter)

    monkeypatch.setattr(loader, "Event", SlowEvent)
    url = urlunsplit(urlsplit(pg_url)._replace(path="/wdh_no_such_database"))
    head = loader.Head(
        sources.domain("trustee_performance"), date(2024, 11, 1), "delete_insert",
        uuid.uuid4(), url, [], time.perf_counter(),
    )  # fmt: skip
    try:
        assert not head.opened()
        failure = head.lasting_failure()
        assert isinstance(failure, loader.LoadNotStarted), failure
        assert 'database "wdh_no_such_database" does not exist' in failure.message
    finally:
        head.close()
