"""The one monthly partitions definition shared by the raw assets and the dbt models."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from workdatahub.periods import parse_period
from workdatahub.settings import get_settings

PARTITION_FORMAT = "%Y-%m"  # users type 2024-11, not 2024-11-01

monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=get_settings().partitions_start,
    fmt=PARTITION_FORMAT,
    end_offset=0,  # the newest partition is the last complete month
)


def partition_period(key: str) -> date:
    return parse_period(key)


def dbt_vars_for_window(start: datetime, end: datetime) -> dict[str, str]:
    """dbt vars for a (possibly multi-month) partition window; end is exclusive."""
    return {"period_start": start.date().isoformat(), "period_end": end.date().isoformat()}
