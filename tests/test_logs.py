"""Logs: JSON in production with domain and partition on every line; readable otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook

ROOT = Path(__file__).resolve().parent.parent


def _plan(tmp_path: Path, period: str = "2024-11", **env: str) -> subprocess.CompletedProcess[str]:
    """The dry run of November (whose workbook it writes) or of `period`."""
    rows = [[2024, 11, "P1", "C1", "5%", 1, 1], [2024, 11, "P2", "C1", "x", 1, 1]]
    write_workbook(
        trustee_folder(tmp_path, "202411", "受托业绩.xlsx"), {"S": [TRUSTEE_HEADER, *rows]}
    )
    return subprocess.run(
        [sys.executable, "-m", "workdatahub.cli", "load", "trustee_performance", "-p", period,
         "--data-dir", str(tmp_path), "--plan-only"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "WDH_DATABASE_URL": "postgresql://wdh:pa55word@db.invalid/wh",
             "WDH_LOG_LEVEL": "INFO", **env},
    )  # fmt: skip


def test_prod_logs_are_json_with_domain_partition_and_load_id(tmp_path: Path) -> None:
    done = _plan(tmp_path, WDH_ENVIRONMENT="prod", WDH_LOG_FORMAT="auto")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines, "expected log lines"
    load_id = done.stdout.splitlines()[0].split()[3].rstrip(":")  # "-- load plan ID: …"
    assert {line["event"] for line in lines} >= {"discovered", "reading", "validated"}
    for line in lines:
        assert line["domain"] == "trustee_performance" and line["partition"] == "2024-11"
        assert line["load_id"] == load_id, line
        assert line["level"] in ("info", "warning") and "timestamp" in line
    validated = next(line for line in lines if line["event"] == "validated")
    assert (validated["rows_read"], validated["rows_rejected"]) == (2, 1)
    assert "pa55word" not in done.stderr + done.stdout


def test_a_failure_in_production_is_a_json_line_at_level_error(tmp_path: Path) -> None:
    """A log collector in production reads one JSON object per line: the one-line reason
    of a failure is one too, with its exit code (in development it is text)."""
    done = _plan(tmp_path, "2024-12", WDH_ENVIRONMENT="prod", WDH_LOG_FORMAT="auto")
    assert done.returncode == 2, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1]["level"] == "error" and lines[-1]["exit_code"] == 2
    assert "no folder" in lines[-1]["event"] and "pa55word" not in done.stderr
    text = _plan(tmp_path, "2024-12", WDH_ENVIRONMENT="dev", WDH_LOG_FORMAT="auto")
    assert text.returncode == 2 and text.stderr.splitlines()[-1].startswith("wdh: error: ")


def test_dev_logs_are_readable_text(tmp_path: Path) -> None:
    done = _plan(tmp_path, WDH_ENVIRONMENT="dev", WDH_LOG_FORMAT="auto")
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert "discovered" in first and "domain=trustee_performance" in first
    assert not first.startswith("{")


def test_an_unreadable_months_log_row_has_the_load_id_its_log_lines_carry(
    tmp_path: Path, pg_url: str, pg: object
) -> None:
    """The log lines of a load name its load id from the start; when the workbook turns
    out unreadable, the 'failed' row in wdh.load_log is under that same id."""
    path = trustee_folder(tmp_path, "202411", "受托业绩.xlsx")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    done = subprocess.run(
        [sys.executable, "-m", "workdatahub.cli", "load", "trustee_performance", "-p", "2024-11",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "WDH_DATABASE_URL": pg_url, "WDH_LOG_LEVEL": "INFO",
             "WDH_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert lines[-1]["level"] == "error" and lines[-1]["exit_code"] == 2  # the reason
    lines = lines[:-1]
    ids = {line["load_id"] for line in lines}
    assert len(ids) == 1 and lines, done.stderr
    (load_id,) = ids
    row = pg.execute(  # type: ignore[attr-defined]
        "select status from wdh.load_log where load_id = %s", [load_id]
    ).fetchone()
    assert row == ("failed",)


def test_the_database_drivers_warnings_are_log_lines_like_ours() -> None:
    """psycopg's own warnings (an error it ignored while closing a lost connection) come
    out as JSON lines in production, passwords masked, not as bare text on stderr."""
    script = (
        "import logging; from workdatahub.logs import configure_logging; configure_logging(); "
        "logging.getLogger('psycopg').warning('error ignored terminating %s: %s', "
        "'postgresql://wdh:pa55word@db/wh', 'the connection is lost'); "
        "logging.getLogger('psycopg').debug('not shown')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "WDH_ENVIRONMENT": "prod", "WDH_LOG_FORMAT": "auto",
             "WDH_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(text) for text in done.stderr.splitlines() if text.strip()]
    assert line["level"] == "warning" and line["logger"] == "psycopg"
    assert line["event"] == (
        "error ignored terminating postgresql://wdh:***@db/wh: the connection is lost"
    )
