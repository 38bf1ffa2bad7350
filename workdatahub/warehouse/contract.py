"""Does the warehouse hold what this WorkDataHub loads? Each load asks on its own connection,
beside the read, before any row is sent: is the warehouse at this code's newest migration,
and does the domain's table have each column data_sources.yml loads, of its type?

Without it, a warehouse not yet upgraded, a column added to data_sources.yml without its
migration, or a type changed on one side only fails at the COPY with Postgres' words
(`column "fee_amount" of relation "trustee_performance" does not exist`, `invalid byte
sequence for encoding "UTF8": 0x00`), which name neither the cause nor the fix. A mismatch
is one line that says what to do (`ContractError`, exit 3); the table is not touched.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import psycopg
from psycopg import sql

from workdatahub.errors import WarehouseError
from workdatahub.sources.spec import DomainSpec

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.MULTILINE)
_DOWN = re.compile(r'^down_revision\s*=\s*"([^"]+)"', re.MULTILINE)
HOW_TO_MIGRATE = (
    "add a migration under workdatahub/warehouse/migrations/versions (README: Changing the "
    "contract), then `wdh db upgrade`"
)


class ContractError(WarehouseError):
    """The warehouse does not match this WorkDataHub (its migrations, or data_sources.yml).
    `recordable`: whether the load log can take the failed load's row (not when the
    warehouse is at another migration: its load log may lack the columns written)."""

    def __init__(self, message: str, *, recordable: bool = True) -> None:
        super().__init__(message)
        self.recordable = recordable


@functools.cache
def code_revisions() -> tuple[str, frozenset[str]]:
    """This code's newest migration, and all of its migrations (read from their files:
    importing Alembic costs a load ~0.2 s)."""
    revisions: set[str] = set()
    replaced: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN.search(text)
        if revision:
            revisions.add(revision.group(1))
        if down:
            replaced.add(down.group(1))
    (head,) = revisions - replaced  # one line of migrations
    return head, frozenset(revisions)


def revision_mismatch(at: str | None) -> str | None:
    """What is wrong with a warehouse at migration `at` (None: never migrated), if anything."""
    head, known = code_revisions()
    if at == head:
        return None
    if at is None:
        return "the warehouse is not migrated: run `wdh db upgrade`"
    if at in known:
        return f"the warehouse is at migration {at}, this WorkDataHub needs {head}: " + (
            "run `wdh db upgrade`"
        )
    return (
        f"the warehouse is at migration {at}, which this WorkDataHub does not have (its newest "
        f"is {head}): a newer WorkDataHub migrated it; load with that version"
    )


def _warehouse_revision(conn: psycopg.Connection) -> tuple[bool, str | None]:
    """(whether it could be read, the revision; None: never migrated). A role that may not
    read Alembic's table skips the check (migration 0006 grants it to the warehouse's roles)."""
    state = conn.execute(
        "select case when to_regclass('public.alembic_version') is null then 'absent' "
        "when has_table_privilege('public.alembic_version', 'select') then 'readable' "
        "else 'hidden' end"
    ).fetchone()
    if state is None or state[0] == "hidden":
        return False, None
    if state[0] == "absent":
        return True, None
    row = conn.execute("select version_num from public.alembic_version").fetchone()
    return True, row[0] if row else None


def table_mismatch(
    spec: DomainSpec,
    columns: dict[str, str],
    expected: dict[str, tuple[str, str]],
    needed: frozenset[str] = frozenset(),
) -> str | None:
    """What is wrong with the domain's table, whose columns are `columns` (name -> SQL type;
    none: no such table) and of which `needed` may not be null and have no default, against
    `expected` (name -> SQL type, and what says so)."""
    table = f"{spec.schema_name}.{spec.table}"
    if not columns:
        return (
            f"{table}, the table of domain {spec.name!r}, does not exist in the warehouse: "
            f"a domain's table comes from a migration: {HOW_TO_MIGRATE}"
        )
    missing = [f"{n} ({t})" for n, (t, _) in expected.items() if n not in columns]
    if missing:
        some = "columns" if len(missing) > 1 else "column"
        return (
            f"{table} has no {some} {', '.join(missing)}, which data_sources.yml loads "
            f"(domain {spec.name!r}): {HOW_TO_MIGRATE}"
        )
    wrong = [
        f"{n} is {columns[n]} in the warehouse, {t} in {said}"
        for n, (t, said) in expected.items()
        if columns[n] != t
    ]
    if wrong:
        return (
            f"{table}: {'; '.join(wrong)}: change data_sources.yml, or the table in a migration "
            "(then `wdh db upgrade`)"
        )
    unfilled = sorted(needed - set(expected))
    if unfilled:  # (a column taken out of data_sources.yml, still required by the table)
        return (
            f"{table}: {', '.join(unfilled)} may not be null, and data_sources.yml loads no "
            f"such column (domain {spec.name!r}): put it back in data_sources.yml, or drop it "
            "or its not-null in a migration (then `wdh db upgrade`)"
        )
    return None


def expected_columns(spec: DomainSpec) -> dict[str, tuple[str, str]]:
    """Each column a load writes: name -> (SQL type, what says so)."""
    from workdatahub.warehouse.loader import LINEAGE, LINEAGE_TYPES, LOADED_AT

    expected = {
        c.name: (c.sql_type, f"data_sources.yml (type {c.type})") for c in spec.loaded_columns
    }
    expected.update({c: (LINEAGE_TYPES[c], "the loader") for c in LINEAGE})
    expected[LOADED_AT] = ("timestamp with time zone", "the loader")
    return expected


def check(conn: psycopg.Connection, spec: DomainSpec) -> None:
    """Raise `ContractError` when the warehouse behind `conn` (autocommit) does not match
    this code's migrations or the domain's spec (two or three catalog queries)."""
    readable, at = _warehouse_revision(conn)
    if readable:
        problem = revision_mismatch(at)
        if problem is not None:
            raise ContractError(problem, recordable=False)
    table = sql.Identifier(spec.schema_name, spec.table).as_string(conn)
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull and not "
        "a.atthasdef and a.attidentity = '' and a.attgenerated = '' from pg_attribute a "
        "where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped",
        [table],
    ).fetchall()
    columns = {name: sql_type for name, sql_type, _ in rows}
    needed = frozenset(name for name, _, required in rows if required)
    problem = table_mismatch(spec, columns, expected_columns(spec), needed)
    if problem is not None:
        raise ContractError(problem)
