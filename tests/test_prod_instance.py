"""The production instance config (dagster.prod.yaml) really works: Postgres run/event/
schedule storage (psycopg2 URL), queued runs, pools, retries — against the embedded Postgres."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest

from workdatahub.warehouse.db import connection_parts

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parent.parent


@dg.asset
def heartbeat() -> int:
    return 1


def test_prod_instance_uses_postgres_storage(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = connection_parts(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("drop database if exists wdh_dagster_test")
        conn.execute("create database wdh_dagster_test")
    host = quote(parts["host"], safe="")
    url = f"postgresql+psycopg2://{parts['user']}@/wdh_dagster_test?host={host}"
    monkeypatch.setenv("WDH_DAGSTER_PG_URL", url)
    shutil.copy(ROOT / "dagster.prod.yaml", tmp_path / "dagster.yaml")

    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled  # a run lost with its worker is noticed
        # and the pool slots it held are freed (its retry would wait for them forever)
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        concurrency: Any = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs == 6

        result = dg.materialize([heartbeat], instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(dg.AssetKey("heartbeat")) is not None
    finally:
        instance.dispose()
    with psycopg.connect(pg_url, dbname="wdh_dagster_test") as conn:
        runs = conn.execute("select count(*) from runs").fetchone()
        assert runs == (1,)


def test_the_local_instance_retries_no_failed_step_and_runs_one_run_at_a_time(
    tmp_path: Path,
) -> None:
    """A refused or broken workbook fails its step: running it again would only log a second
    refusal and send a second alert. The arrival sensor's runs of both annuity domains
    build the dbt models they share: queued, not at once."""
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        # one run at a time: two builds of the same dbt models at once fail
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency: Any = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 1
    finally:
        instance.dispose()


def test_raw_tables_and_dbt_each_have_a_pool() -> None:
    from workdatahub.definitions import defs

    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert pools["raw/annuity_income"] == {"raw_annuity_income"}
    assert pools["marts/fct_annuity_income"] == {"dbt_build"}
