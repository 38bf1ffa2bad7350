"""`make screenshot`: the asset graph as the UI shows it, for the README.

Starts the Dagster webserver in its own process group on a free port, lets headless
Chromium render the asset-graph page, saves docs/asset-graph.png, and stops the server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "asset-graph.png"
# the global lineage: raw and reference -> staging -> marts
PAGE = os.environ.get(
    "WDH_SCREENSHOT_PAGE",
    "asset-groups",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshot: chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    port = free_port()
    home = Path(os.environ.get("DAGSTER_HOME") or ROOT / ".wdh" / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "workdatahub.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("screenshot: the webserver did not start", file=sys.stderr)
                    return 1
                time.sleep(1)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
                 "--window-size=1600,1000", "--virtual-time-budget=30000",
                 f"--screenshot={OUT}", f"{url}/{PAGE}"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=180,
            )  # fmt: skip
        print(f"wrote {OUT}")
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
