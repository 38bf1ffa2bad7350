"""When each month is due: the freshness policy the UI shows, and its deadline."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

DEFAULT_DUE_DAY = 15
DEADLINE_HOUR = 9  # UTC
SCHEDULE_LEAD_HOURS = 2  # the monthly schedule runs this long before a domain's deadline


def due_cron(due_day: int) -> str:
    """A month's data is due at 09:00 UTC on `due_day` of the following month."""
    return f"0 {DEADLINE_HOUR} {due_day} * *"


def schedule_cron(due_day: int) -> str:
    """When the monthly schedule loads a domain due on `due_day`: before its deadline."""
    return f"0 {DEADLINE_HOUR - SCHEDULE_LEAD_HOURS} {due_day} * *"


def freshness_policy(due_day: int = DEFAULT_DUE_DAY) -> dg.FreshnessPolicy:
    """Fresh when the latest materialisation happened in the `due_day` days before the
    deadline (i.e. since the month's data could first arrive)."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=due_cron(due_day), lower_bound_delta=timedelta(days=due_day)
    )
