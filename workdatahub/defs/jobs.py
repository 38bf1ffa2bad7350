"""Jobs: the monthly refresh of every domain and the models downstream."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from workdatahub.defs.partitions import monthly_partitions

MONTHLY_REFRESH = "monthly_refresh"


def build_monthly_refresh(
    freshness_checks: Sequence[dg.AssetChecksDefinition],
) -> dg.UnresolvedAssetJobDefinition:
    """Every asset and its checks, except the freshness checks: those judge "now" (is the
    latest due month there?) and run on their own sensor, not inside a month's refresh."""
    return dg.define_asset_job(
        MONTHLY_REFRESH,
        selection=dg.AssetSelection.all() - dg.AssetSelection.checks(*freshness_checks),
        partitions_def=monthly_partitions,
        description="Load every domain's month into raw, then build the dbt models for it.",
    )
