"""`wdh demo`'s terminal: its run's warnings and failures once each, in one line; a Ctrl-C is
one line and exit 130, not a summary of older loads."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace as Fake

import psycopg
import pytest

from workdatahub.demo import _interrupted, _lost_interrupts, _said

ROOT = Path(__file__).resolve().parent.parent


def _entry(level: int, message: str) -> Fake:
    return Fake(level=level, user_message=message, dagster_event=None)


def _failure(cls_name: str, message: str, cause: Fake | None = None) -> Fake:
    error = Fake(cls_name=cls_name, message=message, cause=cause)
    return Fake(is_failure=True, event_specific_data=Fake(error=error))


def test_the_runs_lines_are_said_once_each_without_exception_classes() -> None:
    month = "/d/202402/受托业绩.xlsx: not a readable workbook"
    entries = [
        _entry(logging.INFO, "loaded"),  # not a warning: not said
        _entry(logging.ERROR, month),  # said again, with more, by the failure
        _entry(logging.WARNING, "fct_a: rows per month not counted"),
        _entry(logging.WARNING, "fct_a: rows per month not counted"),
        Fake(level=logging.ERROR, user_message="step failed", dagster_event=object()),
    ]
    failed = f"dagster._core.definitions.events.Failure: {month} (2024-01 loaded)\n"
    events = [
        Fake(is_failure=False, event_specific_data=None),
        _failure("Failure", failed),
        _failure("Failure", failed),  # the step's failure and the run's
    ]
    assert _said(entries, events) == [
        "warning: fct_a: rows per month not counted",
        f"failed: {month} (2024-01 loaded)",
    ]


def test_an_interrupt_is_told_from_a_failure() -> None:
    interrupted = _failure(
        "DagsterExecutionError",
        "step failed",
        cause=Fake(cls_name="DagsterExecutionInterruptedError", message="", cause=None),
    )
    assert _interrupted(Fake(all_events=[interrupted]))
    assert not _interrupted(Fake(all_events=[_failure("Failure", "a workbook")]))


def test_a_ctrl_c_python_could_not_raise_is_kept_not_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dagster raises a Ctrl-C from its signal handler in whatever code runs; arriving in a
    finaliser or a gc callback it was printed as "Exception ignored in …" with a traceback,
    dropped, and the demo's run went on to its end and its summary (exit 0)."""

    class Finalised:
        def __init__(self, error: type[BaseException]) -> None:
            self.error = error

        def __del__(self) -> None:
            raise self.error()

    said: list[BaseException | None] = []  # what the hook before it is given
    monkeypatch.setattr(sys, "unraisablehook", lambda u: said.append(u.exc_value))
    with _lost_interrupts() as lost:
        Finalised(KeyboardInterrupt)  # (dropped at once: its __del__ raises, unraisable)
        Finalised(ValueError)  # any other error is said as Python says it
    assert [type(e) for e in lost] == [KeyboardInterrupt]
    assert [type(e) for e in said] == [ValueError]
    Finalised(KeyboardInterrupt)  # after the block, said as before
    assert [type(e) for e in said] == [ValueError, KeyboardInterrupt] and len(lost) == 1


@pytest.mark.db
def test_a_ctrl_c_during_the_demos_run_is_one_line_and_no_summary(
    tmp_path: Path, pg_url: str
) -> None:
    """Dagster turns the Ctrl-C into a failed step and a failed run, and the demo went on to
    print a summary whose rows were older loads, and Dagster's stack trace. Now: one line
    naming the run, exit 130."""
    env = {
        **os.environ,
        "WDH_DATABASE_URL": pg_url,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "WDH_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "workdatahub.cli", "demo", "--months", "2024-01..2024-02",
               "--data-dir", str(tmp_path / "data"), "--named-warehouse"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        since = conn.execute("select now()").fetchone()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            began = conn.execute(  # the run's first load: its steps are running
                "select 1 from wdh.load_log where started_at > %s limit 1", since
            ).fetchone()
            if began:
                break
            time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("wdh: error: interrupted: run "), err
    assert "Traceback" not in err and "Stack Trace" not in err
    assert "rows loaded" not in out  # no summary of older loads
