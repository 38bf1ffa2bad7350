"""dbt models as Dagster assets on the same monthly partitions; dbt tests become checks."""

import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from packaging import version

from workdatahub.defs.freshness import DEFAULT_DUE_DAY, freshness_policy
from workdatahub.defs.partitions import dbt_vars_for_window, monthly_partitions
from workdatahub.defs.resources import WarehouseResource
from workdatahub.errors import ConfigError
from workdatahub.logs import get_logger
from workdatahub.periods import months_between, next_month
from workdatahub.settings import PROJECT_ROOT, get_settings
from workdatahub.warehouse.db import parse_dbt_project

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class ProjectDbtResource(DbtCliResource):
    """dagster-dbt's CLI resource, told dbt's version rather than asking the executable:
    dagster-dbt runs `dbt --version` in every run that builds models, a dbt process start
    (2.6-2.8 s here) before the build's own. When the executable is the dbt installed beside
    this interpreter in a virtual environment (the project's venv, whose dbt is its
    dbt-core's), its version is the installed dbt-core's; any other is asked."""

    @cached_property
    def _cli_version(self) -> version.Version:
        executable = Path(self.dbt_executable)
        here = Path(sys.executable).parent
        in_venv = sys.prefix != sys.base_prefix
        beside = executable.parent.is_dir() and executable.parent.samefile(here)
        if executable.name == "dbt" and in_venv and beside:
            from dbt.version import __version__

            return version.parse(__version__)
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        """No dbt adapter in this process. dagster-dbt builds one before every dbt command,
        for `fetch_row_counts` and `fetch_column_metadata`, which this project does not use
        (it counts a mart's rows per month itself): 1.1 s of every Dagster run that builds
        models (loading dbt's profile, project and Postgres adapter), and under a bare
        `except:` that also swallowed a Ctrl-C arriving meanwhile (the run went on). Without
        one, those two calls return no metadata (an empty mapping), as they do when the
        adapter cannot be built."""
        return None


# what dbt parses into the manifest: a file added, changed or removed under these (a
# modeler's new mart or test) makes the manifest stale
PROJECT_SOURCES = ("models", "macros", "seeds", "tests", "snapshots", "analyses")
PARSE_FAILED = ".wdh-parse-failed"  # in the target folder: the project's stamp that did not parse


def project_stamp(project_dir: Path) -> int:
    """The newest modification time (ns) of dbt_project.yml and of the files and folders
    under PROJECT_SOURCES (a folder's changes when a file is added or removed)."""
    newest = (project_dir / "dbt_project.yml").stat().st_mtime_ns
    for name in PROJECT_SOURCES:
        for folder, _, files in os.walk(project_dir / name):
            for entry in (folder, *(os.path.join(folder, f) for f in files)):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(entry).st_mtime_ns)
    return newest


def manifest_is_stale(project_dir: Path, manifest: Path) -> bool:
    """Whether anything dbt parses changed after `manifest` was written (or it is missing)."""
    try:
        parsed = manifest.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    return project_stamp(project_dir) > parsed


def ensure_manifest() -> None:
    """The manifest the dbt assets are made from, parsed again when the project changed
    since (or it is missing): `dagster asset materialize`, tests, the UI's "Reload
    definitions" and a run's process then see a model added since `make setup` or
    `make dev` parsed it. One process parses at a time (a lock file), into a folder of its
    own, and the result replaces the manifest whole: a process reading it meanwhile reads
    the old one or the new one. A parse that fails keeps the manifest there is, with a
    warning, and is not tried again until the project changes again (or raises, when there
    is no manifest). In production the manifest comes with the deployment."""
    manifest = dbt_project.manifest_path
    if get_settings().environment == "prod" and manifest.exists():
        return
    if not manifest_is_stale(DBT_PROJECT_DIR, manifest):
        return
    import fcntl

    target = manifest.parent
    target.mkdir(parents=True, exist_ok=True)
    failed = target / PARSE_FAILED  # the stamp that did not parse, then dbt's reason
    with open(target / ".wdh-parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest_is_stale(DBT_PROJECT_DIR, manifest):  # parsed meanwhile
            return
        stamp = str(project_stamp(DBT_PROJECT_DIR))
        with contextlib.suppress(OSError):
            tried, _, reason = failed.read_text().partition("\n")
            if manifest.exists() and tried == stamp:
                get_logger().warning(_KEPT, error=reason)
                return
        scratch = target / ".wdh-parse"
        partial = target / "partial_parse.msgpack"  # (dbt then parses only what changed)
        try:
            scratch.mkdir(exist_ok=True)
            if partial.exists():
                shutil.copy2(partial, scratch / partial.name)
            parse_dbt_project(DBT_PROJECT_DIR, scratch)
            for name in (partial.name, manifest.name):
                if (scratch / name).exists():
                    os.replace(scratch / name, target / name)
            failed.unlink(missing_ok=True)
        except (ConfigError, OSError) as error:
            if not manifest.exists():
                raise
            reason = error.message if isinstance(error, ConfigError) else str(error)
            with contextlib.suppress(OSError):
                failed.write_text(f"{stamp}\n{reason}")
            get_logger().warning(_KEPT, error=reason)


# (`wdh dbt-parse` parses with Dagster's connection: `dbt parse` with profiles.yml's
# defaults would leave a partial parse every later dbt step of a run parses again)
_KEPT = (
    "the dbt project changed and does not parse: the code location keeps its last manifest "
    "until it does (`wdh dbt-parse` or `make manifest` parses it again)"
)


class WorkDataHubTranslator(DagsterDbtTranslator):
    """raw tables keep the raw assets' keys; models are keyed by schema (staging/marts)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        resource_type = dbt_resource_props["resource_type"]
        if resource_type == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        schema = dbt_resource_props.get("config", {}).get("schema") or dbt_resource_props.get(
            "schema", "marts"
        )
        return dg.AssetKey([schema, dbt_resource_props["name"]])

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if spec.key.path[0] == "marts":
            # the default day; the code location sets each mart's own (`with_due_days`)
            spec = spec.replace_attributes(freshness_policy=freshness_policy())
        return spec

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "seed":
            return "reference"
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "dbt"


translator = WorkDataHubTranslator()
ensure_manifest()


def with_due_days(
    assets_def: dg.AssetsDefinition, due_days: Mapping[dg.AssetKey, int]
) -> dg.AssetsDefinition:
    """The marts' freshness policies on the day their freshness checks use: the latest due
    day of the domains upstream (a mart no domain feeds keeps the default day)."""

    def policy(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key.path[0] != "marts":
            return spec
        day = due_days.get(spec.key, DEFAULT_DUE_DAY)
        return spec.replace_attributes(freshness_policy=freshness_policy(day))

    return assets_def.map_asset_specs(policy)


# the month window for dbt (macros/partition_window.sql), by environment variable
WINDOW_ENV = {"period_start": "WDH_PERIOD_START", "period_end": "WDH_PERIOD_END"}


def window_variables(dbt_vars: Mapping[str, str]) -> dict[str, str]:
    """The window (`dbt_vars_for_window`) as the environment variables dbt reads it from."""
    return {WINDOW_ENV[k]: v for k, v in dbt_vars.items()}


@contextlib.contextmanager
def window_env(dbt_vars: Mapping[str, str]) -> Iterator[None]:
    """The window as environment variables for the dbt process started inside the block,
    and as they were after it. Not `--vars`: dbt parses the whole project again when the
    vars differ from those of its last parse (the month changes every run: ~3 s a build),
    but only the files reading an environment variable when that changes."""
    before = {name: os.environ.get(name) for name in WINDOW_ENV.values()}
    os.environ.update(window_variables(dbt_vars))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# dagster-dbt runs each dbt step of a run in a folder of its own under dbt's target folder,
# `<step>-<run id>-<random>` (manifest, run results, compiled SQL: 2.3-3.7 MB), and never removes
# one: a year of monthly runs, sensor runs and backfills left gigabytes. After each step the
# newest WDH_DBT_KEEP_RUNS are kept; a folder changed within the hour stays whatever its rank
# (another run's step may still be writing to it).
RUN_FOLDER = re.compile(r"\w+-[0-9a-f]{7}-[0-9a-f]{7}")
RUN_FOLDER_MIN_AGE_S = 3600.0


def prune_run_folders(
    target: Path, keep: int, *, min_age_s: float = RUN_FOLDER_MIN_AGE_S, now: float | None = None
) -> list[Path]:
    """Remove the run folders under `target` (dbt's target folder) beyond the newest `keep`,
    except those changed in the last `min_age_s` seconds; anything else there (dbt's own
    `compiled/`, `partial_parse.msgpack`, a modeler's files) is left alone. Returns the
    folders removed; one that cannot be removed is left and skipped."""
    now = time.time() if now is None else now
    runs = []
    for entry in os.scandir(target):
        if RUN_FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            runs.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
    runs.sort(reverse=True)
    removed = []
    for changed, folder in runs[keep:]:
        if now - changed < min_age_s:
            continue
        try:
            shutil.rmtree(folder)
        except OSError:
            continue
        removed.append(folder)
    return removed


# a mart's rows per month of the window, on its materialisation: dagster-dbt's own row count
# (`fetch_row_counts`) counts the whole table, which the UI would show as the month's. A
# mart's month column is the one its pre-hook deletes the window by.
WINDOW_HOOK = re.compile(r"""delete_partition_window\(\s*(?:column\s*=\s*)?['"](\w+)['"]""")


def partition_column(node: Mapping[str, Any]) -> str | None:
    """The column a model's month window is deleted by (`delete_partition_window`), or None
    for a model not built by month window (a view, a table rebuilt whole)."""
    for hook in node.get("config", {}).get("pre-hook", []):
        found = WINDOW_HOOK.search(hook.get("sql", "") if isinstance(hook, dict) else str(hook))
        if found:
            return found.group(1)
    return None


def rows_by_month(
    conn: Any, schema: str, table: str, column: str, months: list[date]
) -> dict[str, int]:
    """The rows of each month of `months` in `schema.table`, whose month is `column` (0 for
    a month it lacks), on `conn` (a psycopg connection)."""
    from psycopg import sql

    counts = dict.fromkeys((f"{m:%Y-%m}" for m in months), 0)
    query = sql.SQL(
        "select to_char({period}, 'YYYY-MM'), count(*) from {table} "
        "where {period} >= %s and {period} < %s group by 1"
    ).format(period=sql.Identifier(column), table=sql.Identifier(schema, table))
    for month, count in conn.execute(query, [months[0], next_month(months[-1])]).fetchall():
        counts[month] = count
    return counts


def _month_metadata(counts: dict[str, int]) -> dict[str, Any]:
    """One month: its row count, as Dagster plots it per partition; a range run records one
    materialisation for every month it built, so each month's count is named in it."""
    if len(counts) == 1:
        return {"dagster/row_count": dg.MetadataValue.int(next(iter(counts.values())))}
    return {"rows_by_month": dg.MetadataValue.json(counts)}


def _raw_read(
    node: Mapping[str, Any], manifest: Mapping[str, Any], raw: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The tables of `raw` (schema, table) that `node` reads, through any model."""
    nodes, sources = manifest.get("nodes", {}), manifest.get("sources", {})
    found: set[tuple[str, str]] = set()
    todo, done = list(node.get("depends_on", {}).get("nodes", [])), set()
    while todo:
        unique_id = todo.pop()
        if unique_id in done:
            continue
        done.add(unique_id)
        if unique_id in sources:
            source = sources[unique_id]
            found.add((source["schema"], source.get("identifier") or source["name"]))
        elif unique_id in nodes:
            todo += nodes[unique_id].get("depends_on", {}).get("nodes", [])
    return sorted(found & set(raw))


def months_not_to_record(
    node: Mapping[str, Any],
    manifest: Mapping[str, Any],
    raw_months: Mapping[tuple[str, str], str],
    count: Callable[[str, str, str], dict[str, int]],
    recorded: Callable[[Mapping[str, Any], str], bool] = lambda parent, month: False,
) -> dict[str, str]:
    """Each month of a mart `node` just built not to record as materialised, and why: a raw
    table it reads (`raw_months`: each raw table's month column) has no rows for the month,
    or a mart it is built from has none and is not `recorded` for it (built empty from
    loaded months: a filter no row passes). `count(schema, table, column)`: rows per
    month."""
    why: dict[str, str] = {}
    for schema, table in _raw_read(node, manifest, raw_months):
        for month, rows in count(schema, table, raw_months[schema, table]).items():
            if not rows:
                why.setdefault(month, f"built without {schema}.{table}'s rows (not loaded)")
    for parent_id in node.get("depends_on", {}).get("nodes", []):
        parent = manifest.get("nodes", {}).get(parent_id, {})
        column = partition_column(parent)
        if column is None:  # (a view, a seed: no months of its own)
            continue
        for month, rows in count(parent["schema"], parent["alias"], column).items():
            if not rows and month not in why and not recorded(parent, month):
                why[month] = f"built without {parent['name']}'s rows"
    return why


def _with_month_rows(
    context: AssetExecutionContext, invocation: Any, events: Iterator[Any], months: list[date]
) -> Iterator[Any]:
    """`events`, each mart's materialisation with its rows per month of the window (counted
    through dbt's connection once dbt has built it). A count that fails is a warning: the
    build stands. A mart month built while a raw table it reads (through any model) has no
    rows for the month (its workbook not loaded: a mart selected alone, a summary of two
    domains one of which is late), or built from a mart that has no rows for it, is not
    recorded as materialised, with a warning naming it: its freshness check would otherwise
    call the month in. A mart month built empty from loaded raw months (a filter no row
    passes) is recorded: no later run would fill it. In a range run the other months are
    recorded, each on its own."""
    import psycopg

    from workdatahub.sources.spec import load_sources
    from workdatahub.warehouse.db import dbt_database_url

    manifest = invocation.manifest
    raw_months = {  # each raw table's month column
        (spec.schema_name, spec.table): spec.partition_column
        for spec in load_sources().domains.values()
    }
    with contextlib.ExitStack() as stack:
        opened: list[Any] = []  # one connection for the step's counts, at the first mart
        seen: dict[tuple[str, str], dict[str, int]] = {}  # each table counted once (a parent)

        def counted_table(schema: str, table: str, column: str) -> dict[str, int]:
            if not opened:
                url = dbt_database_url()
                opened.append(stack.enter_context(psycopg.connect(url, autocommit=True)))
            if (schema, table) not in seen:
                seen[schema, table] = rows_by_month(opened[0], schema, table, column, months)
            return seen[schema, table]

        recorded_here: set[tuple[str, str]] = set()  # (mart, month) recorded by this step

        def recorded(parent: Mapping[str, Any], month: str) -> bool:
            """Recorded as materialised for `month`, by this step or a run before it."""
            if (parent["unique_id"], month) in recorded_here:
                return True
            key = translator.get_asset_key(parent)
            found = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=1
            )
            return bool(found.records)

        for event in events:
            node: Mapping[str, Any] = {}
            if isinstance(event, dg.Output | dg.AssetMaterialization):
                unique_id = event.metadata.get("unique_id")
                node = manifest.get("nodes", {}).get(getattr(unique_id, "value", unique_id), {})
            column = partition_column(node)
            if column is None:  # (not a mart's materialisation)
                yield event
                continue
            try:
                counts = counted_table(node["schema"], node["alias"], column)
                skipped = months_not_to_record(node, manifest, raw_months, counted_table, recorded)
            except Exception as error:
                context.log.warning(f"{node['name']}: rows per month not counted: {error}")
                yield event
                continue
            recorded_here.update((node["unique_id"], m) for m in counts if m not in skipped)
            if not skipped:
                yield event.with_metadata({**event.metadata, **_month_metadata(counts)})
                continue
            reasons = "; ".join(f"{month} {why}" for month, why in sorted(skipped.items()))
            if len(skipped) == len(counts):
                context.log.warning(f"{node['name']}: {reasons}; not recorded as materialised")
                continue
            # a range with months not to record: the other months alone are recorded, each on
            # its own (one materialisation would record the whole range)
            context.log.warning(
                f"{node['name']}: {reasons}; recorded as materialised for the other months only"
            )
            key = (
                context.asset_key_for_output(event.output_name)
                if isinstance(event, dg.Output)
                else event.asset_key
            )
            for month, rows in counts.items():
                if month not in skipped:
                    metadata = {**event.metadata, "dagster/row_count": dg.MetadataValue.int(rows)}
                    yield dg.AssetMaterialization(asset_key=key, partition=month, metadata=metadata)


def _pruned_after(
    context: AssetExecutionContext, invocation: Any, months: list[date] | None = None
) -> Iterator[Any]:
    """The events of a dbt step (with the marts' rows per month of `months`), then the older
    run folders removed (whether the step succeeded or failed: the newest folders, its own
    among them, are kept)."""
    try:
        events = invocation.stream()
        if months:
            events = _with_month_rows(context, invocation, events, months)
        yield from events
    finally:
        folder = Path(invocation.target_path)
        if not folder.is_absolute():
            folder = Path(invocation.project_dir) / folder
        keep = get_settings().dbt_keep_runs
        try:
            removed = prune_run_folders(folder.parent, keep)
        except OSError as error:
            context.log.warning(f"older dbt run folders not removed: {error}")
        else:
            if removed:
                context.log.info(
                    f"removed {len(removed)} older dbt run folders from {folder.parent} "
                    f"(WDH_DBT_KEEP_RUNS={keep})"
                )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select="resource_type:model",
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=translator,
    name="dbt_models",
    pool="dbt_build",
)
def dbt_models(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Build (run + test) the models for the month window of this run."""
    warehouse.export_dbt_env()
    window = context.partition_time_window
    dbt_vars = dbt_vars_for_window(window.start, window.end)
    context.log.info(
        f"dbt build for {dbt_vars['period_start']} ≤ period < {dbt_vars['period_end']}"
    )
    # buildable: a test runs when all its parents are selected or upstream of the selection, so
    # seed relationships run with the models, and the cross-mart reconciliation only when every
    # mart is built (a one-domain run from the arrival sensor skips it instead of failing)
    args = ["build", "--indirect-selection", "buildable"]
    with window_env(dbt_vars):  # (the dbt process starts in `cli`)
        invocation = dbt.cli(args, context=context)
    months = months_between(window.start.date(), window.end.date())
    yield from _pruned_after(context, invocation, months)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select="resource_type:seed",
    dagster_dbt_translator=translator,
    # lets `--partition-range` runs include the (unpartitioned) reference tables
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="dbt_reference_seeds",
    pool="dbt_build",
)
def dbt_reference_seeds(
    context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Reference tables (seeds): product lines, branches, plans, accounts, company ids."""
    warehouse.export_dbt_env()
    # cautious: tests that also read staging models run with the models, not here
    invocation = dbt.cli(["build", "--indirect-selection", "cautious"], context=context)
    yield from _pruned_after(context, invocation)
