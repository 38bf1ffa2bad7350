"""Materialise raw + dbt for real, in-process, and check the marts against totals computed
independently from the workbooks (openpyxl + plain Decimal arithmetic)."""

from __future__ import annotations

import unicodedata
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import openpyxl
import pytest
from psycopg import sql

from tests.warehouse import dbt, dbt_started
from workdatahub.errors import WarehouseError
from workdatahub.samples import write_samples

pytestmark = [pytest.mark.db, pytest.mark.slow]
FEB = date(2024, 2, 1)


def _number(value: Any) -> Decimal:
    """A deliberately plain reading of an amount cell (independent of the pipeline's)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, (int, float)):
        return Decimal(repr(value))
    text = unicodedata.normalize("NFKC", str(value)).strip()
    for junk in (",", "¥", "$", " "):
        text = text.replace(junk, "")
    if text in ("", "-", "N/A", "null", "无", "暂无"):
        return Decimal(0)
    negative = text.startswith("(") and text.endswith(")")
    amount = Decimal(text.strip("()"))
    return -amount if negative else amount


def workbook_totals(path: Path, sheet: str, column: str, skip_rows: set[int]) -> Decimal:
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    rows = book[sheet].iter_rows(values_only=True)
    total = Decimal(0)
    index = None
    header_at = None
    for number, row in enumerate(rows, start=1):
        cells = ["".join(unicodedata.normalize("NFKC", str(c or "")).split()) for c in row]
        if index is None:
            if "月度" in cells:
                index, header_at = cells.index(column), number
            continue
        first = next((c for c in cells if c), "")
        if not first or first in ("合计", "总计") or number in skip_rows:
            continue
        total += _number(row[index])
    book.close()
    assert header_at is not None
    return total


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    data = tmp_path_factory.mktemp("data")
    return data, write_samples(data, [FEB], rows=300, seed=11)


# the performance fact table and what it is built from (its raw asset, staging, the seeds)
_PERFORMANCE_FACT = dg.AssetSelection.assets(
    dg.AssetKey(["marts", "fct_annuity_performance"])
).upstream()


def materialise(
    data_dir: Path,
    partition: str = "2024-02",
    assets: dg.AssetSelection | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """The month (or the months `first...last`) through the monthly_refresh job: every
    asset, or the `assets` selected."""
    from workdatahub.definitions import defs

    selected = None
    if assets is not None:
        keys = assets.resolve(defs.resolve_asset_graph())
        selected = sorted(keys, key=lambda k: k.to_user_string())
    first, _, last = partition.partition("...")  # a range: first...last
    return defs.resolve_job_def("monthly_refresh").execute_in_process(
        partition_key=None if last else partition,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        }
        if last
        else None,
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=selected,
        run_config={"resources": {"warehouse": {"config": {"data_dir": str(data_dir)}}}},
        raise_on_error=raise_on_error,
    )


def test_month_through_dagster_matches_independent_totals(
    month: tuple[Path, list[Any]], pg: Any, fresh_tables: None
) -> None:
    data_dir, samples = month
    result = materialise(data_dir)
    assert result.success
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"raw/annuity_performance", "marts/fct_monthly_branch_product_line"} <= materialised
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]

    performance = next(s for s in samples if s.domain == "annuity_performance")
    rejected = {
        r[0]
        for r in pg.execute(
            "select source_row from wdh.rejected_rows "
            "where domain = 'annuity_performance' and period = %s",
            [FEB],
        ).fetchall()
    }
    assert len(rejected) == performance.expected_rejects
    expected = workbook_totals(performance.path, "规模明细", "期末资产规模", rejected)
    raw_total, raw_rows = pg.execute(
        "select sum(closing_assets), count(*) from raw.annuity_performance where period = %s", [FEB]
    ).fetchone()
    mart_total = pg.execute(
        "select sum(closing_assets) from marts.fct_monthly_branch_product_line where period = %s",
        [FEB],
    ).fetchone()[0]
    fact_total = pg.execute(
        "select sum(closing_assets) from marts.fct_annuity_performance where period = %s", [FEB]
    ).fetchone()[0]
    assert raw_rows == performance.rows - performance.expected_rejects
    assert raw_total == expected == mart_total == fact_total

    # each mart's materialisation of the month carries the month's rows (not the table's)
    counted = {
        e.asset_key.path[-1]: e.materialization.metadata["dagster/row_count"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[0] == "marts"
    }
    # (the marts and their month columns as dbt_project.yml names them)
    import yaml

    from workdatahub.defs.dbt import DBT_PROJECT_DIR

    settings = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))
    months_by = settings["vars"]["partition_columns"]
    marts = {path.stem for path in (DBT_PROJECT_DIR / "models" / "marts").glob("*.sql")}
    assert set(counted) == marts and marts <= set(months_by)
    for mart, rows in counted.items():
        column = months_by[mart]
        query = sql.SQL("select count(*) from {} where {} = %s").format(
            sql.Identifier("marts", mart), sql.Identifier(column)
        )
        assert rows == pg.execute(query, [FEB]).fetchone()[0] > 0, mart
    # every column a model builds is documented in its YAML (dbt docs, the UI's columns)
    documented = {
        model["name"]: {column["name"] for column in model.get("columns", [])}
        for path in (DBT_PROJECT_DIR / "models").rglob("_*.yml")
        for model in yaml.safe_load(path.read_text(encoding="utf-8")).get("models", [])
    }
    # (the models the project has: the shared test database may hold a relation another
    # test left behind)
    built = pg.execute(
        "select table_name, array_agg(column_name::text) from information_schema.columns "
        "where table_schema in ('staging', 'marts') and table_name = any(%s) group by 1",
        [list(documented)],
    ).fetchall()
    assert {name for name, _ in built} == set(documented)
    for name, columns in built:
        assert set(columns) - documented[name] == set(), name
    # and written to the database, where psql and BI tools show them (persist_docs)
    uncommented = pg.execute(
        "select c.table_schema || '.' || c.table_name || '.' || c.column_name "
        "from information_schema.columns c where c.table_schema in ('staging', 'marts') and "
        "c.table_name = any(%s) and "
        "col_description(format('%%I.%%I', c.table_schema, c.table_name)::regclass, "
        "c.ordinal_position) is null",
        [list(documented)],
    ).fetchall()
    assert uncommented == []

    # a month whose raw data was never loaded, its marts selected alone: built empty, and
    # not recorded as materialised (their freshness checks would call the month in)
    marts = dg.AssetSelection.key_prefixes(["marts"])
    empty = materialise(data_dir, "2024-05", assets=marts)
    assert empty.success
    assert not [
        e for e in empty.get_asset_materialization_events() if e.asset_key.path[0] == "marts"
    ]
    # a range run: every month empty, nothing recorded; one empty, the other months alone
    for first, last, recorded in (("2024-04", "2024-05", set()), ("2024-02", "2024-03", {FEB})):
        ranged = materialise(data_dir, f"{first}...{last}", assets=marts)
        assert ranged.success
        months = {
            e.partition
            for e in ranged.get_asset_materialization_events()
            if e.asset_key.path[0] == "marts"
        }
        assert months == {f"{m:%Y-%m}" for m in recorded}, (first, last)

    income = next(s for s in samples if s.domain == "annuity_income")
    rejected_income = {
        r[0]
        for r in pg.execute(
            "select source_row from wdh.rejected_rows "
            "where domain = 'annuity_income' and period = %s",
            [FEB],
        ).fetchall()
    }
    assert len(rejected_income) == income.expected_rejects  # the rows the sample planted
    fees = sum(
        workbook_totals(income.path, "收入明细", column, rejected_income)
        for column in ("固费", "浮费", "回补")
    )
    mart_fees = pg.execute(
        "select sum(fee_income) from marts.fct_monthly_branch_product_line where period = %s", [FEB]
    ).fetchone()[0]
    assert mart_fees == fees
    # every fact row resolved a company id
    assert pg.execute(
        "select count(*) from marts.fct_annuity_performance where company_id is null"
    ).fetchone() == (0,)

    # the SQL temporary id (dbt macro) equals its Python twin, and every step of the chain hit
    from workdatahub.warehouse.company_id import temp_company_id

    temporary = pg.execute(
        "select distinct customer_name, company_id from marts.fct_annuity_performance "
        "where company_id_source = 'temporary' and period = %s",
        [FEB],
    ).fetchall()
    assert temporary, "the samples include unknown customers"
    assert all(company_id == temp_company_id(name or "") for name, company_id in temporary)
    sources_hit = {
        r[0]
        for r in pg.execute(
            "select distinct company_id_source from marts.fct_annuity_performance "
            "where period = %s",
            [FEB],
        ).fetchall()
    }
    assert {"plan", "account", "name", "temporary"} <= sources_hit

    # materialising the same month again changes nothing
    def snapshot() -> list[Any]:
        return pg.execute(
            "select period, branch_code, product_line_code, closing_assets, fee_income "
            "from marts.fct_monthly_branch_product_line order by 1, 2, 3"
        ).fetchall()

    before = snapshot()
    assert materialise(data_dir).success
    assert snapshot() == before


def test_branch_code_is_looked_up_by_the_branch_name(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """The data contract: 机构代码 is looked up from 机构名称 in ref_branches, else G00; a code
    the workbook carries does not decide it (a typed name or a stale code would split a
    branch's totals), and is kept in the raw table as given."""

    (sample,) = write_samples(
        tmp_path, [FEB], rows=20, seed=5, quirks=False, domains=("annuity_performance",)
    )
    book = openpyxl.load_workbook(sample.path)
    sheet = book["规模明细"]
    header = [c.value for c in sheet[1]]
    name_at, code_at = header.index("机构名称") + 1, len(header) + 1
    sheet.cell(row=1, column=code_at, value="机构代码")
    written = {2: ("北京", "北京分公司"), 3: ("北京", "G05"), 4: (None, "G01"), 5: ("火星", "G01")}
    for row, (name, code) in written.items():
        sheet.cell(row=row, column=name_at).value = name  # (value=None would leave the cell)
        sheet.cell(row=row, column=code_at).value = code
    book.save(sample.path)

    result = materialise(tmp_path, assets=_PERFORMANCE_FACT)
    assert result.success
    rows = pg.execute(
        "select f.source_row, f.branch_code, r.branch_code from marts.fct_annuity_performance f "
        "join raw.annuity_performance r using (period, source_row) where f.period = %s",
        [FEB],
    ).fetchall()
    found = {row: (code, raw) for row, code, raw in rows}
    expected = {2: "G01", 3: "G01", 4: "G00", 5: "G00"}  # 北京 is G01; 火星 is unknown
    assert {row: found[row][0] for row in expected} == expected
    assert {row: found[row][1] for row in expected} == {r: c for r, (_, c) in written.items()}
    known = dict(pg.execute("select branch_name, branch_code from reference.ref_branches"))
    names = dict(
        pg.execute(
            "select source_row, branch_name from raw.annuity_performance where period = %s", [FEB]
        ).fetchall()
    )
    assert all(code == known.get(names[row], "G00") for row, (code, _) in found.items())
    # the unknown name is reported by the warning test on branch_name, not blocking
    checks = result.get_asset_check_evaluations()
    warned = [c.check_name for c in checks if not c.passed and c.check_name != "freshness_check"]
    assert [name.split("__")[0] for name in warned] == [
        "relationships_stg_annuity_performance_branch_name"
    ]
    assert "reconciles_to_raw_annuity_performance" in {c.check_name for c in checks if c.passed}


def test_a_summary_built_without_one_of_its_domains_is_not_recorded(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """The month's performance loaded, its income not (late): the summary of both is built
    with rows (no fees), but is not recorded as materialised, so its freshness check does
    not call an incomplete month in; the performance fact is recorded."""
    write_samples(tmp_path, [FEB], rows=20, seed=5, domains=("annuity_performance",))
    others = dg.AssetSelection.assets(
        dg.AssetKey(["raw", "annuity_income"]), dg.AssetKey(["raw", "trustee_performance"])
    )
    result = materialise(tmp_path, assets=dg.AssetSelection.all() - others)
    assert result.success
    recorded = {
        e.asset_key.path[-1]: e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[0] == "marts"
    }
    assert recorded == {"fct_annuity_performance": "2024-02"}
    built = pg.execute(
        "select count(*), sum(fee_income) from marts.fct_monthly_branch_product_line "
        "where period = %s",
        [FEB],
    ).fetchone()
    assert built[0] > 0 and built[1] == 0  # built all the same, without the month's fees


def test_one_domains_run_reconciles_what_it_built_to_raw(
    month: tuple[Path, list[Any]], pg: Any, fresh_tables: None
) -> None:
    """A run of one domain (as the arrival sensor and the schedule start them: its raw
    asset and the models downstream) runs the reconciliation of its marts to raw."""

    data_dir, _ = month
    raw = dg.AssetKey(["raw", "annuity_income"])
    result = materialise(data_dir, assets=dg.AssetSelection.assets(raw).downstream())
    assert result.success
    passed = {c.check_name for c in result.get_asset_check_evaluations() if c.passed}
    assert {
        "reconciles_to_raw_annuity_income", "summary_reconciles_to_fct_annuity_income"
    } <= passed  # fmt: skip


def test_corrected_v2_file_replaces_the_v1_month(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    from workdatahub.pipeline import run_partition
    from workdatahub.sources.spec import load_sources

    spec = load_sources().domain("annuity_performance")
    first = write_samples(
        tmp_path / "v1", [FEB], rows=120, seed=1, domains=("annuity_performance",)
    )[0]
    second = write_samples(
        tmp_path / "v2", [FEB], rows=80, seed=2, domains=("annuity_performance",)
    )[0]
    base = tmp_path / "data" / "202402" / "收集数据" / "数据采集"
    (base / "V1").mkdir(parents=True)
    (base / "V1" / first.path.name).write_bytes(first.path.read_bytes())
    loaded = run_partition(spec, FEB, data_dir=tmp_path / "data")
    assert loaded.file.version == "V1"
    (base / "V2").mkdir()
    (base / "V2" / first.path.name).write_bytes(second.path.read_bytes())
    replaced = run_partition(spec, FEB, data_dir=tmp_path / "data")
    assert replaced.file.version == "V2"
    count = pg.execute(
        "select count(*) from raw.annuity_performance where period = %s", [FEB]
    ).fetchone()[0]
    assert count == second.rows - second.expected_rejects
    files = pg.execute(
        "select distinct source_file from raw.annuity_performance where period = %s", [FEB]
    ).fetchall()
    assert files == [(f"202402/收集数据/数据采集/V2/{first.path.name}",)]


def test_a_month_through_dagster_rebuilds_only_that_month_of_the_marts(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """dbt gets the month window from Dagster (as environment variables, not --vars): a
    month's run deletes and inserts that month of an incremental mart and leaves the others
    as they were, even when their raw rows changed since (a run without the window would
    rebuild every month from staging and empty January here)."""
    import os

    from workdatahub.defs.dbt import WINDOW_ENV

    jan = date(2024, 1, 1)
    write_samples(tmp_path, [jan, FEB], rows=60, seed=5)
    environment = {name: os.environ.get(name) for name in WINDOW_ENV.values()}

    def months() -> dict[date, int]:
        rows = pg.execute(
            "select period, count(*) from marts.fct_annuity_performance "
            "where period in (%s, %s) group by period",
            [jan, FEB],
        ).fetchall()
        return dict(rows)

    assert materialise(tmp_path, "2024-01").success
    january = months().get(jan, 0)
    assert january > 0
    pg.execute("delete from raw.annuity_performance where period = %s", [jan])
    assert materialise(tmp_path, "2024-02").success
    after = months()
    assert after.get(jan, 0) == january  # untouched: outside the window
    raw_february = pg.execute(
        "select count(*) from raw.annuity_performance where period = %s", [FEB]
    ).fetchone()[0]
    assert after.get(FEB, 0) == raw_february
    assert {name: os.environ.get(name) for name in WINDOW_ENV.values()} == environment


FEBRUARY_WINDOW = {"WDH_PERIOD_START": "2024-02-01", "WDH_PERIOD_END": "2024-03-01"}


def test_a_mart_not_built_by_month_window_fails_before_it_writes(
    tmp_path: Path, pg: Any, pg_url: str
) -> None:
    """A model added to marts/ as a plain select (the folder makes it an incremental table)
    would insert every month again on each run after its first: it fails instead, naming
    what it lacks; so does a windowed one whose tests would not be (no partition_columns
    entry). A copy of the project, so that the models added stay out of the real one."""
    import shutil

    from workdatahub.defs.dbt import DBT_PROJECT_DIR

    project = tmp_path / "dbt"
    shutil.copytree(
        DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages")
    )
    marts = project / "models" / "marts"
    source = "{{ ref('fct_annuity_performance') }}"
    (marts / "fct_plain.sql").write_text(f"select period, count(*) as n from {source} group by 1")
    (marts / "fct_windowed.sql").write_text(
        "{{ config(pre_hook=\"{{ delete_partition_window('period') }}\") }}\n"
        f"select period, count(*) as n from {source}\n"
        "{% if is_incremental() %} where {{ in_partition_window('period') }} {% endif %}\n"
        "group by 1"
    )
    # the hook given by keyword, the month column named; its filter only in a Jinja comment
    (marts / "fct_commented.sql").write_text(
        "{{ config(pre_hook=\"{{ delete_partition_window(column='period') }}\") }}\n"
        f"select period, count(*) as n from {source}\n"
        "{# where {{ in_partition_window('period') }} #}\n"
        "group by 1"
    )
    # or in an SQL comment, where it still renders (as a comment)
    for name, comment in (("fct_dashed", "-- {}"), ("fct_starred", "/* {} */")):
        (marts / f"{name}.sql").write_text(
            "{{ config(pre_hook=\"{{ delete_partition_window('period') }}\") }}\n"
            f"select period, count(*) as n from {source}\n{{% if is_incremental() %}}\n"
            + comment.format("where {{ in_partition_window('period') }}")
            + "\n{% endif %}\ngroup by 1"
        )
    # all three, the hook by keyword, the filter in double quotes: built
    (marts / "fct_keyword.sql").write_text(
        "{{ config(pre_hook=[\"{{ delete_partition_window(column='period') }}\"]) }}\n"
        f"select period, count(*) as n from {source}\n"
        '{% if is_incremental() %} where {{ in_partition_window("period") }} {% endif %}\n'
        "group by 1"
    )
    # an incremental model outside marts/ (it lands in the marts schema all the same)
    (project / "models" / "reporting").mkdir()
    (project / "models" / "reporting" / "rpt_plain.sql").write_text(
        "{{ config(materialized='incremental') }}\n"
        f"select period, count(*) as n from {source} group by 1"
    )
    settings = project / "dbt_project.yml"
    marked = ("fct_commented", "fct_dashed", "fct_starred", "fct_keyword")
    entries = "".join(f"    {m}: period\n" for m in marked)
    settings.write_text(
        settings.read_text().replace("  partition_columns:\n", "  partition_columns:\n" + entries)
    )
    commented = ["fct_commented", "fct_dashed", "fct_starred"]
    try:
        built = dbt(
            pg_url, "run", "--select", "fct_plain", "fct_windowed", *commented, "fct_keyword",
            "rpt_plain", env=FEBRUARY_WINDOW, project=project,
        )  # fmt: skip
    finally:  # (whichever a regression built: none is left behind for the other tests)
        for name in ("fct_plain", "fct_windowed", *commented, "fct_keyword", "rpt_plain"):
            pg.execute(f"drop table if exists marts.{name}")
    assert built.returncode == 1, built.stdout
    output = " ".join(built.stdout.split())
    assert (
        "fct_plain is a mart (an incremental table built a window of months at a time) and "
        "lacks pre_hook=\"{{ delete_partition_window('<column>') }}\" in its config; `where "
        "{{ in_partition_window('<column>') }}` in its select, under is_incremental(); "
        "`fct_plain: <column>` in dbt_project.yml's var partition_columns."
    ) in output
    assert (
        "fct_windowed is a mart (an incremental table built a window of months at a time) and "
        "lacks `fct_windowed: period` in dbt_project.yml's var partition_columns. Without "
        "them each run after its first would insert every month again"
    ) in output
    for mart in commented:
        assert (
            f"{mart} is a mart (an incremental table built a window of months at a time) "
            "and lacks `where {{ in_partition_window('period') }}` in its select, under "
            "is_incremental(). Without"
        ) in output, mart
    assert (
        "rpt_plain is a mart (an incremental table built a window of months at a time) and "
        "lacks pre_hook" in output
    )
    exists = "select to_regclass(%s) is not null"
    for mart in ("fct_plain", "fct_windowed", *commented, "rpt_plain"):
        assert pg.execute(exists, [f"marts.{mart}"]).fetchone() == (False,), mart
    assert "fct_keyword is a mart" not in output
    assert "OK created sql incremental model marts.fct_keyword" in output and "PASS=1 " in output


def _second_build_beside_the_first(
    pg: Any, pg_url: str, dbt_args: list[str], meanwhile: str
) -> None:
    """A build of February of fct_annuity_performance (`dbt_args`), started while another
    build of the month holds it (replaced, not committed); once it waits, `meanwhile` runs
    (committed), then the first build commits, and the second finishes."""
    import psycopg

    from tests.warehouse import wait_for_backend

    mart = "marts.fct_annuity_performance"
    with psycopg.connect(pg_url) as first:  # the first build: the month replaced, not committed
        first.execute(f"create temp table month as select * from {mart} where period = %s", [FEB])
        first.execute(f"delete from {mart} where period = %s", [FEB])
        first.execute(f"insert into {mart} select * from month")
        second = dbt_started(
            pg_url, *dbt_args, "--select", "fct_annuity_performance", env=FEBRUARY_WINDOW
        )
        wait_for_backend(pg, "wait_event_type = 'Lock'")  # the second build waits
        pg.execute(meanwhile, [FEB])
        first.commit()
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output


@pytest.mark.parametrize("second", [["run"], ["run", "--full-refresh"]], ids=" ".join)
def test_a_second_build_of_a_mart_beside_a_first_waits_and_builds_from_what_raw_holds(
    tmp_path: Path, pg: Any, pg_url: str, fresh_tables: None, second: list[str]
) -> None:
    """Two builds of a mart at once (the two annuity domains' runs of a month both build
    the marts they share; a modeler's `dbt run`, or a `--full-refresh`, beside a scheduled
    run): the second waits for the first to commit, then builds from what raw holds by
    then. A month's second build used to wait only for the rows the first deleted, skip
    them, and add its rows to the first's (the month twice); a full refresh read every month
    at its start, then put its table in place of the mart (a month as raw no longer held
    it)."""
    write_samples(tmp_path, [FEB], rows=40, seed=5, domains=("annuity_performance",))
    assert materialise(tmp_path, assets=_PERFORMANCE_FACT).success
    count = "select count(*) from {} where period = %s"
    rows = pg.execute(count.format("raw.annuity_performance"), [FEB]).fetchone()[0]
    assert pg.execute(count.format("marts.fct_annuity_performance"), [FEB]).fetchone()[0] == rows
    # meanwhile a load takes a row out of the month
    _second_build_beside_the_first(
        pg, pg_url, second,
        "delete from raw.annuity_performance where ctid = (select ctid from "
        "raw.annuity_performance where period = %s limit 1)",
    )  # fmt: skip
    built = pg.execute(count.format("marts.fct_annuity_performance"), [FEB]).fetchone()[0]
    assert built == rows - 1


def test_a_mart_month_left_on_a_load_raw_no_longer_holds_fails_reconciliation(
    tmp_path: Path, pg: Any, pg_url: str, fresh_tables: None
) -> None:
    """The same workbook loaded again gives raw a new load with the same counts and sums:
    a mart month left on the earlier load (a build that lost a race) used to pass every
    test; reconciliation now also checks that its rows come from a load raw holds."""
    write_samples(tmp_path, [FEB], rows=40, seed=5, domains=("annuity_performance",))
    assert materialise(tmp_path, assets=_PERFORMANCE_FACT).success
    test = ["test", "--select", "reconciles_to_raw_annuity_performance"]
    assert dbt(pg_url, *test, env=FEBRUARY_WINDOW).returncode == 0
    pg.execute("update marts.fct_annuity_performance set load_id = gen_random_uuid()")
    failed = dbt(pg_url, *test, env=FEBRUARY_WINDOW)
    assert failed.returncode == 1 and "FAIL 1 reconciles_to_raw_annuity_performance" in (
        failed.stdout
    ), failed.stdout


def test_a_reference_name_the_pipeline_could_never_write_is_reported(pg: Any, pg_url: str) -> None:
    """A company name in the reference data with half-width brackets, full-width letters
    or a space never matches a customer name (the pipeline writes them normalised): a
    warning names each, where those rows silently got temporary ids."""

    def run(*args: str) -> str:
        done = dbt(pg_url, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("seed", "--select", "ref_company_names")
    test = ["test", "--select", "test_name:written_as_a_normalised_name"]
    assert "WARN=0" in run(*test)
    bad = ["中联食品(重庆)股份有限公司", "Ａ公司", "中联 食品"]
    for name in bad:
        pg.execute("insert into reference.ref_company_names values (%s, 'X')", [name])
    try:
        assert f"WARN {len(bad)} written_as_a_normalised_name_ref_company_names" in run(*test)
    finally:
        pg.execute("delete from reference.ref_company_names where company_id = 'X'")


def test_a_bad_row_in_one_month_fails_that_months_run_only(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """The tests of a month's run look at the window's months (staging views hold every
    month): a January row that breaks a staging test fails January's run, not February's."""
    jan = date(2024, 1, 1)
    write_samples(tmp_path, [jan, FEB], rows=40, seed=5)
    assert materialise(tmp_path, "2024-01").success
    pg.execute(
        "update raw.annuity_performance set business_type = '养老金产品' where ctid = "
        "(select ctid from raw.annuity_performance where period = %s limit 1)",
        [jan],
    )
    february = materialise(tmp_path, "2024-02")
    assert february.success
    passed = {c.check_name for c in february.get_asset_check_evaluations() if c.passed}
    # (named in the YAML: a name dbt makes from the Chinese values is underscores)
    assert "accepted_values_stg_annuity_performance_business_type" in passed
    # January's raw load replaces the bad row: its dbt step alone shows the failing test
    dbt_only = dg.AssetSelection.key_prefixes(["staging"], ["marts"])
    january = materialise(tmp_path, "2024-01", assets=dbt_only, raise_on_error=False)
    assert not january.success
    failed = {c.check_name for c in january.get_asset_check_evaluations() if not c.passed}
    assert "accepted_values_stg_annuity_performance_business_type" in failed


def test_a_refused_month_fails_the_reject_check_for_that_month(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """February has rejects and the threshold allows none: it is refused (its rows are not
    loaded), the reject-rate check fails naming February, and January and March load."""
    clean = [date(2024, 1, 1), date(2024, 3, 1)]
    write_samples(tmp_path, clean, rows=40, seed=3, domains=("trustee_performance",), quirks=False)
    (february,) = write_samples(tmp_path, [FEB], rows=40, seed=3, domains=("trustee_performance",))
    assert february.expected_rejects > 0
    result = _raw_run(tmp_path, "2024-01", "2024-03", max_reject_rate=0.0)
    assert not result.success
    message = _failure_message(result)
    assert "2024-02" in message and "> max_reject_rate 0" in message
    assert "(2024-01, 2024-03 loaded)" in message
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("reject_rate", False)
    assert check.metadata["partition"].value == "2024-02"
    assert sorted(_materialised(result)) == ["2024-01", "2024-03"]
    loaded = pg.execute(
        "select distinct to_char(report_date, 'YYYY-MM') from raw.trustee_performance order by 1"
    ).fetchall()
    assert loaded == [("2024-01",), ("2024-03",)]


def _raw_run(
    data_dir: Path, first: str, last: str, **spec_changes: Any
) -> dg.ExecuteInProcessResult:
    """raw/trustee_performance over the months first…last in one run (a single-run
    backfill, as the UI's backfill of a range and `make demo` run it)."""
    from workdatahub.defs.raw_assets import build_raw_asset
    from workdatahub.defs.resources import WarehouseResource
    from workdatahub.sources.spec import load_sources

    spec = load_sources().domain("trustee_performance").model_copy(update=spec_changes)
    return dg.materialize(
        [build_raw_asset(spec)],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": WarehouseResource(data_dir=str(data_dir))},
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The one failed step's message."""
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return str(failure.event_specific_data.error_display_string)  # type: ignore[union-attr]


def _materialised(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        str(event.partition): {k: v.value for k, v in event.metadata.items()}
        for event in (
            e.event_specific_data.materialization  # type: ignore[union-attr]
            for e in result.all_events
            if e.is_step_materialization
        )
    }


def test_each_month_of_a_multi_month_run_records_its_own_load(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """One run over three months: each month's materialisation names that month's file,
    load id and counts (not the last month's, on all three)."""
    months = [date(2024, 1, 1), FEB, date(2024, 3, 1)]
    written = write_samples(tmp_path, months, rows=40, seed=3, domains=("trustee_performance",))
    result = _raw_run(tmp_path, "2024-01", "2024-03")
    assert result.success
    seen = _materialised(result)
    assert sorted(seen) == ["2024-01", "2024-02", "2024-03"]
    logged = dict(
        pg.execute(
            "select to_char(period, 'YYYY-MM'), load_id::text from wdh.load_log "
            "where status = 'succeeded'"
        ).fetchall()
    )
    for sample in written:
        key = f"{sample.period:%Y-%m}"
        assert seen[key]["partition"] == key
        assert seen[key]["load_id"] == logged[key]
        assert seen[key]["rows_loaded"] == sample.rows - sample.expected_rejects
        assert Path(seen[key]["file"]).name == sample.path.name
    assert len({m["sha256"] for m in seen.values()}) == 3


def test_a_month_that_fails_holds_back_no_month_after_it(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """2024-03 has no workbook: January, February and April load all the same, each
    recorded as materialised with its own load, and the run fails naming March's reason."""
    write_samples(
        tmp_path, [date(2024, 1, 1), FEB, date(2024, 4, 1)], rows=40, seed=3,
        domains=("trustee_performance",),
    )  # fmt: skip
    result = _raw_run(tmp_path, "2024-01", "2024-04")
    assert not result.success
    message = _failure_message(result)
    assert "trustee_performance 2024-03: no folder" in message
    assert "(2024-01, 2024-02, 2024-04 loaded)" in message
    seen = _materialised(result)
    logged = dict(
        pg.execute(
            "select to_char(period, 'YYYY-MM'), load_id::text from wdh.load_log "
            "where status = 'succeeded'"
        ).fetchall()
    )
    assert sorted(seen) == sorted(logged) == ["2024-01", "2024-02", "2024-04"]
    assert {k: m["load_id"] for k, m in seen.items()} == logged


def test_months_without_a_workbook_are_named_in_one_failure_and_no_data_folder_once(
    tmp_path: Path, pg: Any, fresh_tables: None
) -> None:
    """Seven months without a workbook: the failure gives the first five reasons and says
    how many more there are; a data folder that is missing is said once, not once a month."""
    from workdatahub.defs.raw_assets import REASONS_SHOWN

    result = _raw_run(tmp_path, "2024-01", "2024-07")
    assert not result.success
    message = _failure_message(result)
    assert "7 months failed: trustee_performance 2024-01: no folder" in message
    assert message.count(": no folder ") == REASONS_SHOWN == 5
    assert "; and 2 more months (see the run's log)" in message
    missing = _raw_run(tmp_path / "nowhere", "2024-01", "2024-07")
    message = _failure_message(missing)
    assert f"trustee_performance: no data folder {tmp_path / 'nowhere'} (set WDH_DATA_DIR" in (
        message
    )
    assert message.count("no data folder") == 1


@pytest.mark.parametrize(
    ("stop", "said"),
    [
        (RuntimeError("stopped in February"), "stopped in February"),  # a bug, a stop from the UI
        (
            WarehouseError("the warehouse failed: server closed the connection"),
            "server closed the connection (2024-01 loaded; 2024-03 not attempted)",
        ),
    ],
)
def test_a_failure_not_of_the_month_stops_the_run_with_the_months_before_it_recorded(
    tmp_path: Path, pg: Any, fresh_tables: None, monkeypatch: pytest.MonkeyPatch,
    stop: Exception, said: str,
) -> None:  # fmt: skip
    """Whatever stops the run after January loaded, and is no fault of February's workbook
    (the warehouse gone, a run terminated from the UI, a bug), stops it there: January is
    recorded as materialised before the failure propagates, and March is not tried."""
    from workdatahub.defs import raw_assets

    months = [date(2024, 1, 1), FEB, date(2024, 3, 1)]
    write_samples(tmp_path, months, rows=40, seed=3, domains=("trustee_performance",))
    real = raw_assets.run_partition
    tried: list[date] = []

    def stop_in_february(spec: Any, period: date, **kwargs: Any) -> Any:
        tried.append(period)
        if period == FEB:
            raise stop
        return real(spec, period, **kwargs)

    monkeypatch.setattr(raw_assets, "run_partition", stop_in_february)
    result = _raw_run(tmp_path, "2024-01", "2024-03")
    assert not result.success
    assert said in _failure_message(result)
    assert list(_materialised(result)) == ["2024-01"]
    assert tried == months[:2]
