"""The `wdh` command as an operator runs it: outputs, --json shapes, exit codes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.workbooks import TRUSTEE_HEADER, trustee_folder, write_workbook

ROOT = Path(__file__).resolve().parent.parent


def wdh_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in its own process (exit codes, no traceback on stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "workdatahub.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def wdh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The same entry point in this process: the same code path, without a 5 s start-up."""
    from workdatahub import cli
    from workdatahub.settings import reset_settings

    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    saved_argv = sys.argv
    os.environ.update(env or {})
    reset_settings()
    sys.argv = ["wdh", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as done:
        code = int(done.code or 0)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        reset_settings()
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture
def month(tmp_path: Path) -> Path:
    rows: list[list[Any]] = [
        [2024, 11, "P1", "C1", "5%", "1,234.5", 10],
        [2024, 11, "P2", "C1", 3.5, "abc", None],
        [2024, 11, "P3", 1001, 0.02, "-", "(5)"],
        ["合计", None, None, None, None, None, 10],
    ]
    write_workbook(
        trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx"),
        {"S": [TRUSTEE_HEADER, *rows]},
    )
    return tmp_path


def test_check_json_and_out(month: Path, tmp_path: Path) -> None:
    book = next(month.rglob("*.xlsx"))
    out = tmp_path / "clean.csv"
    done = wdh("check", "trustee_performance", str(book), "--json", "--out", str(out))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload == {
        "domain": "trustee_performance",
        "file": str(book),
        "sheet": "S",
        "rows_read": 3,
        "rows_valid": 2,
        "rows_rejected": 1,
        "rejects": [
            {"row": 3, "column": "net_value", "value": "abc", "reason": "not a number: 'abc'"}
        ],
    }
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "report_date",
        "plan_code",
        "company_code",
        "return_rate",
        "net_value",
        "fund_scale",
    ]
    assert rows[1] == ["2024-11-01", "P1", "C1", "0.050000", "1234.5000", "10.0000"]
    assert rows[2] == ["2024-11-01", "P3", "1001", "0.020000", "", "-5.0000"]


def test_check_text_output(month: Path) -> None:
    book = next(month.rglob("*.xlsx"))
    done = wdh("check", "trustee_performance", str(book))
    assert done.returncode == 0
    assert "3 rows read, 2 valid, 1 rejected" in done.stdout
    assert "not a number: 'abc'" in done.stdout


def test_discover_json(month: Path) -> None:
    done = wdh(
        "discover", "trustee_performance", "--period", "2024-11", "--data-dir", str(month), "--json"
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["domain"] == "trustee_performance" and payload["period"] == "2024-11"
    assert payload["files"][0]["path"] == "202411/收集数据/业务收集/受托部/2024年11月受托业绩.xlsx"
    assert payload["files"][0]["version"] is None and len(payload["files"][0]["sha256"]) == 64
    assert payload["ignored"] == []


def test_plan_only_touches_no_database(month: Path) -> None:
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        "--plan-only", env={"WDH_DATABASE_URL": "postgresql://nobody:s3cret@127.0.0.1:1/none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert 'copy "raw"."trustee_performance"' in done.stdout
    assert "-- copy the valid rows (2 rows)" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "nope", "x.xlsx"], "unknown domain 'nope'"),
        (["check", "trustee_performance", "/no/such.xlsx"], "/no/such.xlsx: no such file"),
        (["load", "trustee_performance", "--period", "2024-13"], "not a month like 2024-11"),
        (
            [
                "discover",
                "trustee_performance",
                "--period",
                "2024-11",
                "--data-dir",
                "/nonexistent",
            ],
            "no folder",
        ),
        (["load", "trustee_performance"], "Missing option '--period'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = wdh(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_workbook_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"\x00" * 100)
    done = wdh_process("check", "trustee_performance", str(bad))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"wdh: error: {bad}: not a readable workbook (not an .xlsx zip container; an old "
        ".xls or a password-protected file must be re-saved as .xlsx)"
    )


@pytest.mark.db
def test_load_exit_codes(month: Path, pg_url: str, fresh_tables: None) -> None:
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month), "--json",
        "--max-reject-rate", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["rows_loaded"], summary["rows_rejected"]) == (
        "succeeded",
        2,
        1,
    )
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        "--max-reject-rate", "0.1",
    )  # fmt: skip
    assert done.returncode == 1
    assert "1 of 3 rows rejected" in done.stderr and "Traceback" not in done.stderr


def test_warehouse_unreachable_exit_3_and_password_masked(month: Path) -> None:
    done = wdh_process(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        env={"WDH_DATABASE_URL": "postgresql://loader:s3cret@127.0.0.1:1/none"},
    )  # fmt: skip
    assert done.returncode == 3
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("wdh: error:")]
    assert len(errors) == 1 and done.stderr.splitlines()[-1] == errors[0]


def test_operator_views_on_annuity_samples(tmp_path: Path) -> None:
    from datetime import date

    from workdatahub.samples import write_samples

    samples = write_samples(tmp_path, [date(2024, 11, 1)], rows=120, seed=5)
    performance = next(s for s in samples if s.domain == "annuity_performance")
    out = tmp_path / "x.csv"
    done = wdh(
        "check", "annuity_performance", str(performance.path), "--period", "2024-11",
        "--json", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["sheet"] == "规模明细"
    assert payload["rows_read"] == performance.rows
    assert payload["rows_rejected"] == performance.expected_rejects
    with out.open(encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header[:4] == ["period", "business_type", "plan_type", "plan_code"]
    assert "annuity_account_no" in header and "备注" not in header

    done = wdh(
        "load", "annuity_income", "--period", "2024-11", "--data-dir", str(tmp_path), "--plan-only",
        env={"WDH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert 'delete from "raw"."annuity_income" where "period" = \'2024-11-01\'::date' in done.stdout
    assert "[收入明细]" in done.stdout
