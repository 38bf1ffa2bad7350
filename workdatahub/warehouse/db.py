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
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import conninfo

from workdatahub.errors import ConfigError, WarehouseError
from workdatahub.settings import Settings, get_settings, mask_url, one_line

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
        import pgserver  # heavy, and only needed without WDH_DATABASE_URL

        settings.pgdata.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # (its data)
        # one starter at a time: CLI, Dagster and dbt may all ask at once
        with _file_lock(settings.home / "pgserver.lock"):
            server = pgserver.get_server(settings.pgdata, cleanup_mode=None)
            # get_server hands back this process's earlier handle even when the server has
            # been stopped since (`wdh db stop`, a restart): start it again if so
            server.ensure_postgres_running()
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
                conn.execute(
                    psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name))
                )


# (pgdata, database) -> (url, socket file): reused while the server's socket is there
_url_cache: dict[tuple[str, str], tuple[str, Path]] = {}


def _checked(url: str, variable: str) -> str:
    """`url`, unless it is no connection string, or its user or password holds a raw @,
    /, ? or #: libpq would take the password's tail for the host (or its head for the port),
    and its errors, and the settings given to dbt and psql, would show it."""
    _, found, rest = url.partition("://")
    pieces = re.split(r"[/?#]", rest, maxsplit=1) if found else [""]
    authority, after = pieces[0], (pieces[1] if len(pieces) > 1 else "")
    if authority.count("@") > 1:
        raise ConfigError(
            f"{variable}: the user or password holds a raw @, which would be read as the "
            "host; write it %40 (and a % as %25)"
        )
    if "@" not in authority and "@" in re.split(r"[?#]", after, maxsplit=1)[0]:
        raw = rest[len(authority)]  # (the / ? or # that ended the host too early)
        raise ConfigError(
            f"{variable}: the user or password holds a raw {raw}, which would be read as the "
            f"end of the host; write it {quote(raw, safe='')} (and a % as %25)"
        )
    try:
        ports = str(conninfo.conninfo_to_dict(url).get("port") or "")
    except psycopg.ProgrammingError:
        ports = "x"  # (libpq's message quotes the token it could not read: not shown)
    if not re.fullmatch(r"\d*(,\d*)*", ports):  # no connection string, or a port that is none
        # not shown, masked or not: where a malformed string's password ends cannot be told
        raise ConfigError(
            f"{variable} is not a connection string (e.g. postgresql://user:password@host:5432"
            "/db; a % or @ in the password is written %25 or %40, a / as %2F)"
        )
    return url


def database_url(settings: Settings | None = None) -> str:
    """libpq URL of the warehouse (contains the password for external servers: never log it)."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return _checked(settings.database_url.get_secret_value(), "WDH_DATABASE_URL")
    if settings.environment == "prod":
        raise ConfigError("WDH_ENVIRONMENT=prod needs WDH_DATABASE_URL (no embedded Postgres)")
    cache_key = (str(settings.pgdata), settings.database_name)
    cached = _url_cache.get(cache_key)
    if cached and cached[1].exists():  # the socket goes away when the server stops
        return cached[0]
    host = _embedded_socket_dir(settings)
    _ensure_database(
        {"host": host, "user": "postgres", "dbname": "postgres"}, settings.database_name
    )
    url = _embedded_url(settings, host)
    _url_cache[cache_key] = (url, Path(host) / ".s.PGSQL.5432")
    return url


def _embedded_url(settings: Settings, host: str) -> str:
    query = urlencode({"host": host}, quote_via=quote)
    return f"postgresql://postgres@/{settings.database_name}?{query}"


def dbt_database_url(settings: Settings | None = None) -> str:
    """The warehouse as dbt reaches it: WDH_DBT_DATABASE_URL (the transformer role), else
    the same URL as everything else."""
    settings = settings or get_settings()
    if settings.dbt_database_url is not None:
        return _checked(settings.dbt_database_url.get_secret_value(), "WDH_DBT_DATABASE_URL")
    return database_url(settings)


def masked_url(settings: Settings | None = None) -> str:
    return mask_url(database_url(settings))


def unmigrated_hint(error: BaseException) -> str:
    """What to add to a database error met by a warehouse without the migrations."""
    # (a column: a warehouse at an older migration than this code's)
    missing = (
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg.errors.UndefinedColumn,
    )
    return " (is it migrated? `wdh db upgrade`)" if isinstance(error, missing) else ""


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy spelling of a libpq URL, for Alembic (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect(
    url: str | None = None, *, autocommit: bool = False, retries: int = 3
) -> psycopg.Connection:
    """Open a connection; transient failures (server starting, restarting) are retried."""
    url = url or database_url()
    delay = 0.5
    for attempt in range(1, retries + 1):
        try:
            return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.ProgrammingError:  # not a connection string at all
            # (libpq's own message quotes the token it could not read: it may be the password)
            raise ConfigError(
                f"the warehouse URL {mask_url(url)} is not a connection string "
                "(WDH_DATABASE_URL, e.g. postgresql://user:password@host:5432/db; a % or @ "
                "in the password is written %25 or %40)"
            ) from None
        except psycopg.OperationalError as error:
            if attempt == retries or not is_transient(error):  # a wrong password stays wrong
                raise WarehouseError(
                    f"cannot connect to the warehouse {mask_url(url)}: {one_line(error)}"
                ) from None
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


# Failures after which trying the whole load again is the right answer. A load is one
# transaction, so a failed try left nothing behind. SQLSTATE class 08: the connection
# broke; 57P01-57P03: the server is shutting down, crashed or is still starting;
# 40001/40P01: the server rolled the transaction back to resolve a conflict; 25P03: the
# server's idle_in_transaction_session_timeout ended the session (a load's transaction is
# idle while its workbook is read, loader.Head: tried again, it begins after the read).
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "25P03"})
# Errors without a SQLSTATE come from the client side: a refused or lost connection is
# worth another try, a wrong password, user or database name is not.
_CONFIGURATION_FAILURES = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
    "invalid connection option",
    "invalid uri",
    "invalid integer value",
)


def is_transient(error: BaseException | None) -> bool:
    """True when `error` (or the database error it was raised from) is a dropped or
    refused connection or a server restart: never for bad data, constraint violations,
    a busy lock or a wrong configuration."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, psycopg.Error):
            state = error.sqlstate
            if state is not None:
                return state.startswith("08") or state in _TRANSIENT_SQLSTATES
            if not isinstance(error, psycopg.OperationalError):
                return False
            text = str(error).lower()
            return not any(marker in text for marker in _CONFIGURATION_FAILURES)
        # the loader re-raises database errors as one-line WarehouseErrors ("from None"
        # hides the cause from tracebacks but keeps it as __context__)
        error = error.__cause__ or error.__context__
    return False


# the URL's other libpq parameters psql takes from the environment (`?sslmode=verify-full`
# must reach every client: dropped, a password went unencrypted to a server without TLS)
_LIBPQ_ENV = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslcrl": "PGSSLCRL", "sslcompression": "PGSSLCOMPRESSION",
    "sslnegotiation": "PGSSLNEGOTIATION", "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE", "requiressl": "PGREQUIRESSL", "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "application_name": "PGAPPNAME", "passfile": "PGPASSFILE", "service": "PGSERVICE",
}  # fmt: skip


def connection_parts(url: str | None = None) -> dict[str, str]:
    """host, port, user, password, dbname and sslmode ("" when the URL has none) of the
    warehouse URL (for dbt and psql)."""
    return _parts(conninfo.conninfo_to_dict(url or database_url()))


def _parts(info: dict[str, Any]) -> dict[str, str]:
    return {
        "host": str(info.get("host") or "localhost"),
        "port": str(info.get("port") or "5432"),
        "user": str(info.get("user") or os.environ.get("USER", "postgres")),
        "password": str(info.get("password") or ""),
        "dbname": str(info.get("dbname") or "postgres"),
        "sslmode": str(info.get("sslmode") or ""),
    }


def dbt_env(url: str | None = None) -> dict[str, str]:
    """Environment for dbt's profiles.yml (dbt_project/profiles.yml reads these).

    WDH_DBT_DATABASE_URL, when set, wins over `url`: callers pass the warehouse as the
    loader reaches it, and dbt must build as its own role."""
    settings = get_settings()
    if url is None or settings.dbt_database_url is not None:
        url = dbt_database_url(settings)
    parts = connection_parts(url)
    return {
        "WDH_DBT_HOST": parts["host"],
        "WDH_DBT_PORT": parts["port"],
        "WDH_DBT_USER": parts["user"],
        "WDH_DBT_PASSWORD": parts["password"],
        "WDH_DBT_DBNAME": parts["dbname"],
        "WDH_DBT_SSLMODE": parts["sslmode"],  # (profiles.yml: empty is libpq's default)
    }


def dbt_executable() -> str:
    """The dbt beside this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


def parse_dbt_project(project_dir: Path, target: Path | None = None) -> None:
    """`dbt parse` with the connection Dagster's dbt steps give dbt (`dbt_env`).

    dbt reuses its last parse (target/partial_parse.msgpack, which each dbt step of a run
    starts from) only for the connection it was made with (host, port, user, database; not
    the password): parsed with profiles.yml's defaults, every dbt step parsed the whole
    project again (~1-2 s a step). dbt parse does not connect, so a stopped embedded server
    is not started for it: it listens in its data folder (pgserver puts the socket elsewhere
    only when that path is too long for a socket: then it is started and asked, as a
    running one is). `target`: the folder for the manifest (else DBT_TARGET_PATH's, or the
    project's target folder)."""
    settings = get_settings()
    pgdata = settings.pgdata.resolve()  # as pgserver names it (links resolved)
    stopped = not (pgdata / "postmaster.pid").exists()
    # (a socket path holds 107 bytes on Linux; with one near that, the server is asked)
    short = len(os.fsencode(pgdata / ".s.PGSQL.5432")) <= 100
    embedded = settings.embedded and settings.dbt_database_url is None
    url = _embedded_url(settings, str(pgdata)) if embedded and stopped and short else None
    env = {**os.environ, **dbt_env(url)}
    if target is not None:
        env["DBT_TARGET_PATH"] = str(target)
    done = subprocess.run(
        [dbt_executable(), "--no-use-colors", "parse", "--quiet", "--profiles-dir", "."],
        cwd=project_dir,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise ConfigError(
            f"dbt parse failed in {project_dir} (exit {done.returncode}): "
            + _dbt_error(done.stdout + done.stderr)
        )


def _dbt_error(output: str) -> str:
    """What dbt says went wrong, on one line: the lines after its "Encountered an error:"
    (else its last lines), without their timestamps."""
    lines = [re.sub(r"^\d\d:\d\d:\d\d\s+", "", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    marker = next((i for i, line in enumerate(lines) if line.startswith("Encountered an")), None)
    shown = lines[marker + 1 : marker + 4] if marker is not None else lines[-3:]
    text = " ".join(shown) or "no output"
    return text if len(text) <= 300 else text[:299] + "…"


def psql_env(url: str | None = None) -> dict[str, str]:
    """The URL as libpq's environment variables, for psql (whose command line the password
    stays off)."""
    info = conninfo.conninfo_to_dict(url or database_url())
    parts = _parts(info)
    env = {
        "PGHOST": parts["host"],
        "PGPORT": parts["port"],
        "PGUSER": parts["user"],
        "PGDATABASE": parts["dbname"],
    }
    if parts["password"]:
        env["PGPASSWORD"] = parts["password"]
    for name, value in info.items():
        if name in _LIBPQ_ENV and value is not None:
            env[_LIBPQ_ENV[name]] = str(value)
    return env


def stop_embedded(settings: Settings | None = None) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    settings = settings or get_settings()
    pid_file = settings.pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pg_ctl is made at import time in pgserver._commands (pgserver.utils has none)
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        user = "pgserver" if os.geteuid() == 0 else None
        with _file_lock(settings.home / "pgserver.lock"):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=settings.pgdata, user=user)
    _url_cache.clear()
    return True
