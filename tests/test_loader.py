"""The loader against a real Postgres: idempotent months, all-or-nothing loads, plan-only."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.warehouse import EARLY_DELETE, Background, wait_for_backend
from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook
from workdatahub import pipeline
from workdatahub.errors import InputError, RejectThresholdExceeded, WarehouseError
from workdatahub.pipeline import run_partition
from workdatahub.sources.spec import SourcesFile

pytestmark = pytest.mark.db
NOV, DEC = date(2024, 11, 1), date(2024, 12, 1)


def trustee_month(
    data_dir: Path, period: date, rows: list[list[Any]], name: str = "受托业绩.xlsx"
) -> Path:
    folder = trustee_folder(data_dir, f"{period:%Y%m}", "受托部")
    return write_workbook(folder / name, {"Sheet1": [TRUSTEE_HEADER, *rows]})


def rows_for(period: date, n: int, scale: int = 1) -> list[list[Any]]:
    return [
        [period.year, period.month, f"P{i:04d}", "C01", "5%", i * scale, 100 * i] for i in range(n)
    ]


def table_state(pg: Any, period: date | None = None) -> tuple[int, str]:
    """Row count and a checksum of the business columns (lineage excluded)."""
    where = "where report_date = %s" if period else ""
    rows = pg.execute(
        f"select report_date, plan_code, company_code, return_rate, net_value, fund_scale "
        f"from raw.trustee_performance {where} order by 1, 2, 3",
        [period] if period else [],
    ).fetchall()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def month_loaded(spec: Any, data_dir: Path, url: str, pg: Any) -> tuple[int, str]:
    """November loaded with 10 rows from a workbook under `data_dir`; its table_state."""
    trustee_month(data_dir, NOV, rows_for(NOV, 10))
    run_partition(spec, NOV, data_dir=data_dir, url=url)
    return table_state(pg)


def in_transaction(pg: Any, within: float = 2.0) -> bool:
    """Whether some session is left idle in a transaction (a load not rolled back) after
    `within` seconds: a connection the load closed leaves its server process a moment
    later, showing meanwhile as it was (the server rolls it back as it goes)."""
    deadline = time.monotonic() + within
    while True:
        found = pg.execute(
            "select 1 from pg_stat_activity where state like 'idle in transaction%%'"
        ).fetchone()
        if found is None or time.monotonic() > deadline:
            return found is not None
        time.sleep(0.02)


def slow_reads(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every workbook read of the pipeline takes `seconds` longer."""
    read_sheet = pipeline.read_sheet

    def slow_read(*args: Any) -> Any:
        time.sleep(seconds)
        return read_sheet(*args)

    monkeypatch.setattr(pipeline, "read_sheet", slow_read)


def test_load_twice_gives_the_same_table_and_two_log_rows(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, rows_for(NOV, 20))
    first = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    state = table_state(pg)
    second = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert state == table_state(pg) and state[0] == 20
    assert second.outcome and second.outcome.rows_deleted == 20
    log = pg.execute(
        "select load_id, status, rows_loaded from wdh.load_log order by started_at"
    ).fetchall()
    assert [(str(r[0]), r[1], r[2]) for r in log] == [
        (str(first.plan.load_id), "succeeded", 20),
        (str(second.plan.load_id), "succeeded", 20),
    ]
    lineage = pg.execute(
        "select distinct load_id::text, source_file, source_sheet from raw.trustee_performance"
    ).fetchall()
    assert lineage == [
        (str(second.plan.load_id), "202411/收集数据/业务收集/受托部/受托业绩.xlsx", "Sheet1")
    ]
    rows = pg.execute(
        "select min(source_row), max(source_row) from raw.trustee_performance"
    ).fetchone()
    assert rows == (2, 21)


def test_the_log_times_the_whole_load_from_discovery_to_commit(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`wdh history`'s seconds are the load's, reading included, not the database step's."""
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, rows_for(NOV, 5))
    slow_reads(monkeypatch, 0.5)
    before = datetime.now(UTC)
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    started, seconds = pg.execute(
        "select started_at, extract(epoch from finished_at - started_at) from wdh.load_log"
    ).fetchone()
    assert before <= started < before + timedelta(seconds=0.4)
    assert seconds >= 0.5


def test_a_month_replaces_only_itself(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, rows_for(NOV, 5))
    trustee_month(tmp_path, DEC, rows_for(DEC, 7))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    run_partition(spec, DEC, data_dir=tmp_path, url=pg_url)
    dec_before = table_state(pg, DEC)
    trustee_month(tmp_path, NOV, rows_for(NOV, 3, scale=2))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert table_state(pg, NOV)[0] == 3
    assert table_state(pg, DEC) == dec_before


def test_plan_only_writes_nothing_and_needs_no_database(
    sources: SourcesFile, tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, [*rows_for(NOV, 4), [2024, 11, "PX", "C01", "abc", 1, 1]])
    result = run_partition(
        spec,
        NOV,
        data_dir=tmp_path,
        url="postgresql://nobody:secret@127.0.0.1:1/none",
        plan_only=True,
    )
    assert result.outcome is None
    text = result.plan.render()
    assert (
        'delete from "raw"."trustee_performance" where "report_date" = \'2024-11-01\'::date' in text
    )
    assert "-- copy the valid rows (4 rows)" in text
    assert "-- quarantine the rejected rows, a line per reason (1 row)" in text
    assert pg.execute("select count(*) from wdh.load_log").fetchone() == (0,)
    assert table_state(pg)[0] == 0


@pytest.mark.parametrize("mode", ["delete_insert", "append"])
def test_plan_only_given_the_warehouse_touches_nothing(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None, mode: str
) -> None:
    """A plan given a URL that answers (Dagster's resource, a script) opens no load-log
    row and no transaction: no lock taken, no month deleted, nothing asked."""
    spec = sources.domain("trustee_performance")
    before = month_loaded(spec, tmp_path, pg_url, pg)
    logged = pg.execute("select count(*) from wdh.load_log").fetchone()
    result = run_partition(
        spec,
        NOV,
        data_dir=tmp_path,
        url=pg_url,
        plan_only=True,
        mode=mode,  # type: ignore[arg-type]
    )
    assert result.outcome is None and result.plan.render()
    assert pg.execute("select count(*) from wdh.load_log").fetchone() == logged  # no 'running'
    assert table_state(pg) == before


def test_a_load_failing_midway_leaves_the_previous_month_intact(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """A trigger fails the COPY after the DELETE ran: the transaction must roll back."""
    spec = sources.domain("trustee_performance")
    before = month_loaded(spec, tmp_path, pg_url, pg)
    pg.execute(
        """
        create or replace function raw.fail_on_boom() returns trigger language plpgsql as $$
        begin
            if new.plan_code = 'BOOM' then raise exception 'disk full (simulated)'; end if;
            return new;
        end $$;
        create trigger fail_on_boom before insert on raw.trustee_performance
            for each row execute function raw.fail_on_boom();
        """
    )
    try:
        rows = rows_for(NOV, 8, scale=3)
        rows[6][2] = "BOOM"
        trustee_month(tmp_path, NOV, rows)
        with pytest.raises(WarehouseError, match="rolled back, table unchanged: disk full"):
            run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    finally:
        pg.execute(
            "drop trigger fail_on_boom on raw.trustee_performance; drop function raw.fail_on_boom()"
        )
    assert table_state(pg) == before
    last = pg.execute(
        "select status, message from wdh.load_log order by started_at desc limit 1"
    ).fetchone()
    assert last[0] == "failed" and "disk full" in last[1]
    assert pg.execute("select count(*) from wdh.rejected_rows").fetchone() == (0,)


def test_reject_threshold_refuses_the_load_but_keeps_the_rejects(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, rows_for(NOV, 4))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    before = table_state(pg)
    bad = [[2024, 11, f"Q{i}", "C01", "abc", 1, 1] for i in range(5)]
    trustee_month(tmp_path, NOV, rows_for(NOV, 2) + bad)
    with pytest.raises(RejectThresholdExceeded, match="5 of 7 rows rejected"):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert table_state(pg) == before
    status = pg.execute(
        "select status from wdh.load_log order by started_at desc limit 1"
    ).fetchone()
    assert status == ("refused",)
    quarantined = pg.execute(
        "select source_row, column_name, value, reason, raw_row->>'plan_code' "
        "from wdh.rejected_rows order by 1"
    ).fetchall()
    assert quarantined[0] == (4, "return_rate", "abc", "not a rate or percentage: 'abc'", "Q0")
    assert len(quarantined) == 5


def test_audit_loads_shows_analysts_each_load_its_headers_and_rejects_without_values(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    bad = [[2024, 11, "Q1", "C01", "abc", 1, 1]]
    path = trustee_month(tmp_path, NOV, rows_for(NOV, 9) + bad)
    first = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    trustee_month(tmp_path, NOV, rows_for(NOV, 3))
    second = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    loads = pg.execute(
        "select load_id, status, mode, source_file, sha256, source_sheet, headers, rows_read, "
        "rows_loaded, rows_rejected, rejected_by_column, replaced_at, finished_at "
        "from audit.loads order by started_at"
    ).fetchall()
    assert [load[0] for load in loads] == [first.plan.load_id, second.plan.load_id]
    assert first.discovery is not None
    sha256 = first.discovery.files[0].sha256
    where = str(path.relative_to(tmp_path))
    assert loads[0][1:6] == ("succeeded", "delete_insert", where, sha256, "Sheet1")
    headers = loads[0][6]
    assert headers["return_rate"] == "收益率" and headers["plan_code"] == "计划代码"
    assert loads[0][7:11] == (10, 9, 1, {"return_rate": 1})
    assert loads[0][11] == loads[1][12]  # replaced when the second load ended
    assert loads[1][7:12] == (3, 3, 0, None, None)  # its rows are the table's
    # no cell's value: the view has no column that could hold one
    columns = [d.name for d in pg.execute("select * from audit.loads limit 0").description]
    assert not {"message", "files", "value", "reason", "raw_row"} & set(columns)


def test_append_and_upsert_modes(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, rows_for(NOV, 3))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    first = pg.execute("select max(loaded_at) from raw.trustee_performance").fetchone()[0]
    trustee_month(tmp_path, NOV, rows_for(NOV, 5, scale=10))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url, mode="upsert")
    values = pg.execute(
        "select plan_code, net_value from raw.trustee_performance order by 1"
    ).fetchall()
    assert [(p, int(v)) for p, v in values] == [(f"P{i:04d}", 10 * i) for i in range(5)]
    # the rows it updated were loaded by the upsert, as those it added (source freshness)
    loaded = pg.execute("select distinct loaded_at from raw.trustee_performance").fetchall()
    assert len(loaded) == 1 and loaded[0][0] > first
    # append onto existing keys violates the key: refused as a whole, table unchanged (a
    # file of its own: the upsert's file appended again is refused before the database)
    state = table_state(pg)
    with pytest.raises(InputError, match="appending it again would duplicate them"):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url, mode="append")
    # the operator's input, not the warehouse failing: an input error (exit 2) naming the
    # file, the sheet, the Excel row and the key
    trustee_month(tmp_path, NOV, rows_for(NOV, 4, scale=7))
    with pytest.raises(InputError) as error:
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url, mode="append")
    assert re.fullmatch(
        r"raw\.trustee_performance 2024-11: \S+\.xlsx \[Sheet1\] row 2: key \(report_date, "
        r"plan_code, company_code\) = \(2024-11-01, P0000, \w+\) is already in the table; an "
        r"append adds rows \(to update them load with --mode upsert, to replace the month with "
        r"--mode delete_insert\); table unchanged",
        error.value.message,
    ), error.value.message
    assert table_state(pg) == state
    logged = pg.execute(
        "select status, message from wdh.load_log order by started_at desc limit 1"
    ).fetchone()
    assert logged == ("failed", error.value.message)


@pytest.mark.parametrize("change", ["replaced", "saved again", "removed", "touched"])
def test_a_workbook_changed_while_it_is_loaded_leaves_the_table_as_it_was(
    change: str,
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A load records (and an append is checked by) the sha256 of the file as discovery
    hashed it: a workbook replaced (Excel renames a new file over it), saved again in place
    or removed while it is read is refused before anything commits, and the load log says
    why, rather than recording one file's hash beside another file's rows."""
    import os

    spec = sources.domain("trustee_performance")
    state = month_loaded(spec, tmp_path, pg_url, pg)
    path = trustee_month(tmp_path, NOV, rows_for(NOV, 4, scale=3))
    other = trustee_month(tmp_path / "other", NOV, rows_for(NOV, 2, scale=5))
    real = pipeline.check_file

    def changing(*args: Any, **kwargs: Any) -> Any:
        checked = real(*args, **kwargs)  # read, cleansed, validated and COPYed (streamed)
        if change == "replaced":
            os.replace(other, path)
        elif change == "saved again":  # other content, in place
            path.write_bytes(other.read_bytes())
        elif change == "touched":  # the same content, a new time (a sync client, a scanner)
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        else:
            path.unlink()
        return checked

    monkeypatch.setattr(pipeline, "check_file", changing)
    if change == "touched":  # loaded: what was read is what was hashed
        loaded = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
        assert loaded.outcome is not None and loaded.outcome.rows_loaded == 4
        return
    with pytest.raises(InputError) as error:
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert error.value.message.endswith(
        "受托业绩.xlsx: changed while it was being loaded (saved again, replaced or removed); "
        "table unchanged, load it again"
    ), error.value.message
    assert table_state(pg) == state
    assert not in_transaction(pg)
    logged = pg.execute(
        "select status, message from wdh.load_log order by started_at desc limit 1"
    ).fetchone()
    assert logged == ("failed", error.value.message)


def test_a_workbook_changed_while_it_is_hashed_is_not_loaded(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from workdatahub.sources import discovery

    spec = sources.domain("trustee_performance")
    path = trustee_month(tmp_path, NOV, rows_for(NOV, 3))
    real = discovery.sha256_of

    def saving(file: Path) -> str:
        digest = real(file)
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        return digest

    monkeypatch.setattr(discovery, "sha256_of", saving)
    with pytest.raises(InputError, match="changed while it was being read"):
        discovery.discover(spec, NOV, tmp_path)
    monkeypatch.setattr(discovery, "sha256_of", real)
    assert discovery.discover(spec, NOV, tmp_path).files[0].sha256 == real(path)


def test_a_stale_running_row_is_marked_abandoned(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    pg.execute(
        "insert into wdh.load_log (load_id, domain, period, target_table, mode, status) values "
        "(gen_random_uuid(), 'trustee_performance', '2024-11-01', 'raw.trustee_performance', "
        "'delete_insert', 'running')"
    )
    trustee_month(tmp_path, NOV, rows_for(NOV, 2))
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    statuses = sorted(r[0] for r in pg.execute("select status from wdh.load_log").fetchall())
    assert statuses == ["abandoned", "succeeded"]


def test_a_running_row_whose_load_is_alive_is_not_marked_abandoned(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """A load writes its 'running' row before it reads the workbook, and holds a lock of its
    own while it runs: a load of the month waiting for the month's lock is alive. Only once
    its lock is free (its process ended) is its row marked `abandoned`."""
    spec = sources.domain("trustee_performance")
    waiting = "7d444840-9dc1-4f6f-9b5a-3d3f0e2b8f11"
    pg.execute(
        "insert into wdh.load_log (load_id, domain, period, target_table, mode, status) values "
        "(%s, 'trustee_performance', '2024-11-01', 'raw.trustee_performance', "
        "'delete_insert', 'running')",
        [waiting],
    )
    trustee_month(tmp_path, NOV, rows_for(NOV, 2))
    with psycopg.connect(pg_url, autocommit=True) as alive:
        alive.execute("select pg_advisory_lock(hashtextextended('wdh.load:' || %s, 0))", [waiting])
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
        status = "select status from wdh.load_log where load_id = %s"
        assert pg.execute(status, [waiting]).fetchone() == ("running",)
    run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)  # its session has ended
    assert pg.execute(status, [waiting]).fetchone() == ("abandoned",)


def test_a_load_that_ends_while_the_next_waits_for_the_month_is_marked_by_it(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """Load A holds the month (alive when B starts, so B's start leaves its row); A's process
    is killed; B, once it has the month, marks A abandoned, rather than leaving A 'running'
    until some later load of the month."""
    from workdatahub.warehouse.loader import _lock_key

    spec = sources.domain("trustee_performance")
    killed = "0b9a1e0c-7e0e-4d0e-8f5a-6a3c2b1d0e9f"
    pg.execute(
        "insert into wdh.load_log (load_id, domain, period, target_table, mode, status) values "
        "(%s, 'trustee_performance', '2024-11-01', 'raw.trustee_performance', "
        "'delete_insert', 'running')",
        [killed],
    )
    trustee_month(tmp_path, NOV, rows_for(NOV, 2))
    a = psycopg.connect(pg_url)  # load A: its own lock, and the month's
    a.execute("select pg_advisory_lock(hashtextextended('wdh.load:' || %s, 0))", [killed])
    a.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", [_lock_key(spec, NOV)])
    b = Background(run_partition, spec, NOV, data_dir=tmp_path, url=pg_url)
    wait_for_backend(pg, "wait_event_type = 'Lock' and query ilike '%pg_advisory_xact_lock%'")
    a.close()  # A's process ends: both its locks go
    assert b.result(timeout=30).outcome is not None
    status = "select status from wdh.load_log where load_id = %s"
    assert pg.execute(status, [killed]).fetchone() == ("abandoned",)


def test_connection_failure_is_one_clear_line(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    trustee_month(tmp_path, NOV, rows_for(NOV, 2))
    with pytest.raises(WarehouseError) as error:
        run_partition(spec, NOV, data_dir=tmp_path, url="postgresql://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(error.value)
    assert "\n" not in str(error.value)


def test_quality_metrics_recorded_per_load(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    spec = sources.domain("trustee_performance")
    rows = rows_for(NOV, 4)
    rows[1][6] = "-"  # fund_scale null placeholder
    trustee_month(tmp_path, NOV, [*rows, [2024, 11, "PX", "C01", "abc", 1, 1]])
    result = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    stored = pg.execute(
        "select rows_read, rows_loaded, rows_rejected, reject_rate, null_rates "
        "from wdh.data_quality_metrics where load_id = %s",
        [result.plan.load_id],
    ).fetchone()
    assert stored[:3] == (5, 4, 1) and float(stored[3]) == 0.2
    assert stored[4]["plan_code"] == 0.0 and "report_date" in stored[4]
    assert result.quality["rows_loaded"] == 4


def test_long_copies_report_progress(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from workdatahub import logs
    from workdatahub.warehouse import loader

    # small batches and no throttle stand in for a 500,000-row month
    monkeypatch.setattr(loader, "COPY_BATCH_ROWS", 3)
    monkeypatch.setattr(loader._Progress, "EVERY_S", 0.0)
    monkeypatch.setenv("WDH_LOG_LEVEL", "INFO")
    from workdatahub.settings import reset_settings

    reset_settings()
    logs.configure_logging(force=True)
    try:
        trustee_month(tmp_path, NOV, rows_for(NOV, 10))
        run_partition(sources.domain("trustee_performance"), NOV, data_dir=tmp_path, url=pg_url)
    finally:
        monkeypatch.delenv("WDH_LOG_LEVEL")
        reset_settings()
        logs.configure_logging(force=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "copying" in line]
    assert [line.split("rows_sent=")[1].split()[0] for line in lines] == ["3", "6", "9"]
    assert all("load_id=" in line and "partition=2024-11" in line for line in lines)
    assert table_state(pg)[0] == 10


def test_copy_batches_encoded_ahead_come_in_order_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import polars as pl

    from workdatahub.warehouse import loader

    frame = pl.DataFrame({"n": list(range(1000)), "t": [f"row {i}" for i in range(1000)]})
    types = ["bigint", "text"]
    monkeypatch.setattr(loader, "COPY_BATCH_ROWS", 100)
    # encoded one by one, without the class under test
    expected = [loader._binary_rows(batch, types) for batch in frame.iter_slices(100)]
    assert len(expected) == 10
    assert list(loader.binary_batches(frame, types)) == expected

    def encode(batch: pl.DataFrame) -> bytes:
        return loader._binary_rows(batch, types)

    ahead = loader._Ahead(frame.iter_slices(100), encode, budget=1)  # one batch waits
    try:
        for _ in range(100):  # the encoder runs ahead, then waits for room
            if ahead._held:
                break
            threading.Event().wait(0.05)
        threading.Event().wait(0.1)
        assert ahead._held == len(expected[0])  # one batch, not more
        assert list(ahead) == expected
    finally:
        ahead.close()
    # closed while the encoder waits for room: close returns and the thread ends
    waiting = loader._Ahead(frame.iter_slices(100), encode, budget=1)
    closing = threading.Thread(target=waiting.close)
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive() and not waiting._thread.is_alive()


def test_an_encoding_error_reaches_the_copy_after_the_batches_before_it() -> None:
    import polars as pl

    from workdatahub.warehouse import loader

    frame = pl.DataFrame({"n": list(range(300))})

    def failing(batch: pl.DataFrame) -> bytes:
        if batch["n"][0] == 200:
            raise ValueError("cannot encode")
        return loader._binary_rows(batch, ["bigint"])

    ahead = loader._Ahead(frame.iter_slices(100), failing, loader.COPY_AHEAD_BYTES)
    got = []
    with pytest.raises(ValueError, match="cannot encode"):
        for chunk in ahead:
            got.append(chunk)
    ahead.close()
    assert len(got) == 2


def test_the_month_is_deleted_while_the_workbook_is_read_and_kept_when_it_is_unreadable(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The load's transaction begins (the month's lock, its old rows deleted) while the
    workbook is read; readers see the old month meanwhile. A workbook that turns out
    unreadable rolls that back: the month, one 'failed' row, and no lock are left."""
    spec = sources.domain("trustee_performance")
    before = month_loaded(spec, tmp_path, pg_url, pg)
    seen: list[tuple[int, str]] = []
    real_check = pipeline.check_file

    def check_once_deleted(*args: Any, **kwargs: Any) -> Any:
        wait_for_backend(pg, EARLY_DELETE)  # fails unless the delete ran during the read
        seen.append(table_state(pg))
        return real_check(*args, **kwargs)

    monkeypatch.setattr(pipeline, "check_file", check_once_deleted)
    path = trustee_month(tmp_path, NOV, rows_for(NOV, 3, scale=2))
    broken = path.read_bytes()
    path.write_bytes(broken[: len(broken) // 2])  # cut short: not a readable workbook
    with pytest.raises(InputError):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert seen == [before]  # readers saw the old month while its deletion was pending
    assert table_state(pg) == before
    statuses = [r[0] for r in pg.execute("select status from wdh.load_log order by started_at")]
    assert statuses == ["succeeded", "failed"]
    assert not in_transaction(pg)

    # nothing holds the month: a load waiting at most 300 ms for it goes in, deleting early
    monkeypatch.setattr("workdatahub.warehouse.loader.LOCK_TIMEOUT", "300ms")
    path.write_bytes(broken)
    result = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert result.outcome is not None and result.outcome.rows_deleted == 10
    assert "delete (while reading)" in result.outcome.timings
    assert table_state(pg, NOV)[0] == 3


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (KeyboardInterrupt, "stopped while reading: KeyboardInterrupt"),  # or a stop from Dagster
        (MemoryError, "failed while reading: MemoryError"),  # any failure, not only a workbook's
    ],
)
def test_a_load_stopped_or_failing_while_reading_leaves_a_failed_row_and_the_month(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
    error: type[BaseException],
    message: str,
) -> None:
    """Ctrl-C, or any failure, while the workbook is read: the month stays as it was, the
    load's row (written before the read) says it failed and why, and no session is left in
    the month."""
    spec = sources.domain("trustee_performance")
    before = month_loaded(spec, tmp_path, pg_url, pg)

    def stopped(*args: Any, **kwargs: Any) -> Any:
        wait_for_backend(pg, EARLY_DELETE)  # the month's delete has begun beside the read
        time.sleep(0.3)  # reading
        raise error

    monkeypatch.setattr(pipeline, "check_file", stopped)
    with pytest.raises(error):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert table_state(pg) == before
    rows = pg.execute(
        "select status, message, extract(epoch from finished_at - started_at) "
        "from wdh.load_log order by started_at"
    ).fetchall()
    assert rows[0][0] == "succeeded"
    assert rows[1][:2] == ("failed", message)
    assert rows[1][2] >= 0.3  # how long it ran before it was stopped
    assert not in_transaction(pg)


def test_an_unreadable_workbook_is_reported_at_once_while_another_load_holds_the_month(
    sources: SourcesFile, tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """The early transaction waits for the month's lock; the read failing meanwhile ends
    that wait: the operator hears about the workbook now, not when the other load ends."""
    from workdatahub.warehouse.loader import _lock_key

    spec = sources.domain("trustee_performance")
    path = trustee_month(tmp_path, NOV, rows_for(NOV, 3))
    path.write_bytes(path.read_bytes()[:100])
    with psycopg.connect(pg_url) as other:  # another load, holding the month
        other.execute(
            "select pg_advisory_xact_lock(hashtextextended(%s, 0))", [_lock_key(spec, NOV)]
        )
        load = Background(run_partition, spec, NOV, data_dir=tmp_path, url=pg_url)
        with pytest.raises(InputError):
            load.result(timeout=20)  # fails, not hangs, if the wait were not ended
        waiting = pg.execute(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
            "and datname = current_database()"
        ).fetchone()
        assert waiting == (0,)  # the early transaction is gone, not still queued
    assert [r[0] for r in pg.execute("select status from wdh.load_log")] == ["failed"]


def test_rows_stream_into_the_load_while_later_parts_are_cleansed_and_roll_back_on_failure(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first part's valid rows are in the load's COPY while the next part is cleansed;
    a failure then (here, in cleansing) rolls the whole load back: the month stays as it
    was and no session is left in the transaction or the COPY."""
    spec = sources.domain("trustee_performance")
    before = month_loaded(spec, tmp_path, pg_url, pg)
    monkeypatch.setattr(pipeline, "FIRST_PART_ROWS", 3)
    monkeypatch.setattr(pipeline, "PART_GROWTH", 1)
    real_cleanse = pipeline.cleanse
    calls: list[int] = []

    def cleanse_then_fail(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls))
        if len(calls) == 2:  # the first part is being copied meanwhile
            wait_for_backend(pg, "state = 'active' and query ilike 'copy %trustee_performance%'")
            raise RuntimeError("cleansing broke")
        return real_cleanse(*args, **kwargs)

    monkeypatch.setattr(pipeline, "cleanse", cleanse_then_fail)
    trustee_month(tmp_path, NOV, rows_for(NOV, 12, scale=3))
    with pytest.raises(RuntimeError, match="cleansing broke"):
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert table_state(pg) == before
    # the load's row says how far it got (not "while reading": the rows were streaming)
    assert pg.execute(
        "select status, message from wdh.load_log order by started_at desc limit 1"
    ).fetchone() == ("failed", "failed while cleansing and loading: cleansing broke")
    assert not pg.execute(
        "select 1 from pg_stat_activity where datname = current_database() "
        "and pid <> pg_backend_pid() and (state like 'idle in transaction%%' "
        "or query ilike 'copy %%trustee_performance%%' and state = 'active')"
    ).fetchone()

    # and without the failure the parts all arrive: the month is the new workbook's
    monkeypatch.setattr(pipeline, "cleanse", real_cleanse)
    result = run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    assert result.outcome is not None and "copy (while cleansing)" in result.outcome.timings
    assert table_state(pg, NOV)[0] == 12 and table_state(pg) != before


def test_two_appends_of_one_file_at_once_load_it_once(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table without a key (nothing in the database refuses the same rows twice): the
    second append passed the check before the load (the first had not committed), waited
    for the month's lock, and is refused under it, before its commit."""
    from workdatahub.samples import write_samples

    spec = sources.domain("annuity_income")
    assert not spec.key
    write_samples(tmp_path, [NOV], rows=30, seed=3, domains=("annuity_income",), quirks=False)
    slow_reads(monkeypatch, 1.0)
    load = {"data_dir": tmp_path, "url": pg_url, "mode": "append", "max_reject_rate": 1.0}
    first = Background(run_partition, spec, NOV, **load)
    with psycopg.connect(pg_url, autocommit=True) as watch:
        # the first load's transaction holds the month's lock while its workbook is read
        # (its last statement, once it has the lock, marks the month's dead loads)
        wait_for_backend(
            watch, "state = 'idle in transaction' and query ilike '%status = ''abandoned''%'"
        )
        second = Background(run_partition, spec, NOV, **load)
        loaded = first.result().outcome
    assert loaded is not None and loaded.status == "succeeded" and loaded.rows_loaded > 0
    with pytest.raises(InputError, match="appending it again would duplicate them"):
        second.result()
    rows = pg.execute(
        "select count(*), count(distinct load_id) from raw.annuity_income where period = %s",
        [NOV],
    ).fetchone()
    assert rows == (loaded.rows_loaded, 1)
    statuses = pg.execute(
        "select status from wdh.load_log where domain = 'annuity_income' order by started_at"
    ).fetchall()
    assert [s for (s,) in statuses] == ["succeeded", "failed"]


@pytest.mark.parametrize("when", ["commit", "metrics"])
def test_a_stop_once_the_load_committed_says_the_month_is_loaded(
    sources: SourcesFile,
    tmp_path: Path,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """Ctrl-C as COMMIT is confirmed (psycopg stops waiting, the server committed), or while
    the quality metrics are written: the stop goes on as a stop, but says the month is
    loaded, and the load log says succeeded, not failed."""
    import psycopg

    from workdatahub import quality
    from workdatahub.errors import loaded_note

    spec = sources.domain("trustee_performance")
    month_loaded(spec, tmp_path, pg_url, pg)
    trustee_month(tmp_path, NOV, rows_for(NOV, 4, scale=3))
    if when == "commit":
        real_commit = psycopg.Connection.commit
        stopped: list[bool] = []

        def commit_then_stop(self: Any) -> None:
            real_commit(self)
            if not stopped and not self.autocommit:
                stopped.append(True)
                raise KeyboardInterrupt

        monkeypatch.setattr(psycopg.Connection, "commit", commit_then_stop)
    else:

        def stop(*args: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(quality, "record", stop)
    with pytest.raises(KeyboardInterrupt) as caught:
        run_partition(spec, NOV, data_dir=tmp_path, url=pg_url)
    note = loaded_note(caught.value)
    assert note is not None and note.startswith(
        "raw.trustee_performance 2024-11 was loaded before the stop (4 rows, load "
    )
    assert table_state(pg, NOV)[0] == 4  # the new month
    statuses = [r[0] for r in pg.execute("select status from wdh.load_log order by started_at")]
    assert statuses == ["succeeded", "succeeded"]


def test_a_load_stopped_while_the_server_does_not_answer_ends_all_the_same(
    sources: SourcesFile,
    pg_url: str,
    pg: Any,
    fresh_tables: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A stop (Ctrl-C) while the server is hung: the cancel is never answered, and a thread
    stays blocked writing to it. The load waits CLOSE_WAIT_S, says so, and ends; the process
    ending then ends the connection (nothing was committed)."""
    import threading
    import uuid

    from workdatahub.warehouse import loader

    monkeypatch.setattr(loader, "CLOSE_WAIT_S", 0.5)
    spec = sources.domain("trustee_performance")
    head = loader.Head(spec, NOV, "delete_insert", uuid.uuid4(), pg_url, [], time.perf_counter())
    assert head.opened()  # its 'running' row written, its transaction begun
    wait_for_backend(pg, EARLY_DELETE)  # the month's delete done: idle in the transaction
    blocked = threading.Event()
    head._copier = threading.Thread(target=blocked.wait, daemon=True)  # as if hung in a write
    head._copier.start()
    started = time.monotonic()
    head.close()
    assert time.monotonic() - started < 5
    assert head._copier.is_alive()
    assert "the warehouse did not answer the cancel within 0.5 s" in capfd.readouterr().err
    blocked.set()  # the server answers after all: the head's connection is closed then
    deadline = time.monotonic() + 10
    while head._conn is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert head._conn is None and not in_transaction(pg)
    # nothing committed: the head's own row is all the log holds, still as it began
    assert pg.execute("select load_id, status from wdh.load_log").fetchall() == [
        (head.load_id, "running")
    ]
