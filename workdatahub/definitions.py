"""The Dagster code location: `dagster dev -m workdatahub.definitions` (or `make dev`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from workdatahub.defs.automation import (
    alert_on_failed_check,
    alert_on_run_failure,
    build_arrival_sensor,
    build_freshness_checks,
    build_freshness_sensor,
    monthly_schedule,
)
from workdatahub.defs.dbt import dbt_models, dbt_project, dbt_reference_seeds
from workdatahub.defs.jobs import build_monthly_refresh
from workdatahub.defs.raw_assets import build_raw_assets, raw_asset_key
from workdatahub.defs.resources import WarehouseResource
from workdatahub.sources.spec import load_sources

sources = load_sources()
raw_assets = build_raw_assets(sources)


def _dbt_executable() -> str:
    """The dbt beside this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


resources = {
    "warehouse": WarehouseResource(),
    "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=_dbt_executable()),
}
assets = [*raw_assets, dbt_reference_seeds, dbt_models]
_graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
# what a new workbook of a domain refreshes: its raw asset and every model downstream of it
downstream = {
    name: sorted(
        dg.AssetSelection.assets(raw_asset_key(name)).downstream().resolve(_graph),
        key=lambda key: key.to_user_string(),
    )
    for name in sources.domains
}
# freshness: each domain's raw asset and its downstream marts are due on its due day
due_days: dict[int, list[dg.AssetKey]] = {}
for name, spec in sources.domains.items():
    day = spec.due_day
    for key in downstream[name]:
        if key.path[0] in ("raw", "marts") and key not in due_days.setdefault(day, []):
            due_days[day].append(key)
freshness_checks = build_freshness_checks(due_days)
monthly_refresh = build_monthly_refresh(freshness_checks)

defs = dg.Definitions(
    # Steps are database-bound and short; a subprocess per step would re-import the code
    # location (dbt manifest, polars, Pandera) for each one, which costs more than the step.
    executor=dg.in_process_executor,
    assets=assets,
    asset_checks=freshness_checks,
    jobs=[monthly_refresh],
    schedules=[monthly_schedule],
    sensors=[
        build_arrival_sensor(sources, downstream),
        build_freshness_sensor(freshness_checks),
        alert_on_run_failure,
        alert_on_failed_check,
    ],
    resources=resources,
)
