"""Settings from the environment (`WDH_` prefix) and `.env`, validated once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# the password runs to the last @ before the host (a raw @ in it, or in the user, is a
# mistake, but happens; a raw / is refused before any URL is used: db._checked)
_PASSWORD_IN_URL = re.compile(
    r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/\s]*:)(?P<pw>[^\s/]*)(?P<at>@)", re.I
)
# a keyword string's password, quoted ('pa ss', with \' inside) or not
_PASSWORD_PARAM = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'?|[^&\s]+)", re.I)


def mask_url(text: str) -> str:
    """Replace any password inside URLs or `password=` parameters with `***`."""
    text = _PASSWORD_IN_URL.sub(lambda m: f"{m['head']}***{m['at']}" if m["pw"] else m[0], text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m['head']}***", text)


def one_line(error: BaseException | str) -> str:
    """What an operator is shown of an error: its first line (its type when it has no
    text), passwords in URLs masked."""
    lines = str(error).strip().splitlines()
    fallback = type(error).__name__ if isinstance(error, BaseException) else "error"
    return mask_url(lines[0] if lines else fallback)


def failure_line(error: Any) -> str:
    """`one_line` of an error Dagster recorded (its `SerializableErrorInfo`), whose message
    begins with the exception's qualified name (`dagster._core…Failure: …`): without it."""
    # an exception raised in a step comes wrapped ("Error occurred while executing op …:"):
    # the reason is what it wraps
    while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    message = str(error.message)
    if error.cls_name:
        message = re.sub(rf"^[\w.]*\b{re.escape(error.cls_name)}: ", "", message)
    dbt = _DBT_FAILED.match(message)
    if dbt:  # dagster-dbt's message begins with the command, over several lines
        parsed = message.partition("Errors parsed from dbt logs:")[2].splitlines()
        # "Encountered an error:", "Database Error", "  connection to server … failed: …"
        lines = [line.strip() for line in parsed if line.strip()]
        lines = [line for line in lines if line != "Encountered an error:"][:2]
        reason = ": ".join(lines) or "see the step's dbt output"
        message = f"dbt {dbt['command']} failed (exit code {dbt['code']}): {reason}"
    return one_line(message)


_DBT_FAILED = re.compile(
    r"The dbt CLI process with command\s+`\S*dbt (?P<command>\w+)[^`]*`\s+"
    r"failed with exit code `(?P<code>-?\d+)`"
)


# the shape of a cron schedule: five fields of numbers, ranges, steps, lists or names (JAN,
# MON), or a nickname; the code location checks the values too (`60` is no minute)
_CRON_FIELD = r"(?:[0-9*?LW#]|[A-Za-z]{3}|[/,-])+"
_CRON = re.compile(
    rf"@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)|{_CRON_FIELD}(?:\s+{_CRON_FIELD}){{4}}"
)


def _env_file(environ: Mapping[str, str] = os.environ) -> Path:
    """The .env the settings read, asked each time they are made: WDH_ENV_FILE (an absolute
    path to an existing file: relative, it would be read from whatever folder a command
    runs in), else the project's own."""
    from workdatahub.errors import ConfigError, printable

    named = environ.get("WDH_ENV_FILE")
    if not named:
        return PROJECT_ROOT / ".env"
    if not (Path(named).is_absolute() and Path(named).is_file()):
        raise ConfigError(
            f"WDH_ENV_FILE: an absolute path to an existing file (got {printable(named)})"
        )
    return Path(named)


def _proc(pid: int, part: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{part}").read_bytes()
    except OSError:
        return None


def _is_dagster(cmdline: bytes) -> bool:
    """A Dagster command: `dagster …`, `dagster-webserver`, `dagster-daemon`, `python -m
    dagster …` (its code servers and run workers), or `dg` (`dg launch` loads the .env and
    runs in its own process; `dg dev` starts the rest)."""
    names = [os.path.basename(os.fsdecode(arg)) for arg in cmdline.split(b"\0")[:3]]
    return any(name.startswith("dagster") or name == "dg" for name in names)


def _dagster_lineage() -> tuple[bool, dict[str, str] | None]:
    """Whether this process is a Dagster command or runs under one, and the environment the
    outermost Dagster command of its line was started with: the one that loaded a .env over
    its environment, and started its code servers, daemon and run workers with what it
    loaded (Linux's /proc, which changes to a process's environment do not touch). Where
    /proc cannot be read: (True, None), taken as under Dagster, what it was started with
    unknown."""
    me = os.getpid()
    if _proc(me, "environ") is None:
        return True, None
    pid, outermost = me, None
    for _ in range(64):  # (up the parents, to the first that is no Dagster command)
        cmdline, stat = _proc(pid, "cmdline"), _proc(pid, "stat")
        if cmdline is None or stat is None:
            break
        if _is_dagster(cmdline):
            outermost = pid
        elif pid != me:
            break
        pid = int(stat.rsplit(b")", 1)[1].split()[1])  # (the parent's pid)
        if pid <= 1:
            break
    if outermost is None:
        return False, None
    raw = _proc(outermost, "environ") or b""
    pairs = (os.fsdecode(item).partition("=") for item in raw.split(b"\0") if item)
    return True, {name: value for name, _, value in pairs}


def undo_dagster_env_file() -> list[str]:
    """Dagster's command line (`dagster dev`, `dagster asset materialize` …) loads the .env
    of the folder it starts in into the environment, over what was exported. The settings
    promise the opposite: the environment wins over the project's .env, and a .env of the
    folder a command runs from is never read (it could point the loads, or the alerts, at
    someone else's server; an exported WDH_ENVIRONMENT=prod was turned back into dev by an
    .env holding .env.example's line).

    Called where the code location is loaded, before the settings are read, in a Dagster
    process (a code server `dagster dev` started inherits what it loaded): a WDH_ variable
    that file changed gets back the value the outermost Dagster command was started with,
    and one it added is removed unless the file is the settings' own .env (as that command
    named it: a folder's .env naming itself WDH_ENV_FILE is still a folder's). Where what
    the command was started with cannot be read (no /proc), a folder's .env that sets a
    value the environment holds refuses the code location rather than run on it. Returns
    the names put back or removed."""
    from dotenv import dotenv_values

    from workdatahub.errors import ConfigError

    under_dagster, started = _dagster_lineage()
    here = Path.cwd() / ".env"
    if not under_dagster:
        return []
    try:
        if not here.is_file():
            return []
        ours = here.resolve() == _env_file(os.environ if started is None else started).resolve()
        loaded = {
            name: value
            for name, value in dotenv_values(here, encoding="utf-8").items()
            if name.upper().startswith("WDH_") and value is not None
        }
    except (OSError, UnicodeDecodeError):
        return []  # (Dagster could not have read it either)
    undone, inherited = [], []
    for name, value in loaded.items():
        if os.environ.get(name) != value:
            continue  # not (or no longer) the file's value
        if started is None:  # (exported or loaded: not known)
            if not ours:
                inherited.append(name)
        elif name in started:
            if started[name] != value:
                os.environ[name] = started[name]
                undone.append(name)
        elif not ours:  # (the settings' own .env they read anyway)
            del os.environ[name]
            undone.append(name)
    if inherited:
        raise ConfigError(
            f"{here} sets {', '.join(sorted(inherited))}: Dagster loads the .env of the folder "
            "it starts in over the environment, and WorkDataHub reads only its own .env; start "
            "Dagster from another folder (`make dev` starts it in WDH_HOME/dagster), or remove "
            "those lines"
        )
    if undone:
        get_settings.cache_clear()
    return sorted(undone)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WDH_",
        # the project's .env (or WDH_ENV_FILE's, for an installed package) only: one in
        # whatever folder a command runs from (a shared folder) could point the loads, or
        # the alerts, at someone else's server
        # (get_settings names it, `_env_file`, as it reads the environment)
        env_file=PROJECT_ROOT / ".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    environment: Literal["dev", "staging", "prod"] = "dev"
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/db; unset starts an embedded Postgres",
    )
    # dbt builds staging/marts as its own role (wdh_transformer), not as the loader
    dbt_database_url: SecretStr | None = Field(
        default=None,
        description="the warehouse as dbt connects to it; unset: the same as database_url",
    )
    # a load is one all-or-nothing transaction, so a lost connection can safely be retried
    load_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="tries per load when the connection fails (waits 0.5 s, 1 s, 2 s, … between)",
    )
    # dagster-dbt gives every dbt step of a run a folder of its own under dbt's target folder
    dbt_keep_runs: int = Field(
        default=50,
        ge=1,
        description="dbt run folders kept under dbt_project/target (newest first)",
    )
    home: Path = Field(
        default=PROJECT_ROOT / ".wdh", description="state: embedded Postgres, Dagster"
    )
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="root of the monthly folders")
    sources_file: Path = Field(default=PROJECT_ROOT / "data_sources.yml")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    partitions_start: str = Field(default="2024-01", pattern=r"^\d{4}-\d{2}$")
    database_name: str = Field(default="workdatahub", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    # operating: schedule, alerts, links
    schedule_cron: str = Field(
        default="",
        description="monthly run of the previous month (cron, UTC); empty: each domain at "
        "07:00 on its due day",
    )
    ui_url: str = Field(default="http://localhost:3000", description="links to runs in alerts")
    alert_webhook_url: SecretStr | None = Field(
        default=None, description="Slack-compatible incoming webhook for failures"
    )
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    alert_email_from: str = "workdatahub@localhost"
    alert_email_to: str = Field(default="", description="comma-separated recipients")

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        # a URL without its scheme fails when the first alert is sent, and the error then
        # logged holds the whole URL, its token with it: refused here, the value not shown
        if value is not None and not re.match(r"https?://", value.get_secret_value(), re.I):
            raise ValueError("not a webhook URL: it starts with https:// (or http://)")
        if value is not None and re.match(r"https?://[^/?#]*@", value.get_secret_value(), re.I):
            # urllib sends no user or password from a URL: the host would be taken as
            # `user:pw@host`, and every alert fail with "Name or service not known"
            raise ValueError(
                "a webhook URL with a user and password (user:pw@host) cannot be sent: the "
                "webhook's token goes in its path or query, as Slack's does"
            )
        return value

    @field_validator("schedule_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        # checked here, so that a wrong one is a line naming the variable, not a failure of
        # the whole code location (Dagster's 160-line traceback never names WDH_SCHEDULE_CRON)
        value = value.strip()
        if value and not _CRON.fullmatch(value):
            raise ValueError(
                "not a cron schedule: five fields, minute hour day month weekday (UTC), e.g. "
                "'0 7 12 * *'"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("home", "data_dir", "sources_file")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # relative to the project folder, as the defaults are, wherever the command runs
        # (from dbt_project/, `WDH_HOME=.wdh` would otherwise start a second, empty warehouse)
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @field_validator("home", "data_dir")
    @classmethod
    def _folder(cls, value: Path) -> Path:
        try:
            a_file = value.exists() and not value.is_dir()
        except OSError as error:  # a folder above it that this user cannot enter
            raise ValueError(f"{value}: {error.strerror or error}") from None
        if a_file:
            raise ValueError(f"{value} is a file, not a folder")
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.environment == "prod"
        return self.log_format == "json"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings; a wrong one is a one-line ConfigError naming its variable (a secret's
    value is not shown)."""
    from workdatahub.errors import ConfigError, printable

    env_file = _env_file()
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as error:
        wrong = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            shown = "" if field in _SECRETS else f" (got {printable(repr(problem['input']))})"
            wrong.append(f"WDH_{field.upper()}: {problem['msg']}{shown}")
        raise ConfigError(f"invalid setting {'; '.join(wrong)}") from None


_SECRETS = {
    name for name, field in Settings.model_fields.items() if "Secret" in str(field.annotation)
}


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    get_settings.cache_clear()
