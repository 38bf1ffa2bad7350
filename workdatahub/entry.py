"""The `wdh` command's entry point. Importing the command line takes a few tenths of a
second; a Ctrl-C in that time would otherwise end in a traceback of the import. It is kept
until the import is done, then ends the command as a Ctrl-C later does: one line, exit 130."""

from __future__ import annotations

import signal
import threading


def main() -> None:
    stopped: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda number, frame: stopped.append(number))
    try:
        from workdatahub import cli
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if stopped:
        cli._fail("interrupted", 130)
    cli.main()
