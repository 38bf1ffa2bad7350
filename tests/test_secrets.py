"""Passwords never leave the URL they are configured in: not in logs (JSON, DEBUG), not in
the CLI's text or `--json` output, not in error messages or tracebacks, not in Dagster's
event log, metadata or run records. Checked by grepping everything for a known password,
on success and error paths, against a closed port and against the real (embedded) server.

Also: `.env` is ignored by git, and the pre-commit hooks run ruff, mypy and a secret scanner.

`wdh env` prints WDH_DBT_PASSWORD on purpose when its output goes to `eval` in a
modeler's shell, and not on a terminal. dbt's own output and logs are checked in
test_roles.py, where dbt runs with a password in WDH_DBT_DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_roles import role_url
from tests.warehouse import NOV, write_month
from workdatahub.settings import reset_settings

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Canary-pw-93f1c7e2"  # pragma: allowlist secret

# Runs several `wdh` commands in one process (one start-up instead of one each), exactly
# as `wdh` would run them; an unexpected exception prints its traceback as Python would.
DRIVER = r"""
import json, os, sys, traceback
from workdatahub import cli
from workdatahub.logs import configure_logging
from workdatahub.settings import reset_settings

for case in json.loads(sys.argv[1]):
    os.environ.update(case["env"])
    reset_settings()
    configure_logging(force=True)
    sys.argv = ["wdh", *case["args"]]
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    print(f"\n@@exit {code}", flush=True)
"""


@pytest.mark.db
def test_cli_output_logs_and_errors_never_show_the_password(
    pg_url: str, fresh_tables: None, tmp_path: Path
) -> None:
    write_month(tmp_path, NOV, 12)
    closed_port = f"postgresql://wdh_loader:{PASSWORD}@127.0.0.1:1/workdatahub"
    keywords = f"host=127.0.0.1 port=1 dbname=workdatahub user=wdh_loader password={PASSWORD}"
    real = role_url(pg_url, "wdh_loader", PASSWORD)
    no_database = real.replace(f"/{psycopg_dbname(pg_url)}?", "/no_such_database?")
    assert no_database != real
    load = ["load", "trustee_performance", "--period", "2024-11", "--data-dir", str(tmp_path)]
    # expected exit codes: 0 done, 1 refused or an unexpected error (traceback), 3 warehouse
    cases: list[tuple[str, list[str], set[int]]] = [
        (closed_port, [*load, "--json"], {3}),
        (closed_port, load, {3}),
        (closed_port, ["db", "url"], {0}),
        (closed_port, ["db", "upgrade"], {1, 3}),  # a traceback today; 3 would be better
        (closed_port, [*load, "--plan-only", "--json"], {0}),
        (keywords, [*load, "--json"], {3}),
        (keywords, ["db", "url"], {0}),
        (real, [*load, "--json"], {0}),
        (real, load, {0}),
        (real, [*load, "--mode", "append"], {2}),  # the same file appended again: refused
        (real, ["db", "url"], {0}),
        # the loader may read the warehouse's migration (0006), and there is none to run
        (real, ["db", "upgrade"], {0}),
        (no_database, [*load, "--json"], {3}),
    ]
    env = {"WDH_LOG_FORMAT": "json", "WDH_LOG_LEVEL": "DEBUG", "WDH_LOAD_ATTEMPTS": "2"}
    payload = [{"env": {**env, "WDH_DATABASE_URL": url}, "args": args} for url, args, _ in cases]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(payload)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    codes = [int(code) for code in re.findall(r"^@@exit (-?\d+)$", done.stdout, flags=re.M)]
    assert len(codes) == len(cases), done.stderr[-3000:]
    for (_, args, expected), code in zip(cases, codes, strict=True):
        assert code in expected, (args, code)
    output = done.stdout + done.stderr
    assert PASSWORD not in output
    # the paths did run: successes, each kind of failure, logs at DEBUG
    for expected in [
        '"status": "succeeded"',
        "cannot start the load",
        "appending it again would duplicate them",
        'database \\"no_such_database\\" does not exist',  # (in a JSON line, as in production)
        '"event": "load retried"',
        "wdh_loader:***@",
        "password=***",
    ]:
        assert expected in output, expected


@pytest.mark.db
def test_dagster_runs_never_show_the_password(
    pg_url: str,
    fresh_tables: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Materialise the raw asset in process with the password in WDH_DATABASE_URL: one
    success, one missing workbook, one database that does not exist; grep the event log
    (metadata, messages, failures), the run records and everything printed."""
    import dagster as dg
    from dagster._serdes import serialize_value

    from workdatahub.defs.raw_assets import build_raw_asset
    from workdatahub.defs.resources import WarehouseResource
    from workdatahub.sources.spec import load_sources

    write_month(tmp_path, NOV, 12)
    raw = build_raw_asset(load_sources(ROOT / "data_sources.yml").domain("trustee_performance"))
    real = role_url(pg_url, "wdh_loader", PASSWORD)
    database = str(psycopg_dbname(pg_url))
    runs = [
        (real, "2024-11", True),
        (real, "2024-10", False),  # no workbook for October
        (real.replace(f"/{database}?", "/no_such_database?"), "2024-11", False),
    ]
    texts: list[str] = []
    try:
        with dg.instance_for_test() as instance:
            for url, partition, success in runs:
                monkeypatch.setenv("WDH_DATABASE_URL", url)
                reset_settings()
                result = dg.materialize(
                    [raw],
                    partition_key=partition,
                    resources={"warehouse": WarehouseResource(data_dir=str(tmp_path))},
                    instance=instance,
                    raise_on_error=False,
                )
                assert result.success is success
                texts += [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
                texts.append(serialize_value(instance.get_run_by_id(result.run_id)))
    finally:
        monkeypatch.delenv("WDH_DATABASE_URL")
        reset_settings()
    printed = capfd.readouterr()
    everything = "\n".join([*texts, printed.out, printed.err])
    assert PASSWORD not in everything
    for expected in ["rows_loaded", "trustee_performance 2024-10: no folder", "does not exist"]:
        assert expected in everything, expected


def psycopg_dbname(url: str) -> Any:
    from psycopg import conninfo

    return conninfo.conninfo_to_dict(url)["dbname"]


def test_dotenv_is_ignored_by_git_and_its_example_is_not() -> None:
    def ignored(path: str) -> bool:
        done = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True, timeout=30
        )
        assert done.returncode in (0, 1), done.stderr
        return done.returncode == 0

    assert ignored(".env")
    assert ignored("sub/folder/.env")
    assert not ignored(".env.example")


def test_pre_commit_runs_ruff_mypy_and_a_secret_scanner() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "mypy", "detect-secrets"} <= set(hooks)
    assert "ruff check" in hooks["ruff"]["entry"]
    assert "ruff format --check" in hooks["ruff-format"]["entry"]
    assert hooks["mypy"]["entry"].endswith("mypy")
    scanner = hooks["detect-secrets"]["entry"]
    assert "detect-secrets-hook" in scanner and "--baseline .secrets.baseline" in scanner
    baseline = json.loads((ROOT / ".secrets.baseline").read_text(encoding="utf-8"))
    # every finding in the baseline is a known test or example value, audited as not real
    for findings in baseline["results"].values():
        assert all(finding.get("is_secret") is False for finding in findings)


def test_wdh_env_shows_the_password_to_eval_only() -> None:
    """`eval "$(wdh env)"` gets the dbt password; `wdh env` typed at a terminal (a screen
    shared, a terminal recorded) does not show it."""
    import pty

    url = f"postgresql://wdh_dbt:{PASSWORD}@db.example:5432/workdatahub"
    command = [sys.executable, "-m", "workdatahub.cli", "env"]
    env = {**os.environ, "WDH_DATABASE_URL": url, "WDH_DBT_DATABASE_URL": url}
    piped = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert f"export WDH_DBT_PASSWORD={PASSWORD}" in piped.stdout
    leader, follower = pty.openpty()
    try:
        shown = subprocess.run(command, cwd=ROOT, env=env, stdout=follower, stderr=subprocess.PIPE)
        os.close(follower)
        output = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's writer is gone
            while chunk := os.read(leader, 4096):
                output += chunk
    finally:
        os.close(leader)
    assert shown.returncode == 0, shown.stderr
    text = output.decode()
    assert "export WDH_DBT_USER=wdh_dbt" in text and PASSWORD not in text
    assert 'WDH_DBT_PASSWORD is not shown on a terminal; eval "$(wdh env)" sets it' in text
