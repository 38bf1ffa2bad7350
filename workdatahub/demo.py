"""`make demo` / `wdh demo`: sample workbooks → embedded Postgres → Dagster → summary.

Runs the `monthly_refresh` job in-process on the Dagster instance under DAGSTER_HOME, one
run per month (so the runs show up in the UI afterwards), then prints what each month
loaded, rejected and built. Running it twice gives the same tables.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from workdatahub.periods import month_range, period_key
from workdatahub.settings import PROJECT_ROOT, get_settings


def _instance() -> Any:
    import dagster as dg  # noqa: PLC0415

    home = Path(os.environ.get("DAGSTER_HOME") or get_settings().dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_demo(months: str, rows: int, data_dir: Path | None) -> int:
    from workdatahub.cli import _table  # noqa: PLC0415
    from workdatahub.samples import write_samples  # noqa: PLC0415
    from workdatahub.warehouse.db import connect, masked_url  # noqa: PLC0415
    from workdatahub.warehouse.migrate import upgrade  # noqa: PLC0415

    periods = month_range(months)
    data_dir = (data_dir or PROJECT_ROOT / "data" / "sample").resolve()
    written = write_samples(data_dir, periods, rows=rows)
    click.echo(f"samples: {len(written)} workbooks under {data_dir}")
    revision = upgrade()
    click.echo(f"warehouse: {masked_url()} at revision {revision}")

    from workdatahub.definitions import defs  # noqa: PLC0415 - loads dbt manifest

    job = defs.resolve_job_def("monthly_refresh")
    instance = _instance()
    run_config = {"resources": {"warehouse": {"config": {"data_dir": str(data_dir)}}}}
    per_month: dict[str, dict[str, Any]] = {}
    failures = 0
    for period in periods:
        key = period_key(period)
        click.echo(f"materialising {key} through Dagster …")
        result = job.execute_in_process(
            partition_key=key, instance=instance, run_config=run_config, raise_on_error=False
        )
        models = sum(
            1
            for event in result.get_asset_materialization_events()
            if event.asset_key and event.asset_key.path[0] in ("staging", "marts")
        )
        checks = [e for e in result.get_asset_check_evaluations()]
        passed = sum(1 for c in checks if c.passed)
        per_month[key] = {
            "success": result.success,
            "run_id": result.run_id,
            "models": models,
            "checks_passed": passed,
            "checks_failed": len(checks) - passed,
        }
        if not result.success:
            failures += 1
            for event in result.all_events:
                if event.is_failure and event.event_specific_data is not None:
                    error = getattr(event.event_specific_data, "error", None)
                    if error is not None:
                        click.echo(f"  {key}: {str(error.message).strip().splitlines()[0]}", err=True)

    loads: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    with connect() as conn:
        rows_found = conn.execute(
            """
            select distinct on (domain, period) domain, to_char(period, 'YYYY-MM'),
                   jsonb_array_length(files), rows_loaded, rows_rejected, status
            from wdh.load_log
            where period = any(%s)
            order by domain, period, started_at desc
            """,
            [periods],
        ).fetchall()
    for domain, key, files, loaded, rejected, status in rows_found:
        loads[(domain, key)] = {"files": files, "loaded": loaded, "rejected": rejected, "status": status}

    table_rows = []
    for (domain, key), load in sorted(loads.items(), key=lambda item: (item[0][1], item[0][0])):
        month = per_month.get(key, {})
        table_rows.append(
            [
                domain, key, load["files"], load["loaded"], load["rejected"], load["status"],
                month.get("models", ""), month.get("checks_passed", ""), month.get("checks_failed", ""),
            ]
        )  # fmt: skip
    click.echo("")
    click.echo(
        _table(
            table_rows,
            [
                "domain", "month", "files", "rows loaded", "rejected", "status",
                "dbt models", "checks passed", "checks failed",
            ],
        )  # fmt: skip
    )
    click.echo("")
    click.echo(
        "open the UI with `make dev` (http://localhost:3000); query with `make shell` or "
        "`uv run wdh db shell -c 'select * from marts.fct_monthly_branch_product_line'`"
    )
    return 1 if failures else 0
