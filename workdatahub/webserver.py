"""The Dagster webserver in a process group of its own, for what needs the UI running for a
while (`make screenshot`, the UI's tests): started on a free local port with this project's
code location, answered at /server_info before it is handed out, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_webserver(dagster_home: Path, log: Path) -> Iterator[str]:
    """The webserver's URL while it runs; its output goes to `log`. Raises RuntimeError
    (with the end of the log) when it exits or does not answer within START_TIMEOUT_S."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"),
             "-m", "workdatahub.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: all of it is stopped afterwards
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url, process, log)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the webserver exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the webserver did not answer within {START_TIMEOUT_S} s")
