"""`wdh db upgrade`: Alembic migrations, programmatic (no alembic.ini to keep in sync)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.exc import DBAPIError

from workdatahub.errors import WarehouseError
from workdatahub.settings import one_line
from workdatahub.warehouse.contract import VERSIONS
from workdatahub.warehouse.db import connect, database_url, sqlalchemy_url

MIGRATIONS = VERSIONS.parent  # (contract.py reads the versions on each load: named there)
# migrations of one warehouse run one at a time, whichever process starts them
_MIGRATION_LOCK = 0x5744485F4D494752  # "WDH_MIGR"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def engine_for(url: str) -> Engine:
    """An engine for Alembic on `url`, connected as every other command connects (any libpq
    connection string; a bad one, a server down or a wrong password: the same one-line
    error); no pool, `dispose` it when done."""
    return create_engine(
        "postgresql+psycopg://", creator=lambda: connect(url), poolclass=pool.NullPool
    )


def upgrade(url: str | None = None, revision: str = "head") -> str:
    """Migrate to `revision`; return the revision the database is at afterwards. The
    pending migrations run in one transaction, which Alembic begins (Postgres' DDL is
    transactional): when one fails, the warehouse stays at the migration it was at. Not
    across a migration that steps out of it (`autocommit_block`, for `create index
    concurrently`): what ran before that one is committed by then, and a failure after it
    says which migration the warehouse reached."""
    url = url or database_url()
    engine = engine_for(url)
    before: str | None = None
    try:
        with engine.connect() as conn:
            conn.execute(text("select pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
            try:
                before = current_revision(conn)
                conn.commit()  # (Alembic begins the migrations' transaction itself)
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
                return current_revision(conn) or "base"
            finally:
                conn.rollback()  # a failed migration leaves the transaction aborted
                conn.execute(text("select pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
    except DBAPIError as error:
        reason = one_line(error.orig or error)
        if isinstance(error.orig, psycopg.Error) and error.orig.diag.message_detail:
            # e.g. which view reads a column a migration changes
            reason += f" ({one_line(error.orig.diag.message_detail).rstrip('.')})"
        if isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
            # the loader's or dbt's role may not change the schemas
            reason += " (migrate with the warehouse owner's URL: WDH_DATABASE_URL=… wdh db upgrade)"
        after = _revision_now(engine, before)  # (said as found, not assumed)
        done = (
            "nothing changed"
            if after == before
            else f"the warehouse is now at migration {after or 'base'} (from {before or 'base'})"
        )
        raise WarehouseError(f"migration failed, {done}: {reason}") from None
    finally:
        engine.dispose()


def _revision_now(engine: Engine, otherwise: str | None) -> str | None:
    """The warehouse's migration after a failed upgrade (`otherwise` if it cannot be read)."""
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    except DBAPIError:
        return otherwise


def new_revision(message: str) -> Path:
    """Write the next migration (`0008_<message>.py` after 0007) from the template, with
    Alembic's own `revision` command (no database needed); return its path."""
    from workdatahub.errors import ConfigError
    from workdatahub.warehouse.contract import code_revisions

    heads, _ = code_revisions(MIGRATIONS / "versions")
    if len(heads) != 1:
        raise ConfigError(f"the migrations branch ({', '.join(sorted(heads))}): merge them first")
    (head,) = heads
    number = f"{int(head) + 1:04d}" if head.isdigit() else None
    with contextlib.redirect_stdout(io.StringIO()):  # (Alembic's "Generating … done")
        script = command.revision(alembic_config("postgresql://"), message=message, rev_id=number)
    code_revisions.cache_clear()  # (this process now has one more)
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def current_revision(conn: object) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn)  # type: ignore[arg-type]
    return context.get_current_revision()
