"""The Dagster code location loads, and its asset graph is what the design says."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dagster as dg
import pytest

from workdatahub.defs.partitions import monthly_partitions
from workdatahub.sources.spec import SourcesFile


@pytest.fixture(scope="module")
def graph() -> dg.AssetGraph:  # type: ignore[type-arg]
    from workdatahub.definitions import defs

    return defs.resolve_asset_graph()


def keys(graph: dg.AssetGraph) -> set[str]:  # type: ignore[type-arg]
    return {k.to_user_string() for k in graph.get_all_asset_keys()}


def test_asset_keys(graph: dg.AssetGraph) -> None:  # type: ignore[type-arg]
    expected = {
        "raw/trustee_performance", "raw/annuity_performance", "raw/annuity_income",
        "staging/stg_trustee_performance", "staging/stg_annuity_performance",
        "staging/stg_annuity_income", "marts/fct_trustee_performance",
        "marts/fct_annuity_performance", "marts/fct_annuity_income",
        "marts/fct_monthly_branch_product_line", "reference/ref_branches",
        "reference/ref_product_lines", "reference/ref_annuity_plans",
        "reference/ref_annuity_accounts", "reference/ref_company_names",
        "reference/ref_company_id_overrides",
    }  # fmt: skip
    assert expected <= keys(graph)


def test_one_monthly_partitions_definition_is_shared(graph: dg.AssetGraph) -> None:  # type: ignore[type-arg]
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.path[0] in ("raw", "staging", "marts"):
            assert node.partitions_def == monthly_partitions, key
        else:
            assert node.partitions_def is None, key
    assert monthly_partitions.get_partition_keys()[0] == "2024-01"  # YYYY-MM, not 2024-01-01


def test_lineage_raw_to_staging_to_marts(graph: dg.AssetGraph) -> None:  # type: ignore[type-arg]
    def parents(key: str) -> set[str]:
        return {
            p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys
        }

    assert "raw/trustee_performance" in parents("staging/stg_trustee_performance")
    assert "staging/stg_trustee_performance" in parents("marts/fct_trustee_performance")
    assert {"raw/annuity_performance", "reference/ref_branches"} <= parents(
        "staging/stg_annuity_performance"
    )


def test_checks_pandera_and_dbt(graph: dg.AssetGraph) -> None:  # type: ignore[type-arg]
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for domain in ("trustee_performance", "annuity_performance", "annuity_income"):
        assert (f"raw/{domain}", "reject_rate") in checks
    marts_checks = {name for asset, name in checks if asset.startswith("marts/")}
    assert any(
        name.startswith("not_null_fct_annuity_performance_company_id") for name in marts_checks
    )
    for domain in ("trustee_performance", "annuity_performance", "annuity_income"):
        assert f"reconciles_to_raw_{domain}" in marts_checks
    summary = {name for asset, name in checks if asset == "marts/fct_monthly_branch_product_line"}
    assert {
        "summary_reconciles_to_fct_annuity_performance",
        "summary_reconciles_to_fct_annuity_income",
    } <= summary
    assert len(checks) >= 60


def test_jobs_and_backfill_policy(graph: dg.AssetGraph) -> None:  # type: ignore[type-arg]
    from workdatahub.definitions import defs

    job = defs.resolve_job_def("monthly_refresh")
    assert job.partitions_def == monthly_partitions
    for key in graph.get_all_asset_keys():
        policy = graph.get(key).backfill_policy
        assert policy is not None and policy.max_partitions_per_run is None, key  # single run


def _freshness_deadlines(defs: dg.Definitions) -> dict[str, list[str]]:
    """asset -> the deadline crons of its freshness checks."""
    deadlines: dict[str, list[str]] = {}
    for checks in defs.asset_checks or []:
        for spec in checks.check_specs:  # type: ignore[union-attr]
            params = spec.metadata.get("dagster/freshness_params")
            if params is not None:
                deadlines.setdefault(spec.asset_key.to_user_string(), []).append(
                    params.data["deadline_cron"]
                )
    return deadlines


def _one_check_on_each_policy_day(defs: dg.Definitions) -> dict[str, list[str]]:
    """The freshness deadlines, each asset's one check on its freshness policy's day."""
    graph = defs.resolve_asset_graph()  # loads: no duplicate check key
    deadlines = _freshness_deadlines(defs)
    for asset, crons in deadlines.items():
        policy = graph.get(dg.AssetKey.from_user_string(asset)).freshness_policy
        assert policy is not None and crons == [policy.deadline_cron], asset  # type: ignore[attr-defined]
    return deadlines


def test_each_asset_has_one_freshness_check_on_its_policy_day() -> None:
    from workdatahub.definitions import defs

    _one_check_on_each_policy_day(defs)
    # trustee_performance is due by the 10th (data_sources.yml): so is the mart it feeds
    assert _freshness_deadlines(defs)["marts/fct_trustee_performance"] == ["0 9 10 * *"]


def test_a_model_added_renames_no_other_assets_freshness_check() -> None:
    """A run launched from a UI not yet reloaded names the steps it knew; the run's own
    definitions, with a model added since, must still have them."""
    from workdatahub.defs.automation import build_freshness_checks

    def names(keys: list[str]) -> dict[str, str]:
        checks = build_freshness_checks({15: [dg.AssetKey.from_user_string(k) for k in keys]})
        return {c.node_def.name: "/".join(next(iter(c.check_keys)).asset_key.path) for c in checks}

    before = names(["raw/annuity_income", "marts/fct_annuity_income"])
    after = names(["raw/annuity_income", "marts/fct_annuity_income", "marts/fct_new"])
    assert len(before) == 2 and before.items() <= after.items()


def test_a_mart_of_two_domains_is_due_on_the_later_day(sources: SourcesFile) -> None:
    """fct_monthly_branch_product_line reads annuity_performance and annuity_income: with
    different due days it gets one freshness check (two would be a duplicate check key),
    on the later day, and its policy says the same."""
    from workdatahub.definitions import build_definitions

    income = sources.domains["annuity_income"].model_copy(update={"due_day": 20})
    assert sources.domains["annuity_performance"].due_day == 15
    later = sources.model_copy(update={"domains": {**sources.domains, "annuity_income": income}})
    defs = build_definitions(later)
    deadlines = _one_check_on_each_policy_day(defs)
    assert deadlines["marts/fct_monthly_branch_product_line"] == ["0 9 20 * *"]
    assert deadlines["marts/fct_annuity_income"] == ["0 9 20 * *"]
    assert deadlines["marts/fct_annuity_performance"] == ["0 9 15 * *"]
    assert deadlines["raw/annuity_income"] == ["0 9 20 * *"]
    job = defs.resolve_job_def("monthly_refresh")  # the job still leaves freshness out
    assert not any("freshness" in c.name for c in job.asset_layer.asset_graph.asset_check_keys)


def test_dbt_version_is_read_in_process_for_the_venvs_dbt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """dagster-dbt asks `dbt --version` (a dbt process start) in every run; the project's own
    dbt is told its version instead, any other executable is still asked."""
    import functools

    import dagster_dbt.core.resource
    from dagster_dbt import DbtCliResource
    from dbt.version import __version__

    from workdatahub.defs.dbt import ProjectDbtResource, dbt_project

    # the name dagster-dbt's `cli()` reads; renamed upstream, the override would do nothing
    assert isinstance(DbtCliResource.__dict__.get("_cli_version"), functools.cached_property)
    asked: list[str] = []

    def check_output(args: list[str], **_: object) -> bytes:
        asked.append(str(args[0]))
        return b"Core:\n  - installed: 9.8.7\n"

    monkeypatch.setattr(dagster_dbt.core.resource, "check_output", check_output)
    venv_dbt = Path(sys.executable).parent / "dbt"
    own = ProjectDbtResource(project_dir=dbt_project, dbt_executable=str(venv_dbt))
    assert str(own._cli_version) == __version__ and not asked
    other = tmp_path / "dbt"
    other.write_text("")
    other.chmod(0o755)
    foreign = ProjectDbtResource(project_dir=dbt_project, dbt_executable=str(other))
    assert str(foreign._cli_version) == "9.8.7" and asked == [str(other)]


def test_older_dbt_run_folders_are_removed_newest_kept(tmp_path: Path) -> None:
    """dagster-dbt's folder per dbt step (`<step>-<run id>-<random>`) is never removed by
    dagster-dbt: the newest WDH_DBT_KEEP_RUNS stay, as do folders changed within the hour
    and anything that is not such a folder."""
    import os
    import time

    from dagster_dbt.core.resource import DbtCliResource

    from workdatahub.defs.dbt import RUN_FOLDER, dbt_project, prune_run_folders

    # the names dagster-dbt gives them (a step, a run id, a random id) match the pattern
    class Run:
        run_id = "2f1e0d9c-8b7a-4654-a321-0fedcba98765"

    class Op:
        name = "dbt_models"

    class Context:
        run = Run()
        op_execution_context = type("X", (), {"op": Op()})()

    venv_dbt = str(Path(sys.executable).parent / "dbt")  # (the venv need not be on PATH)
    resource = DbtCliResource(project_dir=dbt_project, dbt_executable=venv_dbt)
    unique = resource._get_unique_target_path(context=Context())  # type: ignore[arg-type]
    assert RUN_FOLDER.fullmatch(unique.name), unique.name

    now = time.time()
    ages_h = {"dbt_models-aaaaaaa-0000001": 3, "dbt_models-bbbbbbb-0000002": 2,
              "dbt_reference_seeds-ccccccc-0000003": 1.5, "dbt_models-ddddddd-0000004": 0.2,
              "compiled": 9}  # fmt: skip
    for name, hours in ages_h.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
        os.utime(tmp_path / name, (now - hours * 3600, now - hours * 3600))
    (tmp_path / "dbt_models-eeeeeee-0000005").write_text("a file of that name")
    (tmp_path / "dbt_models-fffffff-0000006").symlink_to(tmp_path / "compiled")

    removed = prune_run_folders(tmp_path, keep=2, now=now)
    assert sorted(p.name for p in removed) == [
        "dbt_models-aaaaaaa-0000001", "dbt_models-bbbbbbb-0000002"
    ]  # fmt: skip
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "compiled", "dbt_models-ddddddd-0000004", "dbt_models-eeeeeee-0000005",
        "dbt_models-fffffff-0000006", "dbt_reference_seeds-ccccccc-0000003",
    ]  # fmt: skip
    assert (tmp_path / "compiled" / "manifest.json").exists()  # not through the symlink
    # beyond the newest one but changed within the hour: kept
    assert prune_run_folders(tmp_path, keep=1, now=now) == [
        tmp_path / "dbt_reference_seeds-ccccccc-0000003"
    ]
    assert prune_run_folders(tmp_path, keep=0, now=now) == []


def test_a_failed_run_names_its_months_compactly() -> None:
    from workdatahub.periods import compact

    assert compact([]) == ""
    assert compact(["2024-03"]) == "2024-03"
    assert compact(["2024-01", "2024-02", "2024-04"]) == "2024-01, 2024-02, 2024-04"
    assert compact(["2023-11", "2023-12", "2024-01", "2024-03"]) == "2023-11…2024-01, 2024-03"


@pytest.mark.db
def test_a_marts_rows_are_counted_per_month_of_the_window(pg: object, pg_url: str) -> None:
    """A mart's materialisation carries its rows per month of the run's window, a month it
    lacks as 0: one month as Dagster's row count, a range as each month's count."""
    from datetime import date

    from workdatahub.defs.dbt import _month_metadata, partition_column, rows_by_month
    from workdatahub.periods import months_between

    months = months_between(date(2023, 12, 1), date(2024, 3, 1))
    assert months == [date(2023, 12, 1), date(2024, 1, 1), date(2024, 2, 1)]
    pg.execute("drop table if exists public.wdh_test_counted")  # type: ignore[attr-defined]
    pg.execute("create table public.wdh_test_counted (period date)")  # type: ignore[attr-defined]
    pg.execute(  # type: ignore[attr-defined]
        "insert into public.wdh_test_counted values "
        "('2023-11-01'), ('2023-12-01'), ('2023-12-01'), ('2024-02-01'), ('2024-03-01')"
    )
    try:
        counts = rows_by_month(pg, "public", "wdh_test_counted", "period", months)
    finally:
        pg.execute("drop table public.wdh_test_counted")  # type: ignore[attr-defined]
    assert counts == {"2023-12": 2, "2024-01": 0, "2024-02": 1}
    assert _month_metadata(counts) == {"rows_by_month": dg.MetadataValue.json(counts)}
    one = _month_metadata({"2024-01": 7})
    assert one == {"dagster/row_count": dg.MetadataValue.int(7)}

    # the month column is the one the mart's pre-hook deletes its window by
    hook = "{{ delete_partition_window('report_date') }}"
    assert partition_column({"config": {"pre-hook": [{"sql": hook}]}}) == "report_date"
    assert partition_column({"config": {"materialized": "view", "pre-hook": []}}) is None
    keyword = "{{ delete_partition_window(column='period') }}"
    assert partition_column({"config": {"pre-hook": [{"sql": keyword}]}}) == "period"


def test_the_manifest_is_parsed_again_once_the_project_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model, test or macro added, changed or removed after the manifest was parsed (a
    modeler's new mart) makes it stale: the code location parses it again when it loads
    (a run's process, the UI's reload), and keeps the one it has if that parse fails."""
    import os
    from types import SimpleNamespace

    from workdatahub.defs import dbt
    from workdatahub.errors import ConfigError

    project = tmp_path / "dbt"
    (project / "models" / "marts").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: x\n")
    model = project / "models" / "marts" / "fct_a.sql"
    model.write_text("select 1")
    manifest = project / "target" / "manifest.json"

    def age(path: Path, seconds: int) -> None:
        stamp = path.stat().st_mtime_ns - seconds * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))

    assert dbt.manifest_is_stale(project, manifest)  # none yet
    manifest.parent.mkdir()
    manifest.write_text("{}")
    for path in (project / "dbt_project.yml", model, model.parent, model.parent.parent):
        age(path, 10)
    assert not dbt.manifest_is_stale(project, manifest)
    (model.parent / "fct_b.sql").write_text("select 2")  # added
    assert dbt.manifest_is_stale(project, manifest)
    age(model.parent / "fct_b.sql", 10)
    age(model.parent, 10)
    assert not dbt.manifest_is_stale(project, manifest)
    (model.parent / "fct_b.sql").unlink()  # removed: its folder changed
    assert dbt.manifest_is_stale(project, manifest)

    parsed: list[tuple[Path, Path | None]] = []
    failing = False

    def parse(folder: Path, target: Path | None = None) -> None:
        parsed.append((folder, target))
        if failing:
            raise ConfigError(f"dbt parse failed in {folder} (exit 1)")
        assert target is not None
        (target / "manifest.json").write_text(f'{{"parsed": {len(parsed)}}}')

    monkeypatch.setattr(dbt, "DBT_PROJECT_DIR", project)
    monkeypatch.setattr(dbt, "dbt_project", SimpleNamespace(manifest_path=manifest))
    monkeypatch.setattr(dbt, "parse_dbt_project", parse)
    dbt.ensure_manifest()  # parsed into a folder of its own, then put in place whole
    assert parsed == [(project, manifest.parent / ".wdh-parse")]
    assert manifest.read_text() == '{"parsed": 1}'
    dbt.ensure_manifest()  # fresh now: not parsed again
    assert len(parsed) == 1
    failing = True
    model.write_text("select broken")
    age(manifest, 10)
    dbt.ensure_manifest()  # a failed parse keeps the manifest there is
    assert len(parsed) == 2 and manifest.read_text() == '{"parsed": 1}'
    assert (manifest.parent / dbt.PARSE_FAILED).read_text().endswith("(exit 1)")  # dbt's why
    dbt.ensure_manifest()  # and is not tried again for the same project
    assert len(parsed) == 2
    model.write_text("select fixed")  # until it changes again
    failing = False
    dbt.ensure_manifest()
    assert len(parsed) == 3 and manifest.read_text() == '{"parsed": 3}'
    manifest.unlink()
    failing = True
    with pytest.raises(ConfigError):
        dbt.ensure_manifest()


def test_a_dbt_parse_that_fails_says_what_dbt_found(tmp_path: Path) -> None:
    """`wdh dbt-parse` and the code location's parse say dbt's error on one line, not just
    its exit code."""
    import shutil

    from workdatahub.defs.dbt import DBT_PROJECT_DIR
    from workdatahub.errors import ConfigError
    from workdatahub.warehouse.db import parse_dbt_project

    project = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    (project / "models" / "marts" / "fct_broken.sql").write_text("select {{ broken(")
    with pytest.raises(ConfigError) as error:
        parse_dbt_project(project, tmp_path / "target")
    assert re.search(r"\(exit \d+\): Compilation Error in model fct_broken", error.value.message)
    assert "\n" not in error.value.message


def test_no_model_reads_a_raw_table_with_select_star() -> None:
    """A view's `select *` is expanded when it is made: it then depends on every column of
    the raw table, and a migration can no longer change or drop a column the model does not
    even read (`cannot alter type of a column used by a view or rule`)."""
    project = Path(__file__).resolve().parent.parent / "dbt_project"
    star = re.compile(r"select\s+\*\s+from\s+\{\{\s*source\(", re.IGNORECASE)
    reading = [p for p in project.rglob("*.sql") if "source(" in p.read_text(encoding="utf-8")]
    assert reading  # the staging models
    assert [p.name for p in reading if star.search(p.read_text(encoding="utf-8"))] == []


def test_a_mart_month_is_recorded_by_whether_the_raw_months_it_reads_are_loaded(
    sources: SourcesFile,
) -> None:
    """A month built empty from loaded raw months (a mart whose filter no row passes) is
    recorded: it was taken for a month not loaded, never recorded, and its freshness check
    failed for good. One whose raw month is missing, directly or through the marts it is
    built from, is not."""
    import json

    from workdatahub.defs.dbt import dbt_project, months_not_to_record

    manifest = json.loads(Path(dbt_project.manifest_path).read_text(encoding="utf-8"))
    raw = {(s.schema_name, s.table): s.partition_column for s in sources.domains.values()}
    rows: dict[tuple[str, str], dict[str, int]] = {}

    def count(schema: str, table: str, column: str) -> dict[str, int]:
        return rows[schema, table]

    def node(name: str) -> dict[str, object]:
        return manifest["nodes"][f"model.workdatahub.{name}"]  # type: ignore[no-any-return]

    trustee = node("fct_trustee_performance")
    rows[("raw", "trustee_performance")] = {"2024-02": 3, "2024-03": 0}
    assert months_not_to_record(trustee, manifest, raw, count) == {
        "2024-03": "built without raw.trustee_performance's rows (not loaded)"
    }
    rows[("raw", "trustee_performance")] = {"2024-02": 3}
    rows[("marts", "fct_trustee_performance")] = {"2024-02": 0}  # (its own rows: not asked)
    assert months_not_to_record(trustee, manifest, raw, count) == {}

    summary = node("fct_monthly_branch_product_line")
    rows[("raw", "annuity_performance")] = {"2024-02": 20}
    rows[("raw", "annuity_income")] = {"2024-02": 0}
    rows[("marts", "fct_annuity_performance")] = {"2024-02": 20}
    rows[("marts", "fct_annuity_income")] = {"2024-02": 0}
    assert months_not_to_record(summary, manifest, raw, count) == {
        "2024-02": "built without raw.annuity_income's rows (not loaded)"
    }
    rows[("raw", "annuity_income")] = {"2024-02": 20}  # loaded, its mart not built for it
    assert months_not_to_record(summary, manifest, raw, count) == {
        "2024-02": "built without fct_annuity_income's rows"
    }

    # built empty from its loaded month, and recorded so: the summary is recorded too
    def income_recorded(parent: dict[str, object], month: str) -> bool:
        return parent["name"] == "fct_annuity_income" and month == "2024-02"

    assert months_not_to_record(summary, manifest, raw, count, income_recorded) == {}
