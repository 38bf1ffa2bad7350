"""The `wdh` command as an operator runs it: outputs, --json shapes, exit codes."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import uuid
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
    done = wdh(
        "check", "trustee_performance", str(book), "--json", "--out", str(out),
        "--max-reject-rate", "0.5",
    )  # fmt: skip
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
            {
                "row": 3,
                "column": "net_value",
                "value": "abc",
                "reason": "not a number: 'abc'",
                "header": "净值",
            }  # the header as the workbook spells it
        ],
        "totals": {  # the sheet's 合计 row states 10; the rows loaded hold 10 and (5)
            "fund_scale": {
                "header": "规模",
                "stated": "10.0000",
                "loaded": "5.0000",
                "rejected": "0.0000",
                "rejected_not_numbers": 0,
                "difference": "5.0000",
                "tolerance": "0.02",
            }
        },
        "reject_rate": 0.333333,
        "max_reject_rate": 0.5,
        "threshold_exceeded": False,
    }
    assert out.read_bytes().startswith(b"\xef\xbb\xbfreport_date,")  # Excel reads it as UTF-8
    with out.open(encoding="utf-8-sig") as handle:
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
    done = wdh("check", "trustee_performance", str(book), "--max-reject-rate", "0.4")
    assert (done.returncode, done.stderr) == (0, "")
    assert "3 rows read, 2 valid, 1 rejected" in done.stdout
    assert "not a number: 'abc'" in done.stdout


@pytest.mark.parametrize("as_json", [False, True])
def test_check_exits_1_when_a_load_would_be_refused(
    month: Path, tmp_path: Path, as_json: bool
) -> None:
    """1 row of 3 rejected is over trustee_performance's max_reject_rate (20%): the result
    is shown (and --out written) as always, then one line says a load would be refused."""
    book = next(month.rglob("*.xlsx"))
    out = tmp_path / "clean.csv"
    done = wdh(
        "check", "trustee_performance", str(book), "--out", str(out),
        *(["--json"] if as_json else []),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"wdh: error: {book} [S]: 1 of 3 rows rejected (33.3%) > max_reject_rate 20.0%; "
        "a load of it would be refused\n"
    )
    if as_json:
        payload = json.loads(done.stdout)
        assert (payload["rows_rejected"], payload["max_reject_rate"]) == (1, 0.2)
        assert payload["threshold_exceeded"] is True
    else:
        assert "3 rows read, 2 valid, 1 rejected" in done.stdout
    assert len(out.read_text(encoding="utf-8-sig").splitlines()) == 3  # header + 2 valid rows


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
    # the text names a file of the base folder as `wdh history` and Dagster's metadata do
    text = wdh("discover", "trustee_performance", "--period", "2024-11", "--data-dir", str(month))
    assert "受托业绩.xlsx  version=base  sha256=" in text.stdout, text.stdout


def test_plan_only_touches_no_database(month: Path) -> None:
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        "--plan-only", "--max-reject-rate", "0.5",
        env={"WDH_DATABASE_URL": "postgresql://nobody:s3cret@127.0.0.1:1/none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # every statement the load runs, in order: the load's own lock and its row of the load
    # log first (its own commit, before the workbook is read), then the transaction
    purposes = [line for line in done.stdout.splitlines() if line.startswith("-- ")][3:]
    assert purposes[:4] == [
        "-- hold the load's own lock while it runs (a load whose process ended lets it go)",
        "-- open the load log (committed on its own: a failed load keeps its row)",
        "-- earlier loads of this period whose process ended (their own lock is free)",
        "-- limit waiting for a concurrent load",
    ]
    assert "'trustee_performance', '2024-11-01'::date, 'raw.trustee_performance'" in done.stdout
    assert 'delete from "raw"."trustee_performance"' in done.stdout
    assert 'copy "raw"."trustee_performance"' in done.stdout
    assert "-- copy the valid rows (2 rows)" in done.stdout
    assert "status = 'succeeded', rows_loaded = 2, rows_deleted = " in done.stdout
    assert "rows_read = 3, rows_rejected = 1, reject_rate = 0.333333" in done.stdout
    assert "refused" not in done.stdout
    # after the commit, on its own: the metrics, with the rows the load would load
    closing = done.stdout.splitlines()[-2:]
    assert closing[0] == "-- after the commit, on its own: the load's data-quality metrics"
    assert closing[1].startswith("insert into wdh.data_quality_metrics")
    assert "'2024-11-01'::date, 3, 2, 1, 0.333333," in closing[1]
    assert "s3cret" not in done.stdout + done.stderr


def test_plan_only_of_an_append_shows_its_check_for_a_repeat(month: Path) -> None:
    """An append asks, under the month's lock and before its commit, whether an earlier
    load appended the same file: the dry run shows that query last, after the log's row."""
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        "--plan-only", "--mode", "append", "--max-reject-rate", "0.5",
        env={"WDH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'delete from "raw"' not in done.stdout
    at = lines.index("-- refuse the load if an earlier one of this month appended the same file")
    assert lines[at - 2] == "-- record the load"  # last in the transaction, under the lock
    book = next(month.rglob("*.xlsx"))
    sha256 = hashlib.sha256(book.read_bytes()).hexdigest()
    assert f'l.files @> \'[{{"sha256": "{sha256}"}}]\'::jsonb' in lines[at + 1]


def test_plan_only_of_a_refused_load_shows_what_a_refusal_runs(month: Path) -> None:
    """1 row of 3 rejected is over the domain's 20%: a real load would quarantine the
    rejects and record the refusal, and neither delete nor copy rows of the table; the dry
    run prints those statements, not the load's, and exits 0 (it is a dry run)."""
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        "--plan-only", env={"WDH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert 'delete from "raw"' not in done.stdout
    assert 'copy "raw"' not in done.stdout
    assert "status = 'succeeded'" not in done.stdout
    assert "-- quarantine the rejected rows, a line per reason (1 row)" in done.stdout
    assert "set status = 'refused', message = 'trustee_performance 2024-11: 1 of 3" in done.stdout
    assert done.stdout.endswith(
        "-- NOTE: 1 of 3 rows rejected (33.3%) > max_reject_rate 20.0%: "
        "a real load would be refused\n"
    )


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
            "no data folder /nonexistent (set WDH_DATA_DIR, or give --data-dir,",
        ),
        (["load", "trustee_performance"], "Missing option '--period'"),
        (["load", "trustee_performance", "--period", "0000-01"], "not a month like 2024-11"),
        (["rejects", "trustee_performance", "-p", "2024-11", "--load-id", "x"], "not a load id"),
        (["sample", "--domain", "nope", "--out", "/nonexistent"], "no samples for domain(s) nope"),
        (["check", "trustee_performance", "/"], "/: a folder, not a workbook"),
        (["check", "trustee_performance", "x.xlsx", "--limit", "-1"], "-1 is not in the range"),
        (
            ["history"],
            "WDH_DATABASE_URL is not a connection string",
        ),
        # a NaN passes a range check (every comparison with it fails) and is no JSON
        (["check", "trustee_performance", "x.xlsx", "--max-reject-rate", "nan"], "'nan' is not"),
        (["load", "trustee_performance", "-p", "2024-11", "--max-reject-rate", "nan"], "'nan'"),
        (["demo", "--rows", "0"], "0 is not in the range 1<=x<=2000000"),
        (["sample", "--out", "/proc/nope", "--months", "2024-01"], "/proc/nope: cannot write it"),
        (
            ["demo", "--data-dir", "/proc/nope", "--months", "2024-01", "--named-warehouse"],
            "WDH_DATABASE_URL is not a connection string",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = wdh(*args, env={"WDH_DATABASE_URL": "not a url"})
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
def test_a_totals_row_that_does_not_add_up_is_a_warning_and_kept_in_the_load_log(
    month: Path, pg_url: str, pg: Any, fresh_tables: None
) -> None:
    """The sheet's 合计 states 10 for 规模; the rows loaded hold 10 and (5), the rejected
    row nothing: the load goes on, says so, and audit.loads keeps the numbers."""
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month), "--json",
        "--max-reject-rate", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = (
        "the sheet's totals row does not add up: 规模 states 10.00, the rows loaded sum to 5.00 "
        "and the rejected rows to 0.00: off by 5.00"
    )
    assert said in done.stderr
    assert json.loads(done.stdout)["totals_off"] == [said.split(": ", 1)[1]]
    (totals,) = pg.execute("select totals from audit.loads").fetchone()
    assert totals["fund_scale"]["difference"] == "5.0000"
    workbook = next(month.rglob("*.xlsx"))
    checked = wdh("check", "trustee_performance", str(workbook), "--max-reject-rate", "0.5")
    assert said in checked.stdout, checked.stdout


@pytest.mark.db
def test_a_load_says_which_files_it_refused_to_read(
    month: Path, pg_url: str, fresh_tables: None
) -> None:
    workbook = next(month.rglob("*.xlsx"))
    (workbook.parent / "2024年11月受托业绩_旧.xlsx").symlink_to(month / "gone.xlsx")
    done = wdh(
        "load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month),
        "--max-reject-rate", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not read: " in done.stderr and "2024年11月受托业绩_旧.xlsx (broken link)" in done.stderr


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
    with out.open(encoding="utf-8-sig") as handle:
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


def test_an_unwritable_out_file_is_one_line(month: Path) -> None:
    book = next(month.rglob("*.xlsx"))
    done = wdh("check", "trustee_performance", str(book), "--out", "/proc/no/clean.csv")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("wdh: error: /proc/no/clean.csv: cannot write it")


def test_upsert_without_a_key_is_a_usage_error(tmp_path: Path) -> None:
    from datetime import date

    from workdatahub.samples import write_samples

    write_samples(tmp_path, [date(2024, 11, 1)], rows=20, seed=5, domains=("annuity_income",))
    done = wdh(
        "load", "annuity_income", "--period", "2024-11", "--data-dir", str(tmp_path),
        "--mode", "upsert", "--plan-only",
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert "refresh mode upsert needs a `key`" in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--months", "2024-02"], {},
            "wdh demo replaces 2024-02 of every domain with synthetic rows, and WDH_DATABASE_URL "
            "names postgresql://u:***@localhost:1/x, not the embedded Postgres: unset it to use "
            "the embedded one, or pass --named-warehouse",
        ),
        (
            ["--named-warehouse"], {"WDH_ENVIRONMENT": "prod"},
            "wdh demo never runs in production (WDH_ENVIRONMENT=prod)",
        ),
        (
            ["--named-warehouse", "--data-dir", "/proc/nope", "--months", "2024-01"], {},
            "/proc/nope: cannot write it",
        ),
        (  # dbt would build the demo's models in the warehouse it names
            ["--months", "2024-02"], {"WDH_DBT_DATABASE_URL": "postgresql://t:secret@h:1/y"},
            "wdh demo replaces 2024-02 of every domain with synthetic rows, and "
            "WDH_DBT_DATABASE_URL names postgresql://t:***@h:1/y, not the embedded Postgres",
        ),
    ],
)  # fmt: skip
def test_the_demo_keeps_out_of_a_named_warehouse_unless_asked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    """The demo replaces its months with synthetic rows: in the embedded warehouse; in the
    one WDH_DATABASE_URL names only with --named-warehouse, and never in production. A
    refusal writes nothing."""
    from workdatahub import samples

    monkeypatch.setattr(samples, "SAMPLE_DIR", tmp_path / "sample")
    url = "postgresql://u:secret@localhost:1/x"
    done = wdh("demo", *args, env={"WDH_DATABASE_URL": url, **env})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "secret" not in done.stderr
    if env.get("WDH_ENVIRONMENT") == "prod":  # a JSON line, as production's logs are
        assert json.loads(done.stderr)["event"].startswith(message)
    else:
        assert done.stderr.startswith(f"wdh: error: {message}")
    assert not (tmp_path / "sample").exists()


@pytest.mark.parametrize(
    ("env", "json_line"),
    [
        ({"WDH_ENVIRONMENT": "prod"}, True),
        ({"WDH_ENVIRONMENT": "prod", "WDH_LOG_FORMAT": "console"}, False),
        ({"WDH_LOG_FORMAT": "json"}, True),
        ({}, False),
    ],
)
def test_a_wrong_setting_is_said_in_the_log_format_the_environment_asks_for(
    env: dict[str, str], json_line: bool
) -> None:
    """Production's log collector reads JSON lines: a wrong setting there was a line of
    text, the format being a setting too. It is taken from the variables themselves."""
    done = wdh("history", env={**env, "WDH_LOG_LEVEL": "LOUD"})
    assert done.returncode == 2
    said = "invalid setting WDH_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"
    if json_line:
        line = json.loads(done.stderr)
        assert line["event"].startswith(said) and line["exit_code"] == 2
    else:
        assert done.stderr.startswith(f"wdh: error: {said}")


def test_the_demo_in_production_without_a_warehouse_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused by the migrations too (no embedded Postgres in production), but only after
    the samples were written, V2 folders included: into the operators' share, given as
    --data-dir, they would win over the month's own workbooks."""
    monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    monkeypatch.delenv("WDH_DBT_DATABASE_URL", raising=False)
    share = tmp_path / "share"
    done = wdh("demo", "--data-dir", str(share), env={"WDH_ENVIRONMENT": "prod"})
    assert done.returncode == 2
    assert json.loads(done.stderr)["event"] == (
        "wdh demo never runs in production (WDH_ENVIRONMENT=prod), nor does the embedded Postgres"
    )
    assert not share.exists()


@pytest.mark.parametrize("period", ["2024-11", "2029-01"])  # a month there, one not there
def test_a_production_load_without_a_warehouse_says_so_before_reading(
    month: Path, monkeypatch: pytest.MonkeyPatch, period: str
) -> None:
    monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    env = {"WDH_ENVIRONMENT": "prod", "WDH_LOG_LEVEL": "INFO"}
    done = wdh("load", "trustee_performance", "--period", period, "--data-dir", str(month), env=env)
    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == [
        "WDH_ENVIRONMENT=prod needs WDH_DATABASE_URL (no embedded Postgres)"
    ]  # nothing read, discovered, or recorded first


@pytest.mark.db
def test_a_stop_once_the_month_committed_says_it_is_loaded(
    month: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str, fresh_tables: None
) -> None:
    from workdatahub import quality

    def stop(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(quality, "record", stop)
    common = ["--period", "2024-11", "--data-dir", str(month), "--max-reject-rate", "0.5"]
    done = wdh("load", "trustee_performance", *common)
    assert done.returncode == 130
    assert re.fullmatch(  # (after the warning that the fixture's 合计 row is off)
        r"wdh: error: aborted after the load committed: raw\.trustee_performance 2024-11 "
        r"was loaded before the stop \(2 rows, load [0-9a-f-]{36}\); its quality metrics were "
        r"not recorded",
        done.stderr.splitlines()[-1],
    ), done.stderr


def test_sample_writes_beside_the_operators_folders_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wdh sample` without --out writes to data/sample, not to WDH_DATA_DIR: a sample's
    V2 folder there would supersede the operators' real workbook of the month."""
    from workdatahub import samples

    monkeypatch.setattr(samples, "SAMPLE_DIR", tmp_path / "sample")
    share = tmp_path / "share"
    share.mkdir()
    args = ["sample", "--months", "2024-11", "--rows", "20", "--domain", "trustee_performance"]
    done = wdh(*args, env={"WDH_DATA_DIR": str(share)})
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "sample" / "202411") in done.stdout
    assert list(share.iterdir()) == []


def test_sample_says_which_files_it_kept(tmp_path: Path) -> None:
    args = ["sample", "--months", "2024-11", "--rows", "20", "--out", str(tmp_path)]
    first = wdh(*args, "--domain", "trustee_performance")
    assert first.returncode == 0 and "20 rows" in first.stdout and "kept" not in first.stdout
    again = wdh(*args, "--rows", "30", "--domain", "trustee_performance")
    assert again.returncode == 0 and "kept (exists; --overwrite rewrites it)" in again.stdout
    assert "30 rows" not in again.stdout
    rewritten = wdh(*args, "--rows", "30", "--domain", "trustee_performance", "--overwrite")
    assert "30 rows" in rewritten.stdout and "kept" not in rewritten.stdout


@pytest.mark.db
def test_rejects_of_a_replaced_load_and_beyond_the_limit_are_said_so(
    month: Path, tmp_path: Path, pg_url: str, fresh_tables: None
) -> None:
    """`wdh rejects --load-id` of a load whose rows a later load replaced says so (they
    are not the month's current rejects); a list cut by --limit says how many it left out."""
    common = ["--period", "2024-11", "--data-dir", str(month), "--max-reject-rate", "0.5"]
    first = json.loads(wdh("load", "trustee_performance", *common, "--json").stdout)
    args = ["rejects", "trustee_performance", "-p", "2024-11"]
    current = wdh(*args, "--load-id", first["load_id"])
    assert f"load {first['load_id']} (succeeded), 1 rejects in 1 rows" in current.stdout
    second = json.loads(wdh("load", "trustee_performance", *common, "--json").stdout)
    replaced = wdh(*args, "--load-id", first["load_id"])
    assert replaced.returncode == 0, replaced.stderr
    assert (
        f"load {first['load_id']} (succeeded; replaced since by a later load), 1 rejects in 1 rows"
    ) in replaced.stdout
    as_json = json.loads(wdh(*args, "--load-id", first["load_id"], "--json").stdout)
    assert as_json["status"] == "succeeded" and as_json["replaced"] is True
    # the column as the operator finds it: the header the load recorded, beside the name
    assert as_json["rejects"][0]["header"] == "净值"
    assert "net_value (净值)" in replaced.stdout
    latest = wdh(*args, "--out", str(tmp_path / "rejects.csv"))
    assert f"load {second['load_id']} (succeeded), 1 rejects" in latest.stdout
    written = (tmp_path / "rejects.csv").read_bytes()
    assert written.startswith(
        "\ufefffile,sheet,row,column,value,reason,raw_row,header\r\n".encode()
    )
    rows = list(csv.reader(written.decode("utf-8-sig").splitlines()))
    assert rows[1][2:6] == ["3", "net_value", "abc", "not a number: 'abc'"]
    assert rows[1][7] == "净值"
    assert json.loads(rows[1][6])["net_value"] == "abc"
    assert "more" not in latest.stdout
    # the cell's value as a reject quotes it (a load id may hold the letters `abc`)
    reject_line = next(line for line in latest.stdout.splitlines() if "'abc'" in line)
    cut = wdh(*args, "--limit", "0")
    assert "… 1 more (--limit N, or --out FILE / --json for all)" in cut.stdout
    assert reject_line not in cut.stdout and "'abc'" not in cut.stdout


@pytest.mark.db
def test_rejects_of_a_load_of_no_rows_are_replaced_by_a_later_load(
    tmp_path: Path, pg_url: str, fresh_tables: None
) -> None:
    """A load whose every row was rejected (allowed by --max-reject-rate 1) left no rows to
    look for: it is replaced once a later load replaces the month."""
    path = trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx")
    bad = [[2024, 11, f"P{i}", "C1", "5%", "abc", 1] for i in range(2)]
    write_workbook(path, {"S": [TRUSTEE_HEADER, *bad]})
    common = ["--period", "2024-11", "--data-dir", str(tmp_path), "--json"]
    empty = json.loads(wdh("load", "trustee_performance", *common, "--max-reject-rate", "1").stdout)
    assert empty["status"] == "succeeded" and empty["rows_loaded"] == 0
    args = ["rejects", "trustee_performance", "-p", "2024-11", "--load-id", empty["load_id"]]
    assert f"load {empty['load_id']} (succeeded), 2 rejects" in wdh(*args).stdout
    good = [[2024, 11, f"P{i}", "C1", "5%", "1", 1] for i in range(2)]
    write_workbook(path, {"S": [TRUSTEE_HEADER, *good]})
    assert json.loads(wdh("load", "trustee_performance", *common).stdout)["rows_loaded"] == 2
    replaced = wdh(*args)
    assert f"load {empty['load_id']} (succeeded; replaced since by a later load)" in replaced.stdout


@pytest.mark.db
def test_refusals_show_in_json_and_in_the_dry_run(
    month: Path, pg_url: str, fresh_tables: None
) -> None:
    common = ["--period", "2024-11", "--data-dir", str(month), "--max-reject-rate", "0.1"]
    planned = wdh("load", "trustee_performance", *common, "--plan-only", "--json")
    assert planned.returncode == 0  # a dry run; the summary says a load would be refused
    summary = json.loads(planned.stdout)
    assert summary["status"] == "planned" and summary["threshold_exceeded"] is True
    refused = wdh("load", "trustee_performance", *common, "--json")
    assert refused.returncode == 1 and "1 of 3 rows rejected" in refused.stderr
    summary = json.loads(refused.stdout)
    assert summary["status"] == "refused" and summary["threshold_exceeded"] is True
    assert summary["rows_loaded"] == 0 and summary["rows_rejected"] == 1
    shown = wdh("rejects", "trustee_performance", "--period", "2024-11")
    assert f"load {summary['load_id']} (refused), 1 rejects in 1 rows" in shown.stdout
    # a load id of another month, or none recorded, is named as such
    load_id = summary["load_id"]
    other = wdh("rejects", "trustee_performance", "-p", "2024-10", "--load-id", load_id)
    assert other.returncode == 2 and other.stderr == (
        f"wdh: error: load {load_id} is a load of trustee_performance 2024-11, not of "
        "trustee_performance 2024-10\n"
    )
    unknown = "00000000-0000-0000-0000-000000000000"
    none = wdh("rejects", "trustee_performance", "-p", "2024-11", "--load-id", unknown)
    assert none.returncode == 2 and f"load {unknown} is not recorded" in none.stderr
    fine = wdh("load", "trustee_performance", *common[:5], "0.5", "--plan-only", "--json")
    assert fine.returncode == 0 and json.loads(fine.stdout)["threshold_exceeded"] is False


@pytest.mark.db
def test_the_same_file_is_not_appended_twice(month: Path, pg_url: str, fresh_tables: None) -> None:
    import psycopg

    common = ["--period", "2024-11", "--data-dir", str(month), "--max-reject-rate", "0.5"]
    first = wdh("load", "trustee_performance", *common, "--mode", "append")
    assert first.returncode == 0, first.stderr
    assert "loaded 2 rows into raw.trustee_performance (appended)" in first.stdout
    again = wdh("load", "trustee_performance", *common, "--mode", "append")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "was loaded already by load" in again.stderr and "--mode delete_insert" in again.stderr
    with psycopg.connect(pg_url) as conn:
        count = conn.execute(
            "select count(*) from raw.trustee_performance where report_date = '2024-11-01'"
        ).fetchone()
    assert count == (2,)
    replaced = wdh("load", "trustee_performance", *common)
    assert "(the month's 2 old rows replaced)" in replaced.stdout
    # the month's rows now come from the replacing load: appending the file is refused again
    assert wdh("load", "trustee_performance", *common, "--mode", "append").returncode == 2
    with psycopg.connect(pg_url) as conn:
        conn.execute("delete from raw.trustee_performance where report_date = '2024-11-01'")
    # with the rows gone, the file may be appended again
    after = wdh("load", "trustee_performance", *common, "--mode", "append")
    assert after.returncode == 0, after.stderr


@pytest.mark.parametrize(
    ("url", "pieces", "said"),
    [
        ("postgresql://wdh:s3cr%zzet@127.0.0.1:5432/db", ["s3cr", "zzet"], "not a connection"),
        ("postgresql://wdh:p@ss%word@127.0.0.1:5432/db", ["ss%w", "p@ss"], "holds a raw @"),
        ("postgresql://wdh:pa/ss9@127.0.0.1:5432/db", ["pa/ss", "ss9"], "holds a raw /"),
        ("postgresql://wdh:pa#ss9@127.0.0.1:5432/db", ["pa#ss", "ss9"], "raw #, which would be"),
        ("postgresql://wdh:pa?ss9@127.0.0.1:5432/db", ["pa?ss", "ss9"], "raw ?, which would be"),
        ("host=127.0.0.1 user=u password=abc zzsecret dbname=db", ["abc", "zzsecret"], "not a"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [["history"], ["env"], ["db", "url"], ["db", "shell", "-c", "select 1"], ["load", "x"]],
    ids=" ".join,
)
def test_a_malformed_url_is_reported_without_its_password(
    url: str, pieces: list[str], said: str, command: list[str], month: Path
) -> None:
    """Every command that needs the warehouse refuses the URL in one line (exit 2), never
    showing its password: libpq's own message quotes the token it could not read, and the
    settings it would give dbt and psql would carry pieces of it."""
    if command == ["load", "x"]:
        command = ["load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month)]
    done = wdh(*command, env={"WDH_DATABASE_URL": url})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert said in done.stderr
    for piece in pieces:
        assert piece not in done.stdout + done.stderr, piece


@pytest.mark.parametrize("json_output", [False, True])
def test_output_cut_short_by_a_closed_pipe_is_no_refusal(tmp_path: Path, json_output: bool) -> None:
    """`wdh check … | head -1`: the reader goes away; the command ends quietly, as one
    killed by SIGPIPE does (141), not with 1, which means "threshold exceeded". With
    `--json` (one long text, cut short without an error when written at once) it ended 0."""
    bad = [[2024, 11, f"P{i:05d}", "C01", "abc", 1, 1] for i in range(3000)]
    path = write_workbook(
        trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx"),
        {"S": [TRUSTEE_HEADER, *bad, [2024, 11, "P1", "C1", "5%", 1, 2]]},
    )
    code, stderr = _cut_short(
        "check", "trustee_performance", str(path), "--max-reject-rate", "1", "--limit", "3000",
        *(["--json"] if json_output else []),
    )  # fmt: skip
    assert code == 141, stderr
    assert stderr == ""


def _cut_short(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`wdh ARGS | head -1`: its exit code and stderr once the reader went away after a
    line."""
    from tests.warehouse import running

    command = [sys.executable, "-m", "workdatahub.cli", *args]
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with running(command, env={**os.environ, **(env or {})}, **options) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        return process.wait(120), stderr


@pytest.mark.db
def test_db_shell_cut_short_by_a_closed_pipe_exits_as_killed_by_sigpipe(pg_url: str) -> None:
    """`wdh db shell -c … | head -1`: psql dies of SIGPIPE; 141, not 2 (a failed command)."""
    select = "select generate_series(1, 200000)"
    code, stderr = _cut_short("db", "shell", "-c", select, env={"WDH_DATABASE_URL": pg_url})
    assert code == 141, stderr


def test_a_small_sheets_rejects_show_the_digits_the_workbook_holds(tmp_path: Path) -> None:
    """Sheets of any size are scanned: a rejected number reads as the cell holds it, not
    as fastexcel prints a double (342100662.199999988)."""
    path = write_workbook(
        trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx"),
        {"S": [TRUSTEE_HEADER, [2024, 11, "P1", "C1", 342100662.2, 1, 2]]},
    )
    done = wdh("check", "trustee_performance", str(path), "--json", "--max-reject-rate", "1")
    assert done.returncode == 0, done.stderr
    (reject,) = json.loads(done.stdout)["rejects"]
    assert (reject["column"], reject["value"]) == ("return_rate", "342100662.2")


def test_history_on_a_database_without_the_migrations_is_one_line(pg_url: str, month: Path) -> None:
    """A warehouse that was never migrated (or a role without rights): one line naming
    the failure and what to do, exit 3, no traceback; a load says so too. `wdh db upgrade`
    then migrates it, given any libpq connection string (here the keyword form)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import conninfo

    name = f"wdh_unmigrated_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
        for command in (["history"], ["rejects", "trustee_performance", "--period", "2024-11"]):
            done = wdh(*command, env={"WDH_DATABASE_URL": url})
            assert (done.returncode, done.stdout) == (3, ""), done.stderr
            assert done.stderr == (
                'wdh: error: the warehouse failed: relation "wdh.load_log" does not exist '
                "(is it migrated? `wdh db upgrade`)\n"
            )
        load = ["load", "trustee_performance", "--period", "2024-11", "--data-dir", str(month)]
        # refused (a reject over the threshold), and loaded (the load's row is written before
        # the read: its failure is reported then, not waited on)
        for extra in ([], ["--max-reject-rate", "1"]):
            done = wdh_process(*load, *extra, env={"WDH_DATABASE_URL": url})
            assert done.returncode == 3, done.stderr
            assert "Traceback" not in done.stderr
            # the load looks at the warehouse's migration before it writes anything
            assert (
                done.stderr == "wdh: error: the warehouse is not migrated: run `wdh db upgrade`\n"
            )
        keywords = conninfo.make_conninfo("", **conninfo.conninfo_to_dict(url))
        assert "://" not in keywords
        done = wdh("db", "upgrade", env={"WDH_DATABASE_URL": keywords})
        assert done.returncode == 0, done.stderr
        assert wdh("history", env={"WDH_DATABASE_URL": keywords}).returncode == 0
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'drop database "{name}"')


@pytest.mark.db
def test_db_shell_runs_every_c_command_in_order(pg_url: str) -> None:
    env = {"WDH_DATABASE_URL": pg_url}
    first, second = "select 'first' as a", "select 'second' as b"
    done = wdh_process("db", "shell", "-c", first, "-c", second, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index("first") < done.stdout.index("second")
    # a command that fails is the input's (2; psql says why), not "threshold exceeded" (1)
    failed = wdh_process("db", "shell", "-c", "select nonsense", env=env)
    assert failed.returncode == 2 and 'column "nonsense" does not exist' in failed.stderr


@pytest.mark.db
def test_db_shell_as_the_reader_sees_what_analysts_see(pg_url: str) -> None:
    env = {"WDH_DATABASE_URL": pg_url}
    done = wdh_process("db", "shell", "--as", "wdh_reader", "-c", "select current_user", env=env)
    assert done.returncode == 0 and "wdh_reader" in done.stdout, done.stderr
    seen = wdh_process("db", "shell", "--as", "wdh_reader", "-c", "table audit.loads", env=env)
    assert seen.returncode == 0, seen.stderr
    refused = wdh_process(
        "db", "shell", "--as", "wdh_reader", "-c", "select * from wdh.load_log", env=env
    )
    assert refused.returncode == 2 and "permission denied for schema wdh" in refused.stderr


@pytest.mark.parametrize("signals", [1, 2])
def test_a_terminated_command_says_so_in_one_line(tmp_path: Path, signals: int) -> None:
    """SIGTERM (`kill`, `timeout`, a supervisor) stops a command as Ctrl-C does: cleanup
    runs, one line, exit 143; a second SIGTERM meanwhile does not kill it by signal."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "workdatahub.cli", "sample", "--rows", "2000000", "--months",
         "2024-01..2024-01", "--domain", "annuity_performance", "--out", str(tmp_path)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    caught = 1 << (signal.SIGTERM - 1)  # the command's handler is in (Linux: SigCgt)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        status = Path(f"/proc/{process.pid}/status").read_text()
        mask = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        if int(mask.split()[1], 16) & caught:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # writing the sample
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    if signals == 2:
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == "wdh: error: terminated"
    assert "Traceback" not in err


def test_a_ctrl_c_while_the_command_starts_is_one_line() -> None:
    """A Ctrl-C while `wdh` is still importing its command line (the first few tenths of a
    second) ends as one later does: one line, exit 130, no traceback. The signal is sent
    from inside the import (when `click` is looked up), so the test does not race it."""
    child = textwrap.dedent(
        """
        import os, signal, sys

        class StopOnClick:
            def find_spec(self, name, path=None, target=None):
                if name == "click":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, StopOnClick())
        sys.argv = ["wdh", "--help"]
        from workdatahub.entry import main

        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert (done.returncode, done.stdout) == (130, ""), done.stderr
    assert done.stderr == "wdh: error: interrupted\n"
    # the script the project installs calls this entry point
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["wdh"] == "workdatahub.entry:main"


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        ("garbage", 2, "is not a connection string"),
        ("mysql://u:s3cr3t@h/db", 2, "is not a connection string"),
        ("postgresql://u:s3cr3t@127.0.0.1:1/db", 3, "cannot connect to the warehouse"),
    ],
)
def test_db_upgrade_fails_in_one_line_as_every_command_does(url: str, code: int, said: str) -> None:
    done = wdh("db", "upgrade", env={"WDH_DATABASE_URL": url})
    assert done.returncode == code
    (line,) = done.stderr.splitlines()
    assert said in line and "s3cr3t" not in line


def test_history_shows_a_failed_reads_reason_beside_the_workbooks_name() -> None:
    from workdatahub.cli import MESSAGE_SHOWN, _short_message

    reason = "sheet 'S': missing required column(s) 规模"
    assert _short_message(f"/data/2024 03/收集数据/受托部/2024年03月受托业绩.xlsx: {reason}") == (
        f"2024年03月受托业绩.xlsx: {reason}"
    )
    other = "trustee_performance 2024-02: no folder /data/202402/收集数据"
    assert _short_message(other) == other
    cut = _short_message("x" * 500)
    assert len(cut) == MESSAGE_SHOWN and cut.endswith("…")


def test_text_tables_show_control_characters_escaped_and_long_values_cut() -> None:
    """A cell's line break would split its row, an ESC sequence would reach the terminal
    (colour, cursor moves): shown escaped; a 300-character value is cut (`--json` has it)."""
    from workdatahub.cli import _table

    rows = [[3, "plan_code", "a\nb\tc\x1b[31mred"], [4, "plan_name", "名" * 300]]
    lines = _table(rows, ["row", "column", "value"]).splitlines()
    assert len(lines) == 4  # header, rule, one line per row
    assert "\x1b" not in "".join(lines) and "a\\nb\\tc\\x1b[31mred" in lines[2]
    assert lines[3].endswith("…") and len(lines[3]) < 80


def test_wdh_env_exports_the_data_folder_only_when_it_is_set_and_keeps_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval "$(wdh env)"` before `make dev` or `make demo` must not put the settings'
    default data folder in place of theirs (data/sample, which the Makefile sets only when
    WDH_DATA_DIR is unset)."""
    url = {"WDH_DATABASE_URL": "postgresql://wdh@db.example:5432/workdatahub"}
    monkeypatch.delenv("WDH_DATA_DIR", raising=False)
    exported = wdh("env", env=url)
    assert exported.returncode == 0, exported.stderr
    assert "export WDH_DBT_HOST=db.example" in exported.stdout
    assert "WDH_DATA_DIR" not in exported.stdout
    given = wdh("env", env={**url, "WDH_DATA_DIR": str(tmp_path)})
    assert f"export WDH_DATA_DIR={tmp_path}" in given.stdout
    # nor a DAGSTER_HOME set already (a production box's instance) by the local clone's
    instance = tmp_path / "dagster-home"
    kept = wdh("env", env={**url, "DAGSTER_HOME": str(instance)})
    assert f"export DAGSTER_HOME={instance}\n" in kept.stdout


@pytest.mark.parametrize("command", [["history"], ["check", "trustee_performance", "x.xlsx"]])
def test_an_empty_period_is_no_month_for_any_command(command: list[str]) -> None:
    """`--period ''` (an unset shell variable) was no filter for `history` and an error
    elsewhere: an error everywhere, before anything is read."""
    done = wdh(*command, "--period", "")
    assert (done.returncode, done.stderr) == (
        2,
        "wdh: error: period '' is not a month like 2024-11\n",
    )
