"""Least privilege: the roles migration 0003 creates, each refused outside its rights,
and the project running under them (the loader loads, dbt builds as the transformer, the
reader reads what dbt built).

Runs in a database of its own on the embedded server, `workdatahub_roles`: dbt there
builds as wdh_transformer from the start (in the shared test database other tests build
as the superuser), and its downgrade must leave the roles alone because the shared test
database still grants them rights (roles belong to the server, not to one database).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import conninfo

from tests.warehouse import NOV, expected_state, month_state, write_month
from workdatahub.settings import Settings, get_settings, reset_settings
from workdatahub.sources.spec import SourcesFile

pytestmark = pytest.mark.db
ROOT = Path(__file__).resolve().parent.parent
ROLES = ("wdh_loader", "wdh_transformer", "wdh_reader")
DATABASE = "workdatahub_roles"
# the embedded server trusts its socket, so any password is accepted and ignored; it is
# here so that the URLs look like production ones and can be checked for leaks
PASSWORD = "Tr4nsformer-canary-5521"  # pragma: allowlist secret


def role_url(url: str, role: str, password: str | None = None) -> str:
    """The warehouse URL as another role (with a password, if given), in URL form."""
    info = conninfo.conninfo_to_dict(url)
    auth = quote(role) + (f":{quote(password)}" if password else "")
    host = f"?host={quote(str(info['host']), safe='')}" if info.get("host") else ""
    port = f":{info['port']}" if info.get("port") and not host else ""
    server = "" if host else str(info.get("host") or "localhost")
    return f"postgresql://{auth}@{server}{port}/{info['dbname']}{host}"


@pytest.fixture(scope="module")
def owner_url(pg_url: str) -> str:
    """The roles database, migrated to head by its owner (the superuser)."""
    from workdatahub.warehouse.db import database_url
    from workdatahub.warehouse.migrate import upgrade

    settings = Settings(database_name=DATABASE)
    if not settings.embedded:
        pytest.skip("needs a database of its own on the embedded server")
    url = database_url(settings)
    upgrade(url)
    return url


@pytest.fixture
def owner(owner_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("truncate raw.trustee_performance, wdh.load_log cascade")
        yield conn


@pytest.fixture(scope="module")
def probe(owner_url: str) -> str:
    """A mart table built by the transformer (as dbt would), for the others to be refused."""
    with psycopg.connect(role_url(owner_url, "wdh_transformer"), autocommit=True) as conn:
        conn.execute("drop table if exists marts.role_probe")
        conn.execute("create table marts.role_probe as select 1 as id")
    return "marts.role_probe"


def test_an_owner_with_createrole_that_is_no_superuser_migrates(owner_url: str) -> None:
    """deploy.md's owner on a managed server is no superuser but may create roles. On
    Postgres 16 and later a role it creates is handed to it with the admin option but
    without INHERIT or SET, and 0003's default privileges for wdh_transformer need them:
    the migration failed there. (The roles exist on this server already, made by the
    superuser: the owner gets them as Postgres 16 hands a role to its creator.)"""
    from workdatahub.warehouse.db import database_url
    from workdatahub.warehouse.migrate import upgrade

    name, owner = "workdatahub_owner", "wdh_test_owner"
    with psycopg.connect(owner_url, autocommit=True) as su:
        if su.info.server_version < 160000:
            pytest.skip("Postgres 16's membership options")
        su.execute(f"drop database if exists {name}")
        su.execute(f"drop role if exists {owner}")
        su.execute(f"create role {owner} login createrole")
        for role in ROLES:
            su.execute(f"grant {role} to {owner} with admin true, inherit false, set false")
        su.execute(f"create database {name} owner {owner}")
    try:
        url = role_url(database_url(Settings(database_name=name)), owner)
        assert upgrade(url) == upgrade(owner_url)  # the head, as the superuser's database
    finally:
        with psycopg.connect(owner_url, autocommit=True) as su:
            su.execute(f"drop database if exists {name} with (force)")
            su.execute(f"drop role if exists {owner}")


def test_migration_creates_three_login_roles_without_a_password_or_powers(
    owner_url: str, owner: psycopg.Connection[Any]
) -> None:
    rows = owner.execute(
        "select rolname, rolcanlogin, rolpassword is null, rolsuper, rolcreaterole, "
        "rolcreatedb, rolbypassrls from pg_authid where rolname like 'wdh\\_%' order by 1"
    ).fetchall()
    assert rows == [(role, True, True, False, False, False, False) for role in sorted(ROLES)]
    for role in ROLES:
        with psycopg.connect(role_url(owner_url, role)) as conn:
            assert conn.execute("select current_user").fetchone() == (role,)


def test_a_role_that_may_not_migrate_is_told_to_use_the_owner(owner_url: str) -> None:
    """deploy.md gives the processes the loader's URL; `wdh db upgrade` with it is refused
    in one line that says whose URL migrates."""
    from workdatahub.errors import WarehouseError
    from workdatahub.warehouse.contract import code_revisions
    from workdatahub.warehouse.migrate import upgrade

    (head,) = code_revisions()[0]
    with psycopg.connect(owner_url, autocommit=True) as su:  # a migration left to run
        su.execute("update alembic_version set version_num = '0005'")
    try:
        with pytest.raises(WarehouseError) as refused:
            upgrade(role_url(owner_url, "wdh_loader"))
    finally:
        with psycopg.connect(owner_url, autocommit=True) as su:
            su.execute("update alembic_version set version_num = %s", [head])
    message = refused.value.message
    assert message.startswith("migration failed, nothing changed: permission denied")
    assert "migrate with the warehouse owner's URL" in message and "\n" not in message


INSERT_RAW = (
    "insert into raw.trustee_performance (report_date, plan_code, company_code, load_id, "
    "source_file, source_sheet, source_row) values ('2024-11-01', 'PX', 'CX', "
    "gen_random_uuid(), 'f', 's', 2)"
)
INSERT_LOG = (
    "insert into wdh.load_log (load_id, domain, period, target_table, mode, status) values "
    "(gen_random_uuid(), 'x', '2024-11-01', 'raw.x', 'append', 'running')"
)

CASES = [
    # the loader: data in raw and wdh; no shape anywhere, nothing of dbt's
    ("wdh_loader", INSERT_RAW, True),
    ("wdh_loader", "delete from raw.trustee_performance", True),
    ("wdh_loader", INSERT_LOG, True),
    ("wdh_loader", "update wdh.load_log set status = 'abandoned' where status = 'running'", True),
    ("wdh_loader", "update wdh.data_quality_metrics set rows_rejected = 0", False),
    ("wdh_loader", "delete from wdh.load_log", False),  # the audit trail stays
    ("wdh_loader", "delete from wdh.rejected_rows", False),
    ("wdh_loader", "update wdh.rejected_rows set reason = 'x'", False),
    ("wdh_loader", "delete from wdh.data_quality_metrics", False),
    ("wdh_loader", "create temporary table t (like raw.trustee_performance)", True),  # upsert
    ("wdh_loader", "create table raw.extra (i int)", False),
    ("wdh_loader", "drop table raw.trustee_performance", False),
    ("wdh_loader", "alter table wdh.load_log add column x int", False),
    ("wdh_loader", "create table staging.x (i int)", False),
    ("wdh_loader", "create table marts.x (i int)", False),
    ("wdh_loader", "select * from marts.role_probe", False),
    ("wdh_loader", "create table public.x (i int)", False),
    ("wdh_loader", "create schema x", False),
    # the transformer: reads raw, builds staging/marts/reference; never writes raw or wdh
    ("wdh_transformer", "select count(*) from raw.trustee_performance", True),
    ("wdh_transformer", "create view staging.v as select * from raw.trustee_performance", True),
    ("wdh_transformer", "create table marts.t as select 1 as i", True),
    ("wdh_transformer", "create table reference.t (code text)", True),
    ("wdh_transformer", INSERT_RAW, False),
    ("wdh_transformer", "delete from raw.trustee_performance", False),
    ("wdh_transformer", "update raw.trustee_performance set plan_code = 'x'", False),
    ("wdh_transformer", "truncate raw.trustee_performance", False),
    ("wdh_transformer", "create table raw.extra (i int)", False),
    ("wdh_transformer", "select * from wdh.load_log", False),
    ("wdh_transformer", INSERT_LOG, False),
    ("wdh_transformer", "create schema x", False),
    # the reader: reads what dbt built, nothing else, writes nothing
    ("wdh_reader", "select * from marts.role_probe", True),
    ("wdh_reader", "insert into marts.role_probe values (2)", False),
    ("wdh_reader", "delete from marts.role_probe", False),
    ("wdh_reader", "create table marts.x (i int)", False),
    ("wdh_reader", "create view staging.v as select 1 as i", False),
    ("wdh_reader", "select * from raw.trustee_performance", False),
    ("wdh_reader", INSERT_RAW, False),
    ("wdh_reader", "select * from wdh.load_log", False),
    ("wdh_reader", "select * from wdh.rejected_rows", False),
    ("wdh_reader", "select * from audit.loads", True),  # the load log, without cell values
    ("wdh_reader", "create view audit.v as select 1 as i", False),
    ("wdh_loader", "select * from audit.loads", False),
    ("wdh_transformer", "select * from audit.loads", False),
]


@pytest.mark.parametrize(("role", "statement", "allowed"), CASES)
def test_each_role_is_refused_outside_its_rights(
    owner_url: str, probe: str, role: str, statement: str, allowed: bool
) -> None:
    with psycopg.connect(role_url(owner_url, role)) as conn:
        try:
            with conn.transaction(force_rollback=True):  # allowed statements leave nothing
                conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege as refused:
            assert not allowed, f"{role} was refused: {refused}"
        else:
            assert allowed, f"{role} was allowed: {statement}"


def test_the_project_runs_under_the_roles(
    owner_url: str,
    owner: psycopg.Connection[Any],
    sources: SourcesFile,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A month loaded as wdh_loader (delete_insert and upsert), the trustee models built by
    dbt as wdh_transformer (WDH_DBT_DATABASE_URL), and read back as wdh_reader."""
    from workdatahub.pipeline import run_partition
    from workdatahub.warehouse.db import dbt_env

    spec = sources.domain("trustee_performance")
    loader = role_url(owner_url, "wdh_loader")
    data = tmp_path / "data"
    write_month(data, NOV, 30, version=6)
    first = run_partition(spec, NOV, data_dir=data, url=loader)
    again = run_partition(spec, NOV, data_dir=data, url=loader, mode="upsert")
    assert first.outcome and first.outcome.status == "succeeded"
    assert again.outcome and again.outcome.status == "succeeded"
    assert month_state(owner, NOV) == expected_state(NOV, 30, version=6)

    monkeypatch.setenv("WDH_DBT_DATABASE_URL", role_url(owner_url, "wdh_transformer", PASSWORD))
    reset_settings()
    try:
        env = dbt_env(loader)  # what the Dagster dbt assets export: the transformer wins
    finally:
        monkeypatch.delenv("WDH_DBT_DATABASE_URL")
        reset_settings()
    assert (env["WDH_DBT_USER"], env["WDH_DBT_PASSWORD"]) == ("wdh_transformer", PASSWORD)
    # kept from run to run: dbt's partial parse (valid for this profile only) spares it a
    # full parse of the project; the log is this run's alone
    target, logs = get_settings().home / "test-dbt-target-roles", tmp_path / "dbt-logs"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"), "build",
            "--select", "stg_trustee_performance", "fct_trustee_performance",
            # only the trustee models' own tests: the reconciliation test needs every mart
            "--indirect-selection", "cautious",
            "--vars", '{"period_start": "2024-11-01", "period_end": "2024-12-01"}',
            "--project-dir", str(ROOT / "dbt_project"), "--profiles-dir", str(ROOT / "dbt_project"),
            "--target-path", str(target), "--log-path", str(logs),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    dbt_output = done.stdout + done.stderr + (logs / "dbt.log").read_text(encoding="utf-8")
    assert PASSWORD not in dbt_output
    owners = owner.execute(
        "select c.relname, pg_get_userbyid(c.relowner) from pg_class c "
        "where c.oid in ('staging.stg_trustee_performance'::regclass, "
        "'marts.fct_trustee_performance'::regclass) order by 1"
    ).fetchall()
    assert owners == [
        ("fct_trustee_performance", "wdh_transformer"),
        ("stg_trustee_performance", "wdh_transformer"),
    ]

    with psycopg.connect(role_url(owner_url, "wdh_reader"), autocommit=True) as reader:
        built = month_state(reader, NOV, "marts.fct_trustee_performance")
        assert built == expected_state(NOV, 30, version=6)
        # the staging view reads raw with its owner's rights, not the reader's
        assert month_state(reader, NOV, "staging.stg_trustee_performance") == built
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            month_state(reader, NOV)


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    from workdatahub.warehouse.migrate import alembic_config, engine_for

    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            config = alembic_config(url)
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
            conn.commit()
    finally:
        engine.dispose()


def test_downgrade_keeps_roles_other_databases_use_and_upgrade_restores_the_grants(
    owner_url: str, owner: psycopg.Connection[Any], probe: str
) -> None:
    from workdatahub.warehouse.migrate import upgrade

    def rights() -> list[Any]:
        return owner.execute(
            "select has_schema_privilege('wdh_loader', 'raw', 'usage'), "
            "has_table_privilege('wdh_loader', 'wdh.load_log', 'insert'), "
            "has_table_privilege('wdh_transformer', 'raw.trustee_performance', 'select'), "
            "has_schema_privilege('wdh_transformer', 'marts', 'create'), "
            "has_table_privilege('wdh_reader', 'marts.role_probe', 'select'), "
            "(select count(*) from pg_default_acl), "
            "pg_get_userbyid((select relowner from pg_class where oid = %s::regclass))",
            [probe],
        ).fetchone()

    assert rights() == (True, True, True, True, True, 10, "wdh_transformer")
    _downgrade(owner_url, "0002")
    try:
        # the shared test database still grants these roles rights: they stay
        roles = owner.execute("select rolname from pg_roles where rolname like 'wdh\\_%'")
        assert sorted(r[0] for r in roles.fetchall()) == sorted(ROLES)
        # here they have nothing left; what dbt built stays, handed to the owner
        assert rights() == (False, False, False, False, False, 0, owner_user(owner))
    finally:
        upgrade(owner_url)
    assert rights() == (True, True, True, True, True, 10, "wdh_transformer")


def owner_user(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("select current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_a_built_summary_mart_gets_its_outflow_column_renamed(
    owner_url: str, owner: psycopg.Connection[Any]
) -> None:
    """Migration 0005 renames the summary mart's `outflow` where dbt built it before, so
    that its next incremental build (on_schema_change: fail) does not fail; and back."""
    from decimal import Decimal

    from workdatahub.warehouse.migrate import upgrade

    mart = "marts.fct_monthly_branch_product_line"
    _downgrade(owner_url, "0004")
    try:
        owner.execute(f"create table {mart} (period date, outflow numeric)")
        owner.execute(f"insert into {mart} values ('2024-11-01', 5)")
        upgrade(owner_url)
        assert owner.execute(f"select period, outflow_incl_benefits from {mart}").fetchall() == [
            (NOV, Decimal(5))
        ]
        _downgrade(owner_url, "0004")
        assert owner.execute(f"select outflow from {mart}").fetchall() == [(Decimal(5),)]
    finally:
        owner.execute(f"drop table if exists {mart}")
        upgrade(owner_url)


def test_a_loads_row_in_the_load_log_keeps_its_history(owner: psycopg.Connection[Any]) -> None:
    """The loader ends its loads' rows, marks dead ones abandoned and notes a lost
    confirmation on a finished one; it cannot rewrite a finished load (what audit.loads
    shows analysts: its files, counts, status) nor any load's month."""
    ids = {}
    for status in ("running", "succeeded", "failed", "abandoned"):
        ids[status] = owner.execute(
            "insert into wdh.load_log (load_id, domain, period, target_table, mode, status, "
            "files, rows_rejected) values (gen_random_uuid(), 'trustee_performance', "
            "'2024-11-01', 'raw.trustee_performance', 'delete_insert', %s, "
            """'[{"path": "a.xlsx", "sha256": "ab"}]', 5) returning load_id""",
            [status],
        ).fetchone()[0]  # type: ignore[index]

    def update(what: str, status: str) -> bool:
        with psycopg.connect(role_url(owner.info.dsn, "wdh_loader")) as conn:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(
                        f"update wdh.load_log set {what} where load_id = %s", [ids[status]]
                    )
            except psycopg.errors.InsufficientPrivilege:
                return False
        return True

    assert update("status = 'succeeded', rows_rejected = 0, files = '[]'", "running")
    assert update("status = 'failed', message = 'stopped'", "abandoned")
    assert update("message = 'committed; the confirmation was lost'", "succeeded")
    assert not update("rows_rejected = 0", "succeeded")
    assert not update("""files = '[{"path": "forged.xlsx", "sha256": "00"}]'""", "succeeded")
    assert not update("status = 'succeeded'", "failed")
    assert not update("status = 'succeeded'", "abandoned")
    assert not update("period = '2024-10-01'", "running")
