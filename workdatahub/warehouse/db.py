"""Where the warehouse is, and how every process (CLI, Dagster, dbt) reaches the same one.

With `WDH_DATABASE_URL` set, that server is used. Without it an embedded Postgres (the
`pgserver` package: real Postgres binaries from PyPI) is started on demand under
`WDH_HOME/pgdata`, listening on a unix socket only, and left running so the next process
reuses it; `wdh db stop` stops it. Production refuses the embedded server.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import conninfo

from workdatahub.errors import ConfigError, WarehouseError
from workdatahub.settings import Settings, get_settings, mask_url

CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _embedded_socket_dir(settings: Settings) -> str:
    """Start (or find) the embedded server; return its socket directory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        import pgserver  # noqa: PLC0415 - heavy, and only needed without WDH_DATABASE_URL

        settings.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # one starter at a time: CLI, Dagster and dbt may all ask at once
        with _file_lock(settings.home / "pgserver.lock"):
            server = pgserver.get_server(settings.pgdata, cleanup_mode=None)
            info = conninfo.conninfo_to_dict(server.get_uri())
    host = info.get("host")
    if not host:
        raise WarehouseError("embedded Postgres started but reported no socket directory")
    return str(host)


def _ensure_database(admin: dict[str, object], name: str) -> None:
    with psycopg.connect(**admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:  # type: ignore[arg-type]
        exists = conn.execute("select 1 from pg_database where datname = %s", [name]).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name)))


_url_cache: dict[tuple[str, str], str] = {}


def database_url(settings: Settings | None = None) -> str:
    """libpq URL of the warehouse (contains the password for external servers: never log it)."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    if settings.environment == "prod":
        raise ConfigError("WDH_ENVIRONMENT=prod needs WDH_DATABASE_URL (no embedded Postgres)")
    cache_key = (str(settings.pgdata), settings.database_name)
    cached = _url_cache.get(cache_key)
    if cached and Path(cached.split("host=", 1)[1]).exists():
        return cached
    host = _embedded_socket_dir(settings)
    _ensure_database({"host": host, "user": "postgres", "dbname": "postgres"}, settings.database_name)
    url = f"postgresql://postgres@/{settings.database_name}?{urlencode({'host': host}, quote_via=quote)}"
    _url_cache[cache_key] = url
    return url


def masked_url(settings: Settings | None = None) -> str:
    return mask_url(database_url(settings))


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy spelling of a libpq URL, for Alembic (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect(url: str | None = None, *, autocommit: bool = False, retries: int = 3) -> psycopg.Connection:
    """Open a connection; transient failures (server starting, restarting) are retried."""
    url = url or database_url()
    delay = 0.5
    for attempt in range(1, retries + 1):
        try:
            return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as error:
            if attempt == retries:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
                raise WarehouseError(
                    f"cannot connect to the warehouse {mask_url(url)}: {mask_url(reason)}"
                ) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def connection_parts(url: str | None = None) -> dict[str, str]:
    """host, port, user, password, dbname of the warehouse URL (for dbt and psql)."""
    info = conninfo.conninfo_to_dict(url or database_url())
    return {
        "host": str(info.get("host") or "localhost"),
        "port": str(info.get("port") or "5432"),
        "user": str(info.get("user") or os.environ.get("USER", "postgres")),
        "password": str(info.get("password") or ""),
        "dbname": str(info.get("dbname") or "postgres"),
    }


def dbt_env(url: str | None = None) -> dict[str, str]:
    """Environment for dbt's profiles.yml (dbt_project/profiles.yml reads these)."""
    parts = connection_parts(url)
    return {
        "WDH_DBT_HOST": parts["host"],
        "WDH_DBT_PORT": parts["port"],
        "WDH_DBT_USER": parts["user"],
        "WDH_DBT_PASSWORD": parts["password"],
        "WDH_DBT_DBNAME": parts["dbname"],
    }


def psql_env(url: str | None = None) -> dict[str, str]:
    parts = connection_parts(url)
    env = {
        "PGHOST": parts["host"],
        "PGPORT": parts["port"],
        "PGUSER": parts["user"],
        "PGDATABASE": parts["dbname"],
    }
    if parts["password"]:
        env["PGPASSWORD"] = parts["password"]
    return env


def stop_embedded(settings: Settings | None = None) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    settings = settings or get_settings()
    pid_file = settings.pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import pg_ctl  # noqa: PLC0415

        user = "pgserver" if os.geteuid() == 0 else None
        with _file_lock(settings.home / "pgserver.lock"):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=settings.pgdata, user=user)
    _url_cache.clear()
    return True
