"""Per-load data-quality metrics: rows, reject rate, null rates of the columns that matter,
duration. Kept in `wdh.data_quality_metrics` and reported as Dagster metadata, so the UI
plots them over partitions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from workdatahub.sources.spec import DomainSpec
from workdatahub.warehouse.loader import Deferred, Statement

if TYPE_CHECKING:
    from workdatahub.pipeline import PartitionResult


def watched_columns(spec: DomainSpec) -> list[str]:
    """Key and required columns, and those a rule fills in (codes, names, defaults)."""
    names: list[str] = []
    for column in spec.loaded_columns:
        if column.name in spec.key or column.required or column.rules or column.derive:
            names.append(column.name)
    return names


def null_rates(result: PartitionResult, spec: DomainSpec) -> dict[str, float]:
    valid = result.check.validated.valid
    if valid.height == 0:
        return {name: 0.0 for name in watched_columns(spec)}
    counts = valid.select(watched_columns(spec)).null_count().row(0, named=True)
    return {name: round(count / valid.height, 6) for name, count in counts.items()}


def metrics(result: PartitionResult, spec: DomainSpec) -> dict[str, Any]:
    summary = result.summary()
    return {
        "rows_read": summary["rows_read"],
        "rows_loaded": summary["rows_loaded"],
        "rows_rejected": summary["rows_rejected"],
        "reject_rate": float(summary["reject_rate"]),
        "null_rates": null_rates(result, spec),
        "duration_s": round(sum(result.timings.values()), 3),
        "stage_seconds": summary["timings_s"],
    }


METRICS_PURPOSE = "after the commit, on its own: the load's data-quality metrics"


def statement(
    result: PartitionResult, spec: DomainSpec, values: dict[str, Any] | None = None
) -> Statement:
    """The metrics' row of wdh.data_quality_metrics (`values`: `metrics`, when computed
    already). For a plan (no outcome yet), the rows it would load; its duration is
    measured by the load."""
    values = values or metrics(result, spec)
    planned = result.outcome is None
    return Statement(
        METRICS_PURPOSE,
        sql.SQL(
            "insert into wdh.data_quality_metrics (load_id, domain, period, rows_read, "
            "rows_loaded, rows_rejected, reject_rate, null_rates, duration_s, stage_seconds) "
            "values (%(load_id)s, %(domain)s, %(period)s, %(rows_read)s, %(rows_loaded)s, "
            "%(rows_rejected)s, %(reject_rate)s, %(null_rates)s, %(duration_s)s, "
            "%(stage_seconds)s) on conflict (load_id) do nothing"
        ),
        {
            "load_id": result.plan.load_id,
            "domain": spec.name,
            "period": result.period,
            "rows_read": values["rows_read"],
            "rows_loaded": result.plan.rows_to_load if planned else values["rows_loaded"],
            "rows_rejected": values["rows_rejected"],
            "reject_rate": values["reject_rate"],
            "null_rates": json.dumps(values["null_rates"]),
            "duration_s": Deferred("seconds the load took") if planned else values["duration_s"],
            "stage_seconds": Deferred("seconds per stage")
            if planned
            else json.dumps(values["stage_seconds"]),
        },
    )


def record(url: str, result: PartitionResult, spec: DomainSpec) -> dict[str, Any]:
    """Store the metrics of a finished load (its own short transaction)."""
    values = metrics(result, spec)
    insert = statement(result, spec, values)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(insert.query, insert.params)
    return values
