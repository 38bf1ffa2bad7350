"""The Dagster code location: `dagster dev -m workdatahub.definitions` (or `make dev`)."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import dagster as dg

# backfill_policy (single-run backfills) is marked beta; we rely on it on purpose
warnings.filterwarnings("ignore", category=dg.BetaWarning)

from dagster_dbt import DbtCliResource

from workdatahub.defs.dbt import dbt_models, dbt_project, dbt_reference_seeds
from workdatahub.defs.partitions import monthly_partitions
from workdatahub.defs.raw_assets import build_raw_assets
from workdatahub.defs.resources import WarehouseResource
from workdatahub.sources.spec import load_sources

raw_assets = build_raw_assets(load_sources())


def _dbt_executable() -> str:
    """The dbt beside this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


monthly_refresh = dg.define_asset_job(
    "monthly_refresh",
    selection=dg.AssetSelection.all(),
    partitions_def=monthly_partitions,
    description="Load every domain's month into raw, then build the dbt models for it.",
)

defs = dg.Definitions(
    # Steps are database-bound and short; a subprocess per step would re-import the code
    # location (dbt manifest, polars, Pandera) for each one, which costs more than the step.
    executor=dg.in_process_executor,
    assets=[*raw_assets, dbt_reference_seeds, dbt_models],
    jobs=[monthly_refresh],
    resources={
        "warehouse": WarehouseResource(),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=_dbt_executable()),
    },
)
