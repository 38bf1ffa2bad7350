"""Jobs: the monthly refresh of every domain and the models downstream."""

from __future__ import annotations

import dagster as dg

from workdatahub.defs.partitions import monthly_partitions

monthly_refresh = dg.define_asset_job(
    "monthly_refresh",
    selection=dg.AssetSelection.all(),
    partitions_def=monthly_partitions,
    description="Load every domain's month into raw, then build the dbt models for it.",
)
