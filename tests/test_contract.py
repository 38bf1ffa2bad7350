"""A load checks that the warehouse matches this code (its migrations) and data_sources.yml
(the domain's table, each column of its type) before it sends a row: a mismatch is one line
saying what to do, not the COPY's Postgres error, and the table is left as it was."""

from __future__ import annotations

import copy
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml

from tests.test_cli import wdh, wdh_process
from tests.test_loader import NOV, month_loaded, rows_for, table_state, trustee_month
from workdatahub.pipeline import run_partition
from workdatahub.sources.spec import DomainSpec, SourcesFile, parse_sources
from workdatahub.warehouse import contract
from workdatahub.warehouse.contract import ContractError

ROOT = Path(__file__).resolve().parent.parent


def _trustee(change: Any) -> DomainSpec:
    """The shipped trustee_performance domain, changed by `change(its YAML mapping)`."""
    raw = yaml.safe_load((ROOT / "data_sources.yml").read_text(encoding="utf-8"))
    domain = copy.deepcopy(raw["domains"]["trustee_performance"])
    change(domain)
    return parse_sources({**raw, "domains": {"trustee_performance": domain}}).domain(
        "trustee_performance"
    )


def test_the_code_knows_its_newest_migration() -> None:
    heads, known = contract.code_revisions()
    files = sorted(p.name for p in contract.VERSIONS.glob("*.py"))
    assert heads == {files[-1].split("_")[0]} and len(known) == len(files)


def test_migrations_as_alembic_writes_them_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next migration is made with `wdh db revision` (Alembic's `revision`, the project's
    template: `revision = '0008'`, single quotes); annotated assignments and a merge of two
    lines are read too."""
    import shutil

    from tests.test_cli import wdh
    from workdatahub.warehouse import migrate

    (head,) = contract.code_revisions()[0]
    new, two, merge = (f"{int(head) + n:04d}" for n in (1, 2, 3))
    migrations = tmp_path / "migrations"
    shutil.copytree(contract.VERSIONS.parent, migrations, ignore=shutil.ignore_patterns("__py*"))
    monkeypatch.setattr(migrate, "MIGRATIONS", migrations)
    done = wdh("db", "revision", "fee amount")
    versions = migrations / "versions"
    written = versions / f"{new}_fee_amount.py"
    assert done.stdout == f"wrote {written}: fill in upgrade() and downgrade()\n", done.stderr
    text = written.read_text()
    assert f"revision = '{new}'" in text and f"down_revision = '{head}'" in text
    assert contract.code_revisions(versions)[0] == {new}
    contract.code_revisions.cache_clear()  # (read once per process otherwise)
    (versions / f"{two}_a.py").write_text(f'revision: str = "{two}a"\ndown_revision = "{new}"\n')
    (versions / f"{two}_b.py").write_text(f"revision = '{two}b'\ndown_revision: str = '{new}'\n")
    assert contract.code_revisions(versions)[0] == {f"{two}a", f"{two}b"}  # two lines
    contract.code_revisions.cache_clear()
    (versions / f"{merge}_merge.py").write_text(
        f"revision = '{merge}'\ndown_revision = ('{two}a', '{two}b')\n"
    )
    contract.code_revisions.cache_clear()
    heads, known = contract.code_revisions(versions)
    contract.code_revisions.cache_clear()
    assert heads == {merge} and {"0001", new, merge} <= known


def test_what_a_warehouse_at_another_migration_is_told() -> None:
    (head,) = contract.code_revisions()[0]
    assert contract.revision_mismatch(head) is None
    assert contract.revision_mismatch(None) == "the warehouse is not migrated: run `wdh db upgrade`"
    assert contract.revision_mismatch("0004") == (
        f"the warehouse is at migration 0004, this WorkDataHub needs {head}: run `wdh db upgrade`"
    )
    assert contract.revision_mismatch("0099") == (
        f"the warehouse is at migration 0099, which this WorkDataHub does not have (its newest "
        f"is {head}): a newer WorkDataHub migrated it; load with that version"
    )


def test_a_missing_column_met_by_any_command_suggests_the_upgrade() -> None:
    """Commands other than a load (history, rejects) meet an older warehouse's missing
    column as Postgres reports it; the hint says what to run, as for a missing table."""
    from workdatahub.warehouse.db import unmigrated_hint

    hint = " (is it migrated? `wdh db upgrade`)"
    assert unmigrated_hint(psycopg.errors.UndefinedColumn("no column headers")) == hint
    assert unmigrated_hint(psycopg.errors.UndefinedTable("no relation")) == hint
    assert unmigrated_hint(psycopg.errors.DivisionByZero("a bug")) == ""


def test_what_a_table_unlike_the_spec_is_told(sources: SourcesFile) -> None:
    spec = sources.domain("trustee_performance")
    expected = contract.expected_columns(spec)
    table = {name: sql_type for name, (sql_type, _) in expected.items()}
    assert contract.table_mismatch(spec, table, expected) is None
    assert contract.table_mismatch(spec, {}, expected) == (
        "raw.trustee_performance, the table of domain 'trustee_performance', does not exist in "
        f"the warehouse: a domain's table comes from a migration: {contract.HOW_TO_MIGRATE}"
    )
    fewer = {n: t for n, t in table.items() if n not in ("net_value", "source_row")}
    assert contract.table_mismatch(spec, fewer, expected) == (
        "raw.trustee_performance has no columns net_value (numeric(18,4)), source_row (integer), "
        f"which data_sources.yml loads (domain 'trustee_performance'): {contract.HOW_TO_MIGRATE}"
    )
    # a column taken out of data_sources.yml that the table still requires
    dropped = {n: t for n, t in expected.items() if n != "net_value"}
    assert contract.table_mismatch(spec, table, dropped, frozenset({"net_value"})) == (
        "raw.trustee_performance: net_value may not be null, and data_sources.yml loads no such "
        "column (domain 'trustee_performance'): put it back in data_sources.yml, or drop it or "
        "its not-null in a migration (then `wdh db upgrade`)"
    )
    assert contract.table_mismatch(spec, table, expected, frozenset({"net_value"})) is None
    # money rounded by the warehouse: the precision counts, not the base type alone
    rounded = {**table, "fund_scale": "numeric(18,2)"}
    assert contract.table_mismatch(spec, rounded, expected) == (
        "raw.trustee_performance: fund_scale is numeric(18,2) in the warehouse, numeric(18,4) "
        "in data_sources.yml (type money): change data_sources.yml, or the table in a "
        "migration (then `wdh db upgrade`)"
    )
    retyped = {**table, "company_code": "bigint"}
    assert contract.table_mismatch(spec, retyped, expected) == (
        "raw.trustee_performance: company_code is bigint in the warehouse, text in "
        "data_sources.yml (type code): change data_sources.yml, or the table in a migration "
        "(then `wdh db upgrade`)"
    )


@pytest.mark.parametrize(
    ("change", "said"),
    [
        # a column added to data_sources.yml without its migration
        (
            lambda d: d["columns"].append(
                {"name": "fee_amount", "header": "手续费", "type": "money", "optional_header": True}
            ),
            "raw.trustee_performance has no column fee_amount (numeric(18,4)), which "
            "data_sources.yml loads",
        ),
        # a type changed on one side only (the COPY said `invalid byte sequence … 0x00`)
        (
            lambda d: next(c for c in d["columns"] if c["name"] == "fund_scale").update(
                type="integer"
            ),
            "raw.trustee_performance: fund_scale is numeric(18,4) in the warehouse, bigint in "
            "data_sources.yml (type integer)",
        ),
        # a new domain whose table no migration made
        (lambda d: d.update(table="trustee_fees"), "raw.trustee_fees, the table of domain"),
    ],
)
def test_a_load_the_table_cannot_take_stops_in_one_line_and_changes_nothing(
    tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None, change: Any, said: str
) -> None:
    before = month_loaded(_trustee(lambda d: None), tmp_path, pg_url, pg)
    trustee_month(tmp_path, NOV, rows_for(NOV, 12, scale=3))
    with pytest.raises(ContractError) as error:
        run_partition(_trustee(change), NOV, data_dir=tmp_path, url=pg_url)
    assert error.value.message.startswith(said) and "\n" not in error.value.message
    assert table_state(pg) == before
    # the load log keeps the attempt and why
    last = pg.execute(
        "select status, message from wdh.load_log order by started_at desc limit 1"
    ).fetchone()
    assert last == ("failed", error.value.message)


def test_a_warehouse_at_an_older_migration_is_told_to_upgrade(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WorkDataHub upgraded before its warehouse: the load failed on a column the older
    warehouse lacks (`column "headers" of relation "load_log" does not exist`). It names the
    migrations and the command now, exit 3, and writes nothing; after `wdh db upgrade` it
    loads."""
    from workdatahub.warehouse.migrate import upgrade

    name = f"wdh_older_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
        upgrade(url, "0004")
        trustee_month(tmp_path, NOV, rows_for(NOV, 5))
        load = ["load", "trustee_performance", "--period", "2024-11", "--data-dir", str(tmp_path)]
        done = wdh_process(*load, env={"WDH_DATABASE_URL": url})
        (head,) = contract.code_revisions()[0]
        assert (done.returncode, done.stdout) == (3, ""), done.stderr
        assert done.stderr == (
            f"wdh: error: the warehouse is at migration 0004, this WorkDataHub needs {head}: "
            "run `wdh db upgrade`\n"
        )
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from wdh.load_log").fetchone() == (0,)
        # the head's check ending after the last part was sent (a small sheet, a slow
        # warehouse): the load stops before it writes a row there all the same
        real_check = contract.check

        def slow_check(*args: Any) -> None:
            time.sleep(1.5)
            real_check(*args)

        monkeypatch.setattr(contract, "check", slow_check)
        spec = _trustee(lambda d: None)
        with pytest.raises(ContractError, match="at migration 0004"):
            run_partition(spec, NOV, data_dir=tmp_path, url=url)
        monkeypatch.setattr(contract, "check", real_check)
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from wdh.load_log").fetchone() == (0,)
        # `wdh db check` says so before any load
        checked = wdh("db", "check", env={"WDH_DATABASE_URL": url})
        assert (checked.returncode, checked.stdout) == (3, "")
        assert checked.stderr == done.stderr
        assert wdh_process("db", "upgrade", env={"WDH_DATABASE_URL": url}).returncode == 0
        checked = wdh("db", "check", env={"WDH_DATABASE_URL": url})
        assert checked.returncode == 0 and checked.stdout.count(": ok (raw.") == 3, checked
        done = wdh_process(*load, env={"WDH_DATABASE_URL": url})
        assert done.returncode == 0, done.stderr
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')


def test_a_failed_upgrade_leaves_the_warehouse_at_its_migration(pg_url: str) -> None:
    """The pending migrations run in one transaction: when one fails, the ones before it
    are rolled back too, so "nothing changed" holds (each committed on its own before, and
    the message said so all the same)."""
    from workdatahub.errors import WarehouseError
    from workdatahub.warehouse.migrate import current_revision, engine_for, upgrade

    name = f"wdh_halfway_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
        upgrade(url, "0003")
        with psycopg.connect(url, autocommit=True) as conn:  # in the way of 0005's first step
            conn.execute("alter table wdh.load_log add column headers text")
        with pytest.raises(WarehouseError) as error:
            upgrade(url)
        assert error.value.message == (
            'migration failed, nothing changed: column "headers" of relation "load_log" '
            "already exists"
        )
        engine = engine_for(url)
        try:
            with engine.connect() as conn:
                assert current_revision(conn) == "0003"  # 0004 did not stay
        finally:
            engine.dispose()
        with psycopg.connect(url) as conn:
            assert conn.execute("select to_regclass('wdh.data_quality_metrics')").fetchone() == (
                None,
            )
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')


def test_a_column_the_table_requires_and_the_spec_dropped_is_found(pg: Any) -> None:
    """The real catalog: annuity_income's fixed_fee is `not null` in its table; a spec
    without it would fail every row at the COPY."""
    raw = yaml.safe_load((ROOT / "data_sources.yml").read_text(encoding="utf-8"))
    domain = copy.deepcopy(raw["domains"]["annuity_income"])
    domain["columns"] = [c for c in domain["columns"] if c["name"] != "fixed_fee"]
    spec = parse_sources({**raw, "domains": {"annuity_income": domain}}).domain("annuity_income")
    with pytest.raises(ContractError, match=r"raw.annuity_income: fixed_fee may not be null"):
        contract.check(pg, spec)
    contract.check(pg, parse_sources(raw).domain("annuity_income"))  # the shipped one agrees


def test_an_upsert_needs_a_unique_index_on_the_key(
    tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """`on conflict (key)` needs a unique index on exactly the key: without one the load
    failed after the whole month was read and copied, in Postgres' words (`there is no
    unique or exclusion constraint matching the ON CONFLICT specification`)."""
    shipped = _trustee(lambda d: None)
    contract.check(pg, shipped, "upsert")  # the key's unique constraint, from the migration
    reordered = _trustee(lambda d: d.update(key=["company_code", "report_date", "plan_code"]))
    contract.check(pg, reordered, "upsert")  # (any order)
    narrower = _trustee(lambda d: d.update(key=["report_date", "plan_code"]))
    contract.check(pg, narrower, "delete_insert")  # only an upsert needs it
    said = (
        "raw.trustee_performance has no unique index on (report_date, plan_code), the key of "
        "domain 'trustee_performance' in data_sources.yml, which an upsert matches rows on: "
        "add it in a migration (README: Changing the contract), then `wdh db upgrade`; or load "
        "with another --mode"
    )
    with pytest.raises(ContractError) as error:
        contract.check(pg, narrower, "upsert")
    assert error.value.message == said
    # a unique index that an `on conflict` cannot use does not count: partial here
    pg.execute(
        "create unique index trustee_partial on raw.trustee_performance (report_date, plan_code) "
        "where plan_code <> ''"
    )
    try:
        with pytest.raises(ContractError):
            contract.check(pg, narrower, "upsert")
    finally:
        pg.execute("drop index raw.trustee_partial")
    # a deferrable one beside the migration's: `on conflict` takes both as arbiters, and
    # refuses the deferrable one (after the month was copied)
    pg.execute(
        "alter table raw.trustee_performance add constraint trustee_deferred "
        "unique (report_date, plan_code, company_code) deferrable"
    )
    try:
        with pytest.raises(ContractError, match=r"company_code\), the key of .* is deferrable"):
            contract.check(pg, shipped, "upsert")
    finally:
        pg.execute("alter table raw.trustee_performance drop constraint trustee_deferred")
    # a load: one line before any row is sent, the table as it was
    before = month_loaded(shipped, tmp_path, pg_url, pg)
    trustee_month(tmp_path, NOV, rows_for(NOV, 12, scale=3))
    with pytest.raises(ContractError) as error:
        run_partition(narrower, NOV, data_dir=tmp_path, url=pg_url, mode="upsert")
    assert error.value.message == said
    assert table_state(pg) == before


def test_wdh_db_check_says_each_domain_the_warehouse_does_not_match(
    tmp_path: Path, pg_url: str
) -> None:
    """After a change to data_sources.yml, before the month's loads: a line per domain, as
    its load would say it, exit 3 when any does not match; nothing is written."""
    raw = yaml.safe_load((ROOT / "data_sources.yml").read_text(encoding="utf-8"))
    trustee = raw["domains"]["trustee_performance"]
    trustee["columns"].append({"name": "fee_amount", "header": "手续费", "type": "money"})
    raw["domains"]["annuity_income"]["refresh"] = "upsert"
    raw["domains"]["annuity_income"]["key"] = ["period", "plan_code"]
    changed = tmp_path / "data_sources.yml"
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    env = {"WDH_DATABASE_URL": pg_url, "WDH_SOURCES_FILE": str(changed)}
    with psycopg.connect(pg_url) as conn:
        logged = conn.execute("select count(*) from wdh.load_log").fetchone()
    done = wdh("db", "check", env=env)
    lines = done.stdout.splitlines()
    assert done.returncode == 3, done
    assert lines[0].startswith(
        "trustee_performance: raw.trustee_performance has no column fee_amount (numeric(18,4))"
    )
    assert lines[1] == "annuity_performance: ok (raw.annuity_performance, delete_insert)"
    assert lines[2].startswith(
        "annuity_income: raw.annuity_income has no unique index on (period, plan_code)"
    )
    assert done.stderr.startswith("wdh: error: 2 of 3 domains do not match the warehouse ")
    one = wdh("db", "check", "trustee_performance", env=env)  # one wrong is enough
    assert one.returncode == 3 and one.stderr.startswith("wdh: error: 1 of 1 domains do not")
    # a key loaded otherwise: a note when --mode upsert would stop, not a mismatch
    keyed = yaml.safe_load((ROOT / "data_sources.yml").read_text(encoding="utf-8"))
    keyed["domains"]["annuity_performance"]["key"] = ["period", "plan_code"]
    changed.write_text(yaml.safe_dump(keyed, allow_unicode=True, sort_keys=False), "utf-8")
    noted = wdh("db", "check", "annuity_performance", env=env)
    assert noted.returncode == 0, noted
    assert noted.stdout.startswith(
        "annuity_performance: ok (raw.annuity_performance, delete_insert); a load with --mode "
        "upsert would stop: raw.annuity_performance has no unique index on (period, plan_code)"
    )
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), "utf-8")
    only = wdh("db", "check", "annuity_performance", env=env)
    assert only.returncode == 0 and only.stdout.count("\n") == 1, only
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from wdh.load_log").fetchone() == logged


def test_a_warehouse_the_role_cannot_read_the_migration_of_is_checked_on_its_tables(
    pg_url: str,
) -> None:
    """Below migration 0006 the loader's role may not read Alembic's table, and a warehouse
    made without Alembic has none: the revision is then not checked, the table still is,
    and a missing column says the upgrade may be what is missing."""
    from workdatahub.warehouse.migrate import upgrade

    name = f"wdh_hidden_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
        upgrade(url)
        added = _trustee(
            lambda d: d["columns"].append(
                {"name": "fee_amount", "header": "手续费", "type": "money"}
            )
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("revoke select on public.alembic_version from wdh_loader")
            conn.execute("update alembic_version set version_num = '0005'")  # (not seen)
            conn.execute("set role wdh_loader")
            contract.check(conn, _trustee(lambda d: None))  # the table agrees: no error
            with pytest.raises(ContractError) as error:
                contract.check(conn, added)
            assert error.value.message.endswith(
                "; if a migration does this already, run `wdh db upgrade`"
            )
            conn.execute("reset role")
            conn.execute("drop table alembic_version")  # tables made without Alembic
            contract.check(conn, _trustee(lambda d: None))
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')


def test_a_warehouse_the_load_cannot_open_stops_it_at_its_first_part(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password or database name was found only once the whole month was read,
    cleansed and validated (the head's connection failed beside the read; the load said so
    when it began). It now stops at the first part, in the same words, and does not try to
    record itself where it could not begin (that left a second line: a warning)."""
    from tests.test_loader import slow_reads
    from workdatahub import pipeline
    from workdatahub.errors import WarehouseError

    monkeypatch.setattr(pipeline, "FIRST_PART_ROWS", 3)
    monkeypatch.setattr(pipeline, "PART_GROWTH", 1)
    slow_reads(monkeypatch, 0.5)  # (the head has tried by the time the read ends)
    cleansed: list[int] = []
    real_cleanse = pipeline.cleanse

    def counted(*args: Any, **kwargs: Any) -> Any:
        cleansed.append(1)
        return real_cleanse(*args, **kwargs)

    monkeypatch.setattr(pipeline, "cleanse", counted)
    recorded: list[str] = []
    monkeypatch.setattr(pipeline, "record_failed_read", lambda *a: recorded.append(a[5]))
    trustee_month(tmp_path, NOV, rows_for(NOV, 12))
    nowhere = urlunsplit(urlsplit(pg_url)._replace(path="/no_such_warehouse"))
    with pytest.raises(WarehouseError) as error:
        run_partition(_trustee(lambda d: None), NOV, data_dir=tmp_path, url=nowhere)
    assert error.value.message.startswith(
        "raw.trustee_performance 2024-11: cannot start the load: connection"
    )
    assert 'database "no_such_warehouse" does not exist' in error.value.message
    assert cleansed == [1]  # the first of four parts, not all four
    assert recorded == []
