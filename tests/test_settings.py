"""Settings: every variable documented; passwords never shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from workdatahub.errors import ConfigError
from workdatahub.settings import Settings, mask_url

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*(WDH_[A-Z_]+)=", text, flags=re.M))
    expected = {f"WDH_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, expected - documented


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://loader:s3cret@db:5432/wh", "postgresql://loader:***@db:5432/wh"),
        ("postgresql+psycopg2://u:p%40ss@h/d", "postgresql+psycopg2://u:***@h/d"),
        ("host=db password=s3cret user=u", "host=db password=*** user=u"),
        ("postgresql://postgres@/wh?host=/tmp", "postgresql://postgres@/wh?host=/tmp"),
        ("postgresql://lo@der:s3cr3t@db/wh", "postgresql://lo@der:***@db/wh"),
        ("postgresql://u@db:5432/wh?x=a@b", "postgresql://u@db:5432/wh?x=a@b"),
        (
            "cannot connect to postgresql://a:b@c/d: refused",
            "cannot connect to postgresql://a:***@c/d: refused",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_prod_refuses_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from workdatahub.warehouse.db import database_url

    monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="prod needs WDH_DATABASE_URL"):
        database_url(Settings(environment="prod"))


def test_database_url_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_DATABASE_URL", "postgresql://u:topsecret@h/d")
    settings = Settings()
    assert "topsecret" not in repr(settings) and "topsecret" not in str(settings.model_dump())


def test_relative_paths_are_the_project_folders_wherever_a_command_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`WDH_HOME=.wdh` (as .env.example shows it) from dbt_project/ or anywhere else is the
    project's .wdh, not a second, empty warehouse beside the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WDH_HOME", ".wdh")
    monkeypatch.setenv("WDH_DATA_DIR", "data/sample")
    monkeypatch.setenv("WDH_SOURCES_FILE", "data_sources.yml")
    settings = Settings()
    assert settings.home == ROOT / ".wdh"
    assert settings.data_dir == ROOT / "data" / "sample"
    assert settings.sources_file == ROOT / "data_sources.yml"
    monkeypatch.setenv("WDH_DATA_DIR", str(tmp_path / "x"))
    assert Settings().data_dir == tmp_path / "x"


def setting_error(monkeypatch: pytest.MonkeyPatch) -> str:
    """The ConfigError's message of the settings as `monkeypatch` leaves the environment
    (undone afterwards, the cached settings forgotten)."""
    from workdatahub.settings import get_settings, reset_settings

    reset_settings()
    try:
        with pytest.raises(ConfigError) as raised:
            get_settings()
    finally:
        monkeypatch.undo()
        reset_settings()
    return raised.value.message


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("WDH_ENVIRONMENT", "production", "WDH_ENVIRONMENT: Input should be 'dev', 'staging'"),
        ("WDH_LOG_LEVEL", "debug2", "WDH_LOG_LEVEL: Input should be 'DEBUG'"),
        ("WDH_LOAD_ATTEMPTS", "abc", "WDH_LOAD_ATTEMPTS: Input should be a valid integer"),
        ("WDH_PARTITIONS_START", "2024-1", "WDH_PARTITIONS_START: String should match"),
        ("WDH_HOME", __file__, "WDH_HOME: Value error, "),
        ("WDH_SCHEDULE_CRON", "every month", "WDH_SCHEDULE_CRON: Value error, not a cron"),
        ("WDH_SCHEDULE_CRON", "0 7 12 *", "WDH_SCHEDULE_CRON: Value error, not a cron"),
        ("WDH_SCHEDULE_CRON", "@reboot", "WDH_SCHEDULE_CRON: Value error, not a cron"),
        ("WDH_SCHEDULE_CRON", "a b c d e", "WDH_SCHEDULE_CRON: Value error, not a cron"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)
    message = setting_error(monkeypatch)
    assert message.startswith(f"invalid setting {said}")
    assert "\n" not in message


def test_a_webhook_url_without_its_scheme_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent as it is, its error (logged) held the whole URL, and the token in it."""
    monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", "hooks.slack.com/services/T000/B000/Tok3n")
    message = setting_error(monkeypatch)
    assert message == (
        "invalid setting WDH_ALERT_WEBHOOK_URL: Value error, not a webhook URL: it starts "
        "with https:// (or http://)"
    )
    monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    assert Settings().alert_webhook_url is not None
    # credentials in the URL: urllib does not send them, and every alert failed
    monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", "https://bot:s3cret@alerts.internal/hook")
    message = setting_error(monkeypatch)
    assert message.startswith("invalid setting WDH_ALERT_WEBHOOK_URL: Value error, a webhook")
    assert "s3cret" not in message
    monkeypatch.setenv("WDH_ALERT_WEBHOOK_URL", "https://alerts.internal/hook?to=a@b.c")
    assert Settings().alert_webhook_url is not None  # an @ after the host is fine


def test_the_settings_whose_values_a_setting_error_leaves_out_are_the_secrets() -> None:
    from workdatahub import settings

    secrets = {"database_url", "dbt_database_url", "alert_webhook_url", "smtp_password"}
    assert secrets == settings._SECRETS


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://loader:p@ss-Tail@db.example:5432/wh",
        "postgresql://lo@der:s3cr3t@db.example/wh?sslmode=require",
    ],
)
def test_a_raw_at_in_the_password_is_refused_before_connecting(url: str) -> None:
    """libpq would read `ss-Tail@db.example` as the host, and its error would show it."""
    from workdatahub.warehouse.db import database_url, dbt_database_url

    for get, variable in ((database_url, "WDH_DATABASE_URL"), (dbt_database_url, "WDH_DBT_")):
        settings = Settings(database_url=url, dbt_database_url=url)
        with pytest.raises(ConfigError) as raised:
            get(settings)
        message = raised.value.message
        assert message.startswith(variable) and "write it %40" in message
        assert "Tail" not in message and "s3cr3t" not in message and "p@ss" not in message
    fixed = url.replace("p@ss", "p%40ss").replace("lo@der", "lo%40der")
    assert database_url(Settings(database_url=fixed)) == fixed


def test_a_folder_setting_this_user_cannot_reach_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """(Path.exists raises for a folder above it that cannot be entered; root, running the
    tests, can enter any, so the refusal is simulated.)"""
    locked = tmp_path / "locked" / "d"
    real_exists = Path.exists

    def exists(path: Path, *args: object, **kwargs: object) -> bool:
        if path == locked:
            raise PermissionError(13, "Permission denied")
        return real_exists(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "exists", exists)
    monkeypatch.setenv("WDH_DATA_DIR", str(locked))
    assert setting_error(monkeypatch).startswith(
        f"invalid setting WDH_DATA_DIR: Value error, {locked}: Permission denied"
    )


@pytest.mark.parametrize("cron", ["0 7 12 * *", "30 6 1-5 */2 MON-FRI", "@monthly", " 0 7 12 * * "])
def test_a_cron_schedule_setting_is_taken(monkeypatch: pytest.MonkeyPatch, cron: str) -> None:
    monkeypatch.setenv("WDH_SCHEDULE_CRON", cron)
    assert Settings().schedule_cron == cron.strip()


@pytest.mark.parametrize("external", [False, True])
def test_the_dbt_parse_gets_the_connection_of_dagsters_dbt_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, external: bool
) -> None:
    """dbt reuses a parse only for the connection it was made with: `wdh dbt-parse` gives
    dbt the WDH_DBT_* values Dagster's steps give it, and starts no embedded server for it
    (dbt parse connects to nothing; a stopped server listens in its data folder)."""
    from workdatahub.settings import reset_settings
    from workdatahub.warehouse import db

    (tmp_path / "home").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "home")  # pgserver names the folder resolved
    monkeypatch.setenv("WDH_HOME", str(tmp_path / "link"))
    monkeypatch.setenv("WDH_DATABASE_NAME", "warehouse")
    monkeypatch.delenv("WDH_DBT_DATABASE_URL", raising=False)
    if external:
        url = "postgresql://wdh_transformer:pw-not-shown@db.internal:6543/warehouse?sslmode=verify-full"
        monkeypatch.setenv("WDH_DATABASE_URL", url)
    else:
        monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    reset_settings()
    ran: list[tuple[list[str], Path, dict[str, str]]] = []

    def run(args: list[str], cwd: Path, env: dict[str, str], check: bool, **_: Any) -> Any:
        ran.append((args, cwd, env))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(db.subprocess, "run", run)
    try:
        db.parse_dbt_project(tmp_path / "dbt_project")
    finally:
        reset_settings()
    ((args, cwd, env),) = ran
    assert args[1:] == ["--no-use-colors", "parse", "--quiet", "--profiles-dir", "."]
    assert cwd == tmp_path / "dbt_project"
    connection = {k: v for k, v in env.items() if k.startswith("WDH_DBT_")}
    if external:
        assert connection == {
            "WDH_DBT_HOST": "db.internal", "WDH_DBT_PORT": "6543",
            "WDH_DBT_USER": "wdh_transformer", "WDH_DBT_PASSWORD": "pw-not-shown",
            "WDH_DBT_DBNAME": "warehouse", "WDH_DBT_SSLMODE": "verify-full",
        }  # fmt: skip
    else:
        pgdata = (tmp_path / "home" / "pgdata").resolve()
        assert connection == {
            "WDH_DBT_HOST": str(pgdata), "WDH_DBT_PORT": "5432", "WDH_DBT_USER": "postgres",
            "WDH_DBT_PASSWORD": "", "WDH_DBT_DBNAME": "warehouse", "WDH_DBT_SSLMODE": "",
        }  # fmt: skip
        assert not pgdata.exists()  # no server started for it


@pytest.mark.db
def test_the_urls_sslmode_reaches_dbt_and_psql(pg_url: str) -> None:
    """`?sslmode=verify-full` holds for dbt and `wdh db shell` as for the loader: dropped,
    the transformer's password went unencrypted to a server without TLS. (The embedded
    server listens on a socket, where libpq uses no TLS whatever the sslmode: dbt's own
    report of its profile shows what it was given.)"""
    from tests.warehouse import dbt
    from workdatahub.warehouse.db import psql_env

    required = pg_url + ("&" if "?" in pg_url else "?") + "sslmode=require"
    assert psql_env(required)["PGSSLMODE"] == "require"
    assert "PGSSLMODE" not in psql_env(pg_url)
    done = dbt(required, "debug")
    assert done.returncode == 0, done.stdout[-2000:]
    assert "sslmode: require" in done.stdout


def test_a_dotenv_in_the_working_folder_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the project's .env: one planted in a shared folder an operator runs `wdh` from
    could send the loads, or the alerts, to someone else's server."""
    monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    (tmp_path / ".env").write_text(
        "WDH_DATABASE_URL=postgresql://wdh_loader@attacker.example/exfil\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (
        settings.database_url is None or "attacker" not in settings.database_url.get_secret_value()
    )


def test_wdh_env_file_names_the_dotenv_of_an_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read when the settings are made, so also once set in a running process."""
    from workdatahub.settings import get_settings, reset_settings

    env_file = tmp_path / "workdatahub.env"
    env_file.write_text("WDH_DATABASE_NAME=from_env_file\n", encoding="utf-8")
    monkeypatch.delenv("WDH_DATABASE_NAME", raising=False)
    monkeypatch.setenv("WDH_ENV_FILE", str(env_file))
    reset_settings()
    try:
        assert get_settings().database_name == "from_env_file"
    finally:
        monkeypatch.delenv("WDH_ENV_FILE")
        reset_settings()


@pytest.mark.parametrize("named", [".env", "/no/such/file.env"])
def test_wdh_env_file_must_be_an_absolute_path_to_a_file(
    named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workdatahub.settings import get_settings, reset_settings

    monkeypatch.setenv("WDH_ENV_FILE", named)
    reset_settings()
    try:
        with pytest.raises(ConfigError, match="WDH_ENV_FILE: an absolute path to an existing"):
            get_settings()
    finally:
        monkeypatch.delenv("WDH_ENV_FILE")
        reset_settings()


def _dagster_loaded(
    folder: Path, lines: str, monkeypatch: pytest.MonkeyPatch, **exported: str
) -> None:
    """A process started with `exported` in its environment, in `folder`, whose .env
    (`lines`) Dagster's command line then loaded over the environment, as it does."""
    from dotenv import dotenv_values

    (folder / ".env").write_text(lines, encoding="utf-8")
    monkeypatch.chdir(folder)
    started = {**os.environ, **exported}
    for name in [n for n in started if n.startswith("WDH_") and n not in exported]:
        del started[name]  # (only what the test names)
    monkeypatch.setattr("workdatahub.settings._dagster_lineage", lambda: (True, started))
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    for name, value in dotenv_values(folder / ".env").items():
        monkeypatch.setenv(name, value or "")


def test_what_dagster_loaded_from_a_folders_dotenv_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env of the folder Dagster starts in, not the project's: a variable it added is
    removed, one it changed gets back its exported value."""
    from workdatahub.settings import get_settings, reset_settings, undo_dagster_env_file

    _dagster_loaded(
        tmp_path,
        "WDH_DATABASE_URL=postgresql://wdh_loader@attacker.example/exfil\nWDH_LOG_LEVEL=DEBUG\n",
        monkeypatch,
        WDH_LOG_LEVEL="ERROR",
    )
    assert undo_dagster_env_file() == ["WDH_DATABASE_URL", "WDH_LOG_LEVEL"]
    assert "WDH_DATABASE_URL" not in os.environ
    assert os.environ["WDH_LOG_LEVEL"] == "ERROR"
    reset_settings()
    assert get_settings().log_level == "ERROR"
    reset_settings()


def test_the_environment_wins_over_the_settings_own_dotenv_under_dagster_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster started in the project folder loads the project's .env over the environment:
    an exported WDH_ENVIRONMENT=prod was turned into the .env's dev. It is put back; what the
    .env alone sets stays, as the settings read it anyway."""
    from workdatahub.settings import get_settings, reset_settings, undo_dagster_env_file

    _dagster_loaded(
        tmp_path,
        "WDH_ENVIRONMENT=dev\nWDH_PARTITIONS_START=2023-01\n",
        monkeypatch,
        WDH_ENVIRONMENT="prod",
        WDH_ENV_FILE=str(tmp_path / ".env"),
    )
    assert undo_dagster_env_file() == ["WDH_ENVIRONMENT"]
    assert os.environ["WDH_ENVIRONMENT"] == "prod"
    assert os.environ["WDH_PARTITIONS_START"] == "2023-01"
    reset_settings()
    try:
        assert get_settings().environment == "prod"
    finally:
        monkeypatch.delenv("WDH_ENV_FILE")
        reset_settings()


def test_a_folders_dotenv_naming_itself_the_settings_file_is_still_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WDH_ENV_FILE as the Dagster command was started with decides which .env is the
    settings' own: a folder's .env that names itself so is still a folder's."""
    from workdatahub.settings import undo_dagster_env_file

    lines = f"WDH_ENV_FILE={tmp_path / '.env'}\nWDH_DATA_DIR=/srv/elsewhere\n"
    _dagster_loaded(tmp_path, lines, monkeypatch)
    assert undo_dagster_env_file() == ["WDH_DATA_DIR", "WDH_ENV_FILE"]
    assert "WDH_DATA_DIR" not in os.environ and "WDH_ENV_FILE" not in os.environ


def test_without_proc_a_folders_dotenv_holding_a_value_of_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where what the Dagster command was started with cannot be read, a folder's .env
    value the environment holds cannot be told from an exported one: the code location is
    refused, saying why, rather than run on it."""
    from workdatahub.settings import undo_dagster_env_file

    lines = "WDH_DATA_DIR=/srv/elsewhere\n"
    _dagster_loaded(tmp_path, lines, monkeypatch, WDH_DATA_DIR="/srv/elsewhere")
    monkeypatch.setattr("workdatahub.settings._dagster_lineage", lambda: (True, None))
    with pytest.raises(ConfigError) as refused:
        undo_dagster_env_file()
    assert str(refused.value) == (
        f"{tmp_path / '.env'} sets WDH_DATA_DIR: Dagster loads the .env of the folder it starts "
        "in over the environment, and WorkDataHub reads only its own .env; start Dagster from "
        "another folder (`make dev` starts it in WDH_HOME/dagster), or remove those lines"
    )


def test_outside_dagster_a_folders_dotenv_is_left_to_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wdh`, a test, a plain `python -c 'import workdatahub.definitions'`: no Dagster
    command loaded the .env, and the settings never read it."""
    from workdatahub.settings import undo_dagster_env_file

    (tmp_path / ".env").write_text("WDH_LOG_LEVEL=INFO\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WDH_LOG_LEVEL", "INFO")
    assert undo_dagster_env_file() == []
    assert os.environ["WDH_LOG_LEVEL"] == "INFO"


@pytest.mark.parametrize("name", ["dagster-dev", "dg"])
def test_a_code_server_is_given_back_what_the_dagster_command_was_started_with(
    tmp_path: Path, name: str
) -> None:
    """For real, on /proc: a command named like Dagster's (`dagster dev`, `dg dev`) loads the
    .env over its environment, then starts a process (its code server) that inherits what
    it loaded; that process reads what the command was started with. (`dg launch` runs the
    load in the `dg` process itself: taken for no Dagster command, it kept the .env's.)"""
    command = tmp_path / name
    command.symlink_to(sys.executable)
    child = (
        "from workdatahub.settings import _dagster_lineage; "
        "under, started = _dagster_lineage(); "
        "print(under, started['WDH_ENVIRONMENT'] if started else None)"
    )
    parent = (
        "import os, subprocess, sys; os.environ['WDH_ENVIRONMENT'] = 'dev'; "
        f"sys.exit(subprocess.run([sys.executable, '-c', {child!r}]).returncode)"
    )
    env = {**os.environ, "WDH_ENVIRONMENT": "prod", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(command), "-c", parent], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True prod"
    alone = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=60
    )
    assert alone.stdout.strip() == "False None"


def test_no_dotenv_in_the_folder_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workdatahub.settings import undo_dagster_env_file

    monkeypatch.setattr("workdatahub.settings._dagster_lineage", lambda: (True, {}))
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    assert undo_dagster_env_file() == []
    assert dict(os.environ) == before


@pytest.mark.db
@pytest.mark.slow
def test_dagster_started_in_a_folder_with_a_dotenv_loads_from_the_exported_data_folder(
    tmp_path: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """For real: `dagster asset materialize` started in a shared folder whose .env points
    WDH_DATA_DIR elsewhere loads the month from the exported folder."""
    from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook

    data, shared = tmp_path / "data", tmp_path / "shared"
    rows: list[list[Any]] = [[2024, 2, f"P{i}", "C1", "1.5%", 1, 1] for i in range(3)]
    write_workbook(
        trustee_folder(data, "202402", "x", "受托业绩.xlsx"), {"S": [TRUSTEE_HEADER, *rows]}
    )
    shared.mkdir()
    (shared / ".env").write_text(f"WDH_DATA_DIR={tmp_path / 'elsewhere'}\n", encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WDH_")},
        "WDH_DATABASE_URL": pg_url,
        "WDH_DATA_DIR": str(data),
        "WDH_HOME": os.environ.get("WDH_HOME", str(ROOT / ".wdh")),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m",
         "workdatahub.definitions", "--select", "raw/trustee_performance", "--partition",
         "2024-02"],
        cwd=shared, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ignored what the .env of the folder Dagster started in" in done.stderr
    assert "WDH_DATA_DIR" in done.stderr
    loaded = pg.execute(
        "select count(*) from raw.trustee_performance where report_date = '2024-02-01'"
    ).fetchone()
    assert loaded == (3,)
