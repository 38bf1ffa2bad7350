"""The Dagster code location: `dagster dev -m workdatahub.definitions` (or `make dev`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from workdatahub.defs.automation import (
    Refresh,
    alert_on_failed_check,
    alert_on_run_failure,
    build_arrival_sensor,
    build_freshness_checks,
    build_freshness_sensor,
    build_monthly_schedule,
)
from workdatahub.defs.dbt import (
    ProjectDbtResource,
    dbt_models,
    dbt_project,
    dbt_reference_seeds,
    with_due_days,
)
from workdatahub.defs.jobs import build_monthly_refresh
from workdatahub.defs.raw_assets import build_raw_assets, raw_asset_key
from workdatahub.defs.resources import WarehouseResource
from workdatahub.logs import configure_logging, get_logger
from workdatahub.settings import undo_dagster_env_file
from workdatahub.sources.spec import SourcesFile, load_sources
from workdatahub.warehouse.db import dbt_executable


def due_days_by_asset(
    sources: SourcesFile, downstream: Mapping[str, Sequence[dg.AssetKey]]
) -> dict[dg.AssetKey, int]:
    """Each raw asset and mart is due on the latest due day of the domains it depends on (a
    mart fed by two domains can only be complete once the later one is due)."""
    days: dict[dg.AssetKey, int] = {}
    for name, spec in sources.domains.items():
        for key in downstream[name]:
            if key.path[0] in ("raw", "marts"):
                days[key] = max(days.get(key, spec.due_day), spec.due_day)
    return days


def build_definitions(sources: SourcesFile) -> dg.Definitions:
    raw_assets = build_raw_assets(sources)
    resources = {
        "warehouse": WarehouseResource(),
        # (DbtCliResource's own __init__ takes a DbtProject; mypy sees the subclass's fields)
        "dbt": ProjectDbtResource(
            project_dir=dbt_project,  # type: ignore[arg-type]
            dbt_executable=dbt_executable(),
        ),
    }
    assets = [*raw_assets, dbt_reference_seeds, dbt_models]
    graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
    # what a new workbook of a domain refreshes: its raw asset and every model downstream of it
    downstream = {
        name: sorted(
            dg.AssetSelection.assets(raw_asset_key(name)).downstream().resolve(graph),
            key=lambda key: key.to_user_string(),
        )
        for name in sources.domains
    }
    # what an arrival run builds: that, plus what those models read and no other workbook
    # feeds (the reference seeds, the other domains' models a shared mart joins), so the run
    # also succeeds on a warehouse where they were never built
    every_raw = dg.AssetSelection.assets(*(raw_asset_key(name) for name in sources.domains))
    refresh = {}
    for name, keys in downstream.items():
        built = set(keys) | (dg.AssetSelection.assets(*keys).upstream() - every_raw).resolve(graph)
        raw = raw_asset_key(name)
        refresh[name] = Refresh(
            assets=sorted(built, key=lambda key: key.to_user_string()),
            fed=[raw, *(key for key in keys if key != raw)],
            # (this graph has no freshness checks: they are made below)
            checks=sorted(
                (check for check in graph.asset_check_keys if check.asset_key in built),
                key=lambda check: check.to_user_string(),
            ),
        )
    # freshness: one check per asset, on the same day as the asset's freshness policy
    due_days = due_days_by_asset(sources, downstream)
    by_day: dict[int, list[dg.AssetKey]] = {}
    for key, day in sorted(due_days.items(), key=lambda item: item[0].to_user_string()):
        by_day.setdefault(day, []).append(key)
    freshness_checks = build_freshness_checks(by_day)
    return dg.Definitions(
        # Steps are database-bound and short; a subprocess per step would re-import the code
        # location (dbt manifest, polars, Pandera) for each one, which costs more than the step.
        executor=dg.in_process_executor,
        assets=[*raw_assets, dbt_reference_seeds, with_due_days(dbt_models, due_days)],
        asset_checks=freshness_checks,
        jobs=[build_monthly_refresh(freshness_checks)],
        schedules=[build_monthly_schedule(sources, refresh)],
        sensors=[
            build_arrival_sensor(sources, refresh),
            build_freshness_sensor(freshness_checks),
            alert_on_run_failure,
            alert_on_failed_check,
        ],
        resources=resources,
    )


# before anything reads the settings: what Dagster's command line loaded from a .env over the
# environment is undone (settings.undo_dagster_env_file)
_undone = undo_dagster_env_file()
if _undone:
    configure_logging(force=True)  # (in case something logged before, with what was undone)
    get_logger().warning(
        "ignored what the .env of the folder Dagster started in set over the environment",
        variables=", ".join(_undone),
    )
sources = load_sources()
defs = build_definitions(sources)
