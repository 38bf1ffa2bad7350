"""Running every month without watching: the workbook-arrival sensor, the monthly schedule,
partition-aware freshness, and alerts for failed runs and failed checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from workdatahub.alerts import Alert, send_alert
from workdatahub.defs.freshness import due_cron, schedule_cron
from workdatahub.defs.jobs import MONTHLY_REFRESH
from workdatahub.defs.partitions import PARTITION_FORMAT, monthly_partitions
from workdatahub.defs.resources import WarehouseResource
from workdatahub.errors import ConfigError, NoWorkbookError, WdhError
from workdatahub.periods import period_key
from workdatahub.settings import failure_line, get_settings, one_line
from workdatahub.sources.discovery import (
    available_periods,
    base_folder,
    discover,
    never_counts,
)
from workdatahub.sources.spec import SourcesFile


@dataclass(frozen=True)
class Refresh:
    """What a run for one domain's month builds: its raw asset and the models downstream
    (`assets`), and their checks (`checks`): the reject rate and the dbt tests, not the
    freshness checks. Those judge "now" (is the latest due month there?) and run on their own
    sensor; a run request that named its assets only would get every check of those assets,
    freshness included, and each arrival or schedule run would alert about another month."""

    assets: Sequence[dg.AssetKey]
    checks: Sequence[dg.AssetCheckKey]
    # of `assets`, those the workbook feeds: its raw asset and every model downstream of it
    fed: Sequence[dg.AssetKey] = ()

    def request(self, *, run_key: str, partition_key: str, tags: dict[str, str]) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=run_key,
            partition_key=partition_key,
            asset_selection=list(self.assets),
            asset_check_keys=list(self.checks),
            tags=tags,
        )


# -- workbook arrival -------------------------------------------------------------------------

ARRIVAL_CURSOR_VERSION = 1


def month_fingerprint(folder: Path) -> str:
    """A digest of what discovery may look at below a month's base folder (`never_counts`
    leaves out hidden folders, lock files, hidden files, mail) as `stat` sees it: names, sizes,
    modification/change times and inodes, link targets; folder links are followed (each real
    folder once), as discovery follows them. No file is opened: unchanged, it costs a stat
    per entry, where discovery reads (hashes) the whole workbook."""
    digest = hashlib.sha256()
    seen: set[str] = set()

    def note(line: str) -> None:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")

    def walk(current: str, shown: str) -> None:
        real = os.path.realpath(current)
        if real in seen:
            note(f"{shown}\0seen\0{real}")
            return
        seen.add(real)
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            note(f"{shown}\0unreadable\0{error.errno}")
            return
        for entry in entries:
            name = f"{shown}/{entry.name}"
            # what discovery never looks at does not count: Excel's ~$ lock file coming and
            # going must not re-hash the workbook
            if never_counts(entry.name, entry.is_dir()):
                continue
            target = os.path.realpath(entry.path) if entry.is_symlink() else ""
            try:
                if entry.is_dir():  # follows links
                    note(f"{name}\0dir\0{target}")
                    walk(entry.path, name)
                    continue
                st = entry.stat()  # follows links: a link's target is what is read
                note(
                    f"{name}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0"
                    f"{st.st_ctime_ns}\0{st.st_ino}\0{target}"
                )
            except OSError as error:
                note(f"{name}\0error\0{error.errno}\0{target}")

    walk(str(folder), ".")
    return digest.hexdigest()


def _read_cursor(cursor: str | None) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """{"domain:YYYY-MM": [fingerprint, sha256, version, changes(, settled)]} of the previous
    tick (`changes` came later: an entry without it has seen none; `settled`, the run key of
    a month found loaded from its workbook already, which is not requested), and
    {"domain:YYYY-MM": why} of the months whose workbook it refused (alerted once each)."""
    try:
        state = json.loads(cursor or "{}")
    except ValueError:
        return {}, {}
    if not isinstance(state, dict) or state.get("v") != ARRIVAL_CURSOR_VERSION:
        return {}, {}
    months, refused = state.get("months"), state.get("refused")
    return (
        months if isinstance(months, dict) else {},
        refused if isinstance(refused, dict) else {},
    )


def _loaded_from(instance: dg.DagsterInstance, refresh: Refresh, key: str, sha256: str) -> bool:
    """Whether the month is loaded from the workbook `sha256` and built: its raw asset last
    materialised from it, and every model downstream materialised for the month since (a run
    whose raw step failed after loading some months built none of their models)."""

    def latest(asset: dg.AssetKey) -> Any:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=1
        ).records
        return found[0] if found else None

    raw = latest(refresh.fed[0]) if refresh.fed else None
    if raw is None or raw.asset_materialization is None:
        return False
    loaded_from = raw.asset_materialization.metadata.get("sha256")
    if getattr(loaded_from, "value", loaded_from) != sha256:
        return False
    for model in refresh.fed[1:]:
        built = latest(model)
        if built is None or built.timestamp < raw.timestamp:
            return False
    return True


def build_arrival_sensor(
    sources: SourcesFile, refresh: Mapping[str, Refresh]
) -> dg.SensorDefinition:
    """One sensor for all domains: a run each time the workbook a month resolves to changes.

    The run key holds the workbook's sha256 and how many times the month's workbook has
    changed (`slot:sha256`, then `slot:sha256:N`), so an unchanged file never triggers twice
    (Dagster runs a run key once) and a corrected file (new content, or a higher V folder)
    always does, even when its content is that of a file loaded before: a V3 that withdraws
    V2's correction by copying the original back is a new key, not the original's.

    A month first seen (the sensor just turned on, or its cursor was reset) whose raw asset
    was last materialised from the same workbook, and its models since, is not loaded again:
    turned on over years of months a backfill loaded, the sensor would otherwise load them
    all a second time.

    The cursor keeps, per (domain, month), a fingerprint of the month's folder
    (`month_fingerprint`) with the workbook found, its sha256 and the changes seen: while the
    fingerprint holds, the tick reuses them instead of discovering (and hashing hundreds of
    MB) again. A month that vanishes or stops resolving keeps its entry, so that its count
    of changes survives until it comes back.
    """

    @dg.sensor(
        name="workbook_arrival",
        job_name=MONTHLY_REFRESH,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Scans WDH_DATA_DIR and loads a month when its workbook appears or changes.",
    )
    def workbook_arrival(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        data_dir = warehouse.data_path()
        partition_keys = set(monthly_partitions.get_partition_keys())
        known, was_refused = _read_cursor(context.cursor)
        kept: dict[str, list[Any]] = dict(known)
        refused: dict[str, str] = {}  # this tick's
        requested = settled_months = 0
        for spec in sources.domains.values():
            for period in available_periods(spec, data_dir):
                key = period_key(period)
                if key not in partition_keys:
                    first, last = min(partition_keys, default="-"), max(partition_keys, default="-")
                    context.log.info(
                        f"{spec.name} {key}: outside the monthly partitions ({first}…{last}); "
                        "skipped"
                    )
                    continue
                slot = f"{spec.name}:{key}"
                try:
                    fingerprint = month_fingerprint(base_folder(spec, period, data_dir))
                    cached = known.get(slot)
                    if not (isinstance(cached, list) and len(cached) in (3, 4, 5)):
                        cached = None
                    if cached is not None and cached[0] == fingerprint:
                        sha256, version = str(cached[1]), cached[2]
                    else:
                        source = discover(spec, period, data_dir).files[0]
                        sha256, version = source.sha256, source.version
                except NoWorkbookError as error:  # not there yet: the freshness check's
                    context.log.info(error.message)
                    continue
                except WdhError as error:
                    # there, and not loadable (two candidates, an .xls, a link out): no run
                    # would load it, so none is asked for; the operator is told, once
                    context.log.warning(error.message)
                    refused[slot] = error.message
                    if was_refused.get(slot) != error.message:
                        send_alert(
                            Alert(
                                what="workbook not loaded",
                                domain=spec.name,
                                month=key,
                                detail=error.message,
                            )
                        )
                    continue
                changes = cached[3] if cached is not None and len(cached) >= 4 else 0
                changes = changes if isinstance(changes, int) else 0
                if cached is not None and str(cached[1]) != sha256:
                    changes += 1
                run_key = f"{slot}:{sha256}" + (f":{changes}" if changes else "")
                settled = cached is not None and len(cached) == 5 and cached[4] == run_key
                loaded = cached is None and _loaded_from(
                    context.instance, refresh[spec.name], key, sha256
                )
                if loaded:
                    # first seen (the sensor just turned on, its cursor reset): a month
                    # loaded from this very workbook, and built, is not loaded again
                    context.log.info(f"{slot}: loaded from this workbook already")
                    settled = True
                kept[slot] = [
                    fingerprint,
                    sha256,
                    version,
                    changes,
                    *([run_key] if settled else []),
                ]
                if settled:
                    settled_months += 1
                    continue
                requested += 1
                yield refresh[spec.name].request(
                    run_key=run_key,
                    partition_key=key,
                    tags={
                        "wdh/domain": spec.name,
                        "wdh/sha256": sha256,
                        "wdh/file_version": version or "base",
                    },
                )
        state = {"v": ARRIVAL_CURSOR_VERSION, "months": kept, "refused": refused}
        context.update_cursor(json.dumps(state, separators=(",", ":")))
        if not requested:
            said = []
            if refused:
                months = ", ".join(sorted(refused)[:5]) + (" …" if len(refused) > 5 else "")
                said.append(f"{len(refused)} month(s) whose workbook cannot be loaded ({months})")
            if settled_months:
                said.append(f"{settled_months} month(s) loaded from their workbooks already")
            yield dg.SkipReason(
                "; ".join(said) + f"; nothing new under {data_dir}"
                if said
                else f"no workbook found under {data_dir}"
            )

    return workbook_arrival


# -- the monthly schedule ---------------------------------------------------------------------


def previous_month_key(moment: datetime) -> str:
    first = moment.replace(day=1)
    return (first - timedelta(days=1)).strftime(PARTITION_FORMAT)


def build_monthly_schedule(
    sources: SourcesFile, refresh: Mapping[str, Refresh]
) -> dg.ScheduleDefinition:
    """The previous month, one run per domain (its raw asset and the models downstream, as
    the arrival sensor's runs: a domain whose workbook is late holds back no other domain's
    marts). By default each domain runs at 07:00 UTC on its due day, two hours before its
    freshness deadline; with WDH_SCHEDULE_CRON set, every domain runs on that."""
    explicit = get_settings().schedule_cron.strip()
    due_days = sorted({spec.due_day for spec in sources.domains.values()})
    crons = [explicit] if explicit else [schedule_cron(day) for day in due_days]
    when = explicit or "each domain's due day, 07:00 UTC"

    def monthly_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        moment = context.scheduled_execution_time or datetime.now()
        key = previous_month_key(moment)
        if key not in monthly_partitions.get_partition_keys():
            yield dg.SkipReason(f"{key} is outside the monthly partitions")
            return
        domains = [
            spec.name for spec in sources.domains.values() if explicit or spec.due_day == moment.day
        ]
        if not domains:
            yield dg.SkipReason(f"no domain is due on day {moment.day}")
        for name in domains:
            yield refresh[name].request(
                run_key=f"schedule:{name}:{key}", partition_key=key, tags={"wdh/domain": name}
            )

    try:
        return dg.schedule(
            name="monthly_previous_month",
            job_name=MONTHLY_REFRESH,
            cron_schedule=crons if len(crons) > 1 else crons[0],
            execution_timezone="UTC",
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description=(
                f"Materialises the previous month of each domain and the models downstream, "
                f"one run per domain ({when})."
            ),
        )(monthly_schedule)
    except dg.DagsterInvalidDefinitionError as error:
        if not explicit:
            raise
        # a value of the right shape that no clock reaches (`60 25 12 * *`): one line that
        # names the setting, not Dagster's traceback
        raise ConfigError(
            f"invalid setting WDH_SCHEDULE_CRON: {explicit!r} is not a cron schedule Dagster "
            f"runs ({one_line(error)})"
        ) from None


# -- freshness --------------------------------------------------------------------------------


def build_freshness_checks(
    assets_by_due_day: Mapping[int, Sequence[dg.AssetKey]],
) -> list[dg.AssetChecksDefinition]:
    """Partition-aware: after the due day, the previous month's partition must exist.

    (A `FreshnessPolicy` alone only looks at the newest materialisation of any partition,
    so a back-filled old month would look fresh while the current one is missing.)

    One check definition per asset: Dagster names a definition after the set of assets it
    checks, so one for several would be renamed by any model added, and a run launched from
    a UI not yet reloaded would name a step the run's own definitions no longer have.
    """
    checks: list[dg.AssetChecksDefinition] = []
    with warnings.catch_warnings():
        # Dagster marks these superseded by FreshnessPolicy, which is not partition-aware;
        # the assets carry both: the policy for the UI, these checks for "month M by day N"
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        for due_day, keys in sorted(assets_by_due_day.items()):
            for key in keys:
                checks += dg.build_time_partition_freshness_checks(
                    assets=[key], deadline_cron=due_cron(due_day), timezone="UTC"
                )
    return checks


def build_freshness_sensor(checks: list[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            minimum_interval_seconds=3600,
            name="monthly_freshness",
            default_status=dg.DefaultSensorStatus.RUNNING,
        )


# -- alerts -----------------------------------------------------------------------------------


def _run_scope(run: dg.DagsterRun) -> tuple[str | None, str | None]:
    tags = run.tags or {}
    month = tags.get("dagster/partition") or (
        f"{tags['dagster/asset_partition_range_start']}…{tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in tags
        else None
    )
    return tags.get("wdh/domain"), month


# Both alert sensors watch every run of the instance: a run started from the command line
# (`dagster asset materialize`, `dg launch`) belongs to no code location, and a sensor that
# watches its own code location's runs only never sees it.
@dg.run_failure_sensor(
    name="alert_on_run_failure",
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends a webhook/email (or logs) when a run fails.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    domain, month = _run_scope(context.dagster_run)
    failed_steps = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        if error is not None:
            failed_steps.append(f"{event.step_key}: {failure_line(error)}")
    detail = "; ".join(failed_steps) or (context.failure_event.message or "run failed")
    checks = failed_checks(context.instance, context.dagster_run.run_id)
    if checks:
        detail += "; failed checks: " + ", ".join(f"{a.domain} {a.what}" for a in checks)
    send_alert(
        Alert(
            what=f"run of {context.dagster_run.job_name} failed",
            domain=domain,
            month=month,
            detail=detail,
            run_id=context.dagster_run.run_id,
        )
    )


# Dagster's freshness checks name the month they miss only in their description
_EXPECTED_PARTITION = re.compile(r"\bexpect(?:ed)? partition (\S+) to have arrived")


def _dbt_failure(metadata: Mapping[str, Any]) -> str | None:
    """A dbt test's failure as dagster-dbt records it: its failing rows and severity."""
    failing = metadata.get("dagster_dbt/failed_row_count")
    if not isinstance(failing, int):
        return None
    rows = "1 failing row" if failing == 1 else f"{failing:,} failing rows"
    severity = "warn" if metadata.get("status") == "warn" else "error"  # (else dbt's `fail`)
    return f"{rows} (dbt test, severity {severity})"


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[Alert]:
    """One alert per failed asset check evaluated in a run, with the check's reason. The
    month is the check's partition (in its metadata, or the one a freshness check expected);
    a check that names none (dbt tests) is reported for the run's month."""
    run = instance.get_run_by_id(run_id)
    run_month = _run_scope(run)[1] if run is not None else None
    alerts = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        event = entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
            continue
        metadata = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        asset = evaluation.asset_key.to_user_string()
        description = evaluation.description or ""
        expected = _EXPECTED_PARTITION.search(description)
        alerts.append(
            Alert(
                what=f"check {evaluation.check_name} failed",
                domain=asset.split("/", 1)[1] if asset.startswith("raw/") else asset,
                month=str(metadata.get("partition") or "")
                or (expected[1] if expected else None)
                or run_month,
                detail=str(
                    metadata.get("reason")
                    or description
                    or _dbt_failure(metadata)
                    or json.dumps(metadata, default=str)[:500]
                ),
                run_id=run_id,
            )
        )
    return alerts


LINES_PER_ALERT = 15  # a month's failed checks said in one alert; the run lists them all


def per_month(alerts: list[Alert]) -> list[Alert]:
    """The failed checks of a run, one alert per month: a month missing on its due day
    fails every asset's freshness check in one run of the freshness sensor (seven), and one
    bad value fails a dbt test in staging and in each mart that reads it. One alert says
    them all, a line each; a month with one failed check keeps its own alert."""
    months: dict[str | None, list[Alert]] = {}
    for alert in alerts:
        months.setdefault(alert.month, []).append(alert)
    grouped = []
    for month, some in months.items():
        if len(some) == 1:
            grouped.append(some[0])
            continue
        domains = {a.domain for a in some}
        lines = [f"- {a.domain}: {a.what}: {a.detail}" for a in some[:LINES_PER_ALERT]]
        if len(some) > LINES_PER_ALERT:
            lines.append(f"… {len(some) - LINES_PER_ALERT} more: see the run")
        grouped.append(
            Alert(
                what=f"{len(some)} checks failed",
                domain=domains.pop() if len(domains) == 1 else None,
                month=month,
                detail="\n".join(lines),
                run_id=some[0].run_id,
            )
        )
    return grouped


@dg.run_status_sensor(
    name="alert_on_failed_check",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends a webhook/email (or logs) for the failed asset checks of a finished run, "
    "one per month.",
)
def alert_on_failed_check(context: dg.RunStatusSensorContext) -> None:
    for alert in per_month(failed_checks(context.instance, context.dagster_run.run_id)):
        send_alert(alert)
