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

import ast
import functools
from pathlib import Path

import psycopg
from psycopg import sql

from workdatahub.errors import WarehouseError
from workdatahub.sources.spec import DomainSpec, RefreshMode

VERSIONS = Path(__file__).parent / "migrations" / "versions"
HOW_TO_MIGRATE = (
    "add a migration under workdatahub/warehouse/migrations/versions (README: Changing the "
    "contract), then `wdh db upgrade`"
)


class ContractError(WarehouseError):
    """The warehouse does not match this WorkDataHub (its migrations, or data_sources.yml).
    Not `recordable` when the warehouse is at another migration: its load log may lack the
    columns written."""

    def __init__(self, message: str, *, recordable: bool = True) -> None:
        super().__init__(message)
        self.recordable = recordable


def _assigned(tree: ast.Module, name: str) -> object:
    """The value a migration module assigns to `name` (`revision = "0007"`, with either
    quote, annotated or not, a tuple for a merge), or None."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id != name or node.value is None:
                continue
            value = node.value
        else:
            continue
        try:
            return ast.literal_eval(value)
        except ValueError:
            return None
    return None


@functools.cache
def code_revisions(folder: Path = VERSIONS) -> tuple[frozenset[str], frozenset[str]]:
    """This code's newest migrations (one, unless the migrations branch) and all of them,
    read from the files as Alembic's template writes them (importing Alembic costs a load
    ~0.2 s)."""
    revisions: set[str] = set()
    replaced: set[str] = set()
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        revision, down = _assigned(tree, "revision"), _assigned(tree, "down_revision")
        if isinstance(revision, str):
            revisions.add(revision)
        if isinstance(down, str):
            replaced.add(down)
        elif isinstance(down, tuple | list):  # a merge of two lines
            replaced.update(d for d in down if isinstance(d, str))
    return frozenset(revisions - replaced), frozenset(revisions)


def revision_mismatch(at: str | None) -> str | None:
    """What is wrong with a warehouse at migration `at` (None: never migrated), if anything."""
    heads, known = code_revisions()
    if at in heads:
        return None
    newest = ", ".join(sorted(heads))
    if at is None:
        return "the warehouse is not migrated: run `wdh db upgrade`"
    if at in known:
        return f"the warehouse is at migration {at}, this WorkDataHub needs {newest}: " + (
            "run `wdh db upgrade`"
        )
    return (
        f"the warehouse is at migration {at}, which this WorkDataHub does not have (its newest "
        f"is {newest}): a newer WorkDataHub migrated it; load with that version"
    )


def _warehouse_revision(conn: psycopg.Connection) -> tuple[bool, str | None]:
    """(whether it could be read, the revision; None: never migrated). Skipped (False) for
    a role that may not read Alembic's table (migration 0006 grants it to the warehouse's
    roles: a warehouse below it hides it from the loader), and for a warehouse whose tables
    were made without Alembic (its audit schema there, no Alembic table)."""
    state = conn.execute(
        "select case when to_regclass('public.alembic_version') is null then "
        "case when to_regclass('wdh.load_log') is null then 'absent' else 'unmanaged' end "
        "when has_table_privilege('public.alembic_version', 'select') then 'readable' "
        "else 'hidden' end"
    ).fetchone()
    if state is None or state[0] in ("hidden", "unmanaged"):
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
    generated: frozenset[str] = frozenset(),
) -> str | None:
    """What is wrong with the domain's table, whose columns are `columns` (name -> SQL type
    as Postgres writes it, compared as written: a `varchar` is not `text`; none: no such
    table), of which `needed` may not be null and have no default and `generated` are
    computed, against `expected` (name -> SQL type, and what says so)."""
    table = spec.qualified_table
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
    made = sorted(n for n in expected if n in generated)
    if made:  # (the COPY may not write a generated column)
        return (
            f"{table}: {', '.join(made)} is computed by the table (generated), and "
            f"data_sources.yml loads it (domain {spec.name!r}): take it out of one of them"
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


def upsert_mismatch(spec: DomainSpec, unique: list[tuple[list[str], bool]]) -> str | None:
    """What keeps an upsert from running on the domain's table, whose unique indexes an
    `on conflict` may use are `unique` (each: its key columns, whether it is checked at
    once): the statement needs one on exactly the spec's key, in any order, and takes every
    such index as its arbiter, which a deferrable one may not be."""
    key = set(spec.key)
    matching = [immediate for columns, immediate in unique if set(columns) == key]
    if matching and all(matching):
        return None
    index = f"({', '.join(spec.key)}), the key of domain {spec.name!r} in data_sources.yml"
    if matching:
        problem = (
            f"{spec.qualified_table}: the unique index on {index}, is deferrable, which an "
            "upsert cannot match rows on: make it not deferrable"
        )
    else:
        problem = (
            f"{spec.qualified_table} has no unique index on {index}, which an upsert matches "
            "rows on: add it"
        )
    return (
        f"{problem} in a migration (README: Changing the contract), then `wdh db upgrade`; "
        "or load with another --mode"
    )


def upsert_problem(conn: psycopg.Connection, spec: DomainSpec) -> str | None:
    """`upsert_mismatch` of the domain's table in the warehouse behind `conn`: the key
    columns of each unique index `on conflict (columns)` can infer (valid, not partial, not
    on expressions), and whether it is checked at once (not deferrable)."""
    rows = conn.execute(
        "select array(select a.attname from unnest(i.indkey[0:i.indnkeyatts - 1]) k(n) "
        "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n), i.indimmediate "
        "from pg_index i where i.indrelid = to_regclass(%s) and i.indisunique "
        "and i.indisvalid and i.indpred is null and i.indexprs is null",
        [sql.Identifier(spec.schema_name, spec.table).as_string(conn)],
    ).fetchall()
    return upsert_mismatch(spec, [(list(columns), bool(now)) for columns, now in rows])


def check(conn: psycopg.Connection, spec: DomainSpec, mode: RefreshMode | None = None) -> None:
    """Raise `ContractError` when the warehouse behind `conn` (autocommit) does not match
    this code's migrations or the domain's spec, or (an upsert) has no unique index on the
    spec's key (two to four catalog queries)."""
    readable, at = _warehouse_revision(conn)
    if readable:
        problem = revision_mismatch(at)
        if problem is not None:
            raise ContractError(problem, recordable=False)
    table = sql.Identifier(spec.schema_name, spec.table).as_string(conn)
    rows = conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull and not "
        "a.atthasdef and a.attidentity = '' and a.attgenerated = '', a.attgenerated <> '' "
        "from pg_attribute a "
        "where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped",
        [table],
    ).fetchall()
    columns = {name: sql_type for name, sql_type, _, _ in rows}
    needed = frozenset(name for name, _, required, _ in rows if required)
    generated = frozenset(name for name, _, _, computed in rows if computed)
    problem = table_mismatch(spec, columns, expected_columns(spec), needed, generated)
    if problem is not None:
        if not readable:  # (the migration that would add it may be there, not yet run)
            problem += "; if a migration does this already, run `wdh db upgrade`"
        raise ContractError(problem)
    if mode == "upsert":
        problem = upsert_problem(conn, spec)
        if problem is not None:
            raise ContractError(problem)
