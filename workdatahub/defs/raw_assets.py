"""One raw asset per domain of `data_sources.yml`, built by a factory (never by hand)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from workdatahub.defs.freshness import freshness_policy
from workdatahub.defs.partitions import monthly_partitions, partition_period
from workdatahub.defs.resources import WarehouseResource
from workdatahub.errors import (
    InputError,
    LoadBusyError,
    RejectThresholdExceeded,
    WdhError,
    loaded_note,
    shares,
)
from workdatahub.periods import compact
from workdatahub.pipeline import PartitionResult, run_partition
from workdatahub.sources.discovery import missing_data_folder
from workdatahub.sources.spec import DomainSpec, SourcesFile

REJECT_RATE_CHECK = "reject_rate"


def raw_asset_key(domain: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", domain])


def _metadata(result: PartitionResult) -> dict[str, Any]:
    summary = result.summary()
    source = result.file
    return {
        "partition": summary["period"],
        "load_id": summary["load_id"],
        "file": dg.MetadataValue.path(str(source.path)),
        "file_version": source.version or "base",
        "sha256": source.sha256,
        "sheet": summary["sheet"],
        "rows_read": summary["rows_read"],
        "dagster/row_count": summary["rows_loaded"],
        "rows_loaded": summary["rows_loaded"],
        "rows_deleted": summary["rows_deleted"],
        "rows_rejected": summary["rows_rejected"],
        "reject_rate": float(summary["reject_rate"]),
        "duration_s": round(sum(result.timings.values()), 3),
        "timings_s": dg.MetadataValue.json(summary["timings_s"]),
        # the sheet's own 合计 row against the rows read: the columns that do not add up
        "totals_off": dg.MetadataValue.json(summary["totals_off"]),
        # plotted over partitions in the UI
        **{
            f"null_rate/{column}": rate
            for column, rate in result.quality.get("null_rates", {}).items()
        },
    }


# a month's own failures: the months after it are loaded all the same
_OF_THE_MONTH = (InputError, RejectThresholdExceeded, LoadBusyError)


def _recorded(
    key: dg.AssetKey, done: dict[str, dict[str, Any]], failed: dict[str, WdhError]
) -> Iterator[Any]:
    """What a failing run reports before its failure: the months it loaded, as materialised
    (they are committed), and a failed reject-rate check for the months refused."""
    for loaded, metadata in done.items():
        yield dg.AssetMaterialization(asset_key=key, partition=loaded, metadata=metadata)
    refused = {m: e for m, e in failed.items() if isinstance(e, RejectThresholdExceeded)}
    if refused:
        yield dg.AssetCheckResult(
            check_name=REJECT_RATE_CHECK,
            asset_key=key,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "partition": ", ".join(refused),
                "reason": "; ".join(error.message for error in refused.values()),
            },
        )


def _so_far(done: dict[str, Any], failed: dict[str, WdhError], not_tried: list[str]) -> str:
    """What else the run did, for its failure: ` (2024-01, 2024-02 loaded; failed: <domain>
    2024-03: why; 2024-04…2024-06 not attempted)`."""
    said = [f"{compact(list(done))} loaded"] if done else []
    if failed:
        said.append(f"failed: {_reasons(failed)}")
    if not_tried:
        said.append(f"{compact(not_tried)} not attempted")
    return f" ({'; '.join(said)})" if said else ""


# the reasons a failure names (the others are in the run's log, a line per month)
REASONS_SHOWN = 5


def _reasons(failed: dict[str, WdhError]) -> str:
    """Each failed month's reason (they name their month), the first few of many."""
    shown = "; ".join(error.message for error in list(failed.values())[:REASONS_SHOWN])
    more = len(failed) - REASONS_SHOWN
    return shown + (f"; and {more} more months (see the run's log)" if more > 0 else "")


def build_raw_asset(spec: DomainSpec) -> dg.AssetsDefinition:
    key = raw_asset_key(spec.name)
    columns = dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, c.sql_type, description=c.header or f"derived: {c.derive}")
            for c in spec.loaded_columns
        ]
    )

    @dg.asset(
        key=key,
        partitions_def=monthly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="raw",
        kinds={"excel", "postgres", "polars"},
        pool=f"raw_{spec.table}",
        freshness_policy=freshness_policy(spec.due_day),
        description=(
            f"{spec.description}\n\nTable `{spec.qualified_table}`, refresh "
            f"`{spec.refresh}`; rejected rows go to `wdh.rejected_rows`."
        ),
        metadata={
            "dagster/column_schema": columns,
            "dagster/table_name": spec.qualified_table,
            "max_reject_rate": spec.max_reject_rate,
        },
        check_specs=[
            dg.AssetCheckSpec(
                REJECT_RATE_CHECK,
                asset=key,
                description=(
                    f"Pandera validation: the share of rejected rows stays at or below "
                    f"{shares(0, spec.max_reject_rate)[1]}; above it the month is not loaded."
                ),
            )
        ],
    )
    def _raw(context: AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[Any]:
        """Each month of the run in its own transaction, in order. Each month's
        materialisation carries that month's file, load id and counts.

        A month that fails for a reason of its own (its workbook missing or unreadable, too
        many rejects, another load on it) does not hold back the months after it: they load,
        and the run fails at the end naming every month that failed, and why. Anything else
        (the warehouse down, a bad setting, a stop from the UI) stops the run at once. Either
        way the months loaded are recorded as materialised (they are committed)."""
        try:
            url = warehouse.url()  # (a bad setting: production without a warehouse named)
        except WdhError as error:
            raise dg.Failure(
                description=f"{spec.name}: {error.message}", allow_retries=False
            ) from None
        months = list(context.partition_keys)
        missing = missing_data_folder(warehouse.data_path())
        if missing:  # no month's own failure: said once, not once a month
            raise dg.Failure(description=f"{spec.name}: {missing}", allow_retries=False)
        done: dict[str, dict[str, Any]] = {}  # each month loaded: its metadata
        failed: dict[str, WdhError] = {}  # each month that failed for a reason of its own
        for index, partition in enumerate(months):
            period = partition_period(partition)
            try:
                result = run_partition(spec, period, data_dir=warehouse.data_path(), url=url)
            except _OF_THE_MONTH as error:
                context.log.error(error.message)
                failed[partition] = error
                continue
            except BaseException as error:  # a run stopped from the UI or a bug, too
                loaded = loaded_note(error)
                if loaded:  # the stop came once the month had committed: it is loaded
                    done[partition] = {"partition": partition, "stopped_after_commit": loaded}
                yield from _recorded(key, done, failed)
                if not isinstance(error, WdhError):
                    raise
                so_far = _so_far(done, failed, months[index + 1 :])
                raise dg.Failure(description=error.message + so_far, allow_retries=False) from None
            context.log.info(
                f"{spec.name} {partition}: {result.outcome.rows_loaded if result.outcome else 0} "
                f"rows loaded, {result.plan.rows_rejected} rejected"
            )
            done[partition] = _metadata(result)
            context.add_asset_metadata(done[partition], partition_key=partition)
        if failed:
            yield from _recorded(key, done, failed)
            many = f"{len(failed)} months failed: " if len(failed) > 1 else ""
            raise dg.Failure(
                description=many + _reasons(failed) + _so_far(done, {}, []), allow_retries=False
            )
        # the month with the most rejected rows (of equal ones, the latest)
        worst = max(reversed(done), key=lambda month: done[month]["reject_rate"])
        yield dg.MaterializeResult(
            asset_key=key,
            check_results=[
                dg.AssetCheckResult(
                    check_name=REJECT_RATE_CHECK,
                    asset_key=key,
                    passed=True,
                    metadata={
                        "reject_rate": done[worst]["reject_rate"],
                        "max_reject_rate": spec.max_reject_rate,
                        "worst_partition": worst,
                        "rows_rejected": sum(m["rows_rejected"] for m in done.values()),
                    },
                )
            ],
        )

    return _raw


def build_raw_assets(sources: SourcesFile) -> list[dg.AssetsDefinition]:
    return [build_raw_asset(spec) for spec in sources.domains.values()]
