"""Reporting months: users type `2024-11` (or `202411`); the warehouse stores 2024-11-01."""

from __future__ import annotations

import re
from datetime import date

from workdatahub.errors import WdhError

# 2024-11, 202411, 2024-11-01, and 2024-3 (a month of one digit, after the dash)
_PERIOD = re.compile(r"^\s*(\d{4})(?:-(\d{1,2})|(\d{2}))(?:-01)?\s*$")


class PeriodError(WdhError):
    pass


def parse_period(text: str) -> date:
    match = _PERIOD.match(str(text))
    month = int(match[2] or match[3]) if match else 0
    if not match or not 1 <= month <= 12 or int(match[1]) < 1:
        raise PeriodError(f"period {text!r} is not a month like 2024-11")
    return date(int(match[1]), month, 1)


def period_key(period: date) -> str:
    """The partition key: `YYYY-MM`."""
    return f"{period.year:04d}-{period.month:02d}"


def folder_name(period: date) -> str:
    """The monthly folder name: `YYYYMM`."""
    return f"{period.year:04d}{period.month:02d}"


def next_month(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def month_range(spec: str) -> list[date]:
    """`2024-01..2024-03` (or a single month) -> every month in between, inclusive."""
    if "..." in spec or "…" in spec:  # (Dagster's partition ranges take three)
        raise PeriodError(f"month range {spec!r}: a range takes two dots, like 2024-01..2024-03")
    first, _, last = spec.partition("..")
    start = parse_period(first)
    end = parse_period(last) if last else start
    if end < start:
        raise PeriodError(f"month range {spec!r} ends before it starts")
    return months_between(start, next_month(end))


def months_between(start: date, end: date) -> list[date]:
    """The first days of the months from `start`'s to `end` (not included)."""
    months, month = [], start.replace(day=1)
    while month < end:
        months.append(month)
        month = next_month(month)
    return months


def compact(months: list[str]) -> str:
    """Partition keys, runs of consecutive months shortened: `2024-01…2024-03, 2024-05`."""
    runs: list[list[str]] = []
    for month in months:
        if runs and period_key(next_month(parse_period(runs[-1][-1]))) == month:
            runs[-1].append(month)
        else:
            runs.append([month])
    shown = {1: "{0}", 2: "{0}, {1}"}
    return ", ".join(shown.get(len(run), "{0}…{last}").format(*run, last=run[-1]) for run in runs)
