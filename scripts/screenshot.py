"""`make screenshot`: the asset graph as the UI shows it, for the README.

Starts the Dagster webserver (workdatahub.webserver), lets headless Chromium render the
asset-graph page, saves docs/asset-graph.png, and stops the server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from workdatahub.webserver import running_webserver

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "asset-graph.png"
# the global lineage: raw and reference -> staging -> marts
PAGE = os.environ.get(
    "WDH_SCREENSHOT_PAGE",
    "asset-groups",
)


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshot: chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    home = Path(os.environ.get("DAGSTER_HOME") or ROOT / ".wdh" / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    try:
        with running_webserver(home, home / "screenshot-webserver.log") as url:
            OUT.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run(
                    [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--hide-scrollbars",
                     "--window-size=1600,1000", "--virtual-time-budget=30000",
                     f"--screenshot={OUT}", f"{url}/{PAGE}"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=180,
                )  # fmt: skip
    except RuntimeError as error:
        print(f"screenshot: {error}", file=sys.stderr)
        return 1
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
