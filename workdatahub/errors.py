"""Expected failures: each carries a one-line reason the operator can act on.

Anything raised as a `WdhError` is printed as one line (never a traceback) and mapped to
an exit code by the CLI. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def printable(value: object) -> str:
    """A path, name or config value as it can appear in a one-line message (a name may
    hold a line break: then it is shown quoted, escapes visible)."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def shares(rate: float, limit: float) -> tuple[str, str]:
    """`rate` and `limit` as percentages with the digits that tell them apart (2,520 of
    50,000 rows against 5% is 5.04% > 5.00%, not 5.0% > 5.0%) and show a small share
    (5 of 50,000 rows: 0.01%, not 0.0%), a small limit too (0.01%, not 0.0%); fixed point,
    one decimal at least, six at most."""
    for digits in range(1, 7):
        shown = f"{rate:.{digits}%}", f"{limit:.{digits}%}"
        small = any(
            share > 0 and float(text.rstrip("%")) == 0
            for share, text in zip((rate, limit), shown, strict=True)
        )
        if shown[0] != shown[1] and not small:
            break
    return shown


def too_many_rejects(rejected: int, read: int, limit: float) -> str:
    """Why a load is refused: more rejected rows than the domain's `max_reject_rate`."""
    rate, most = shares(rejected / read if read else 0.0, limit)
    return f"{rejected} of {read} rows rejected ({rate}) > max_reject_rate {most}"


class WdhError(Exception):
    """An expected failure with a one-line, operator-facing reason."""

    exit_code = 2
    # whether the load log can take the failed load's row (not when the load could not even
    # open its connection, or the warehouse is at another migration)
    recordable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(WdhError):
    """`data_sources.yml` or the settings are wrong; the message names the domain and field."""


class InputError(WdhError):
    """A source file is missing, ambiguous or unreadable; the message names the file."""


class NoWorkbookError(InputError):
    """The month's folder holds no workbook of the domain (yet): nothing to load, unlike a
    workbook that is there but cannot be used (ambiguous, unreadable, refused)."""


class RejectThresholdExceeded(WdhError):
    """The share of rejected rows is above the domain's `max_reject_rate`; `summary`, when
    set, is the refused load's summary (`PartitionResult.summary`)."""

    exit_code = 1

    def __init__(self, message: str, summary: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class Interrupted(WdhError):
    """A Ctrl-C that a framework turned into a failure of its own (a Dagster run): the
    command ends as a Ctrl-C does, with its own line."""

    exit_code = 130


class WarehouseError(WdhError):
    """The database refused or failed; the target table was left as it was."""

    exit_code = 3


class LoadBusyError(WarehouseError):
    """Another load holds the lock for this table and period."""


def loaded_before_stopped(error: BaseException, message: str) -> BaseException:
    """`error`, a stop (Ctrl-C, SIGTERM) that came once the load had committed, noted with
    what it left: the month is loaded (`message`). The stop goes on as a stop."""
    error.wdh_loaded = message  # type: ignore[attr-defined]
    return error


def loaded_note(error: BaseException | None) -> str | None:
    """What `loaded_before_stopped` noted on `error` (or on its cause), if anything."""
    for candidate in (
        error,
        getattr(error, "__cause__", None),
        getattr(error, "__context__", None),
    ):
        note = getattr(candidate, "wdh_loaded", None)
        if note:
            return str(note)
    return None


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM: `kill`, `timeout`, a supervisor): raised in
    the main thread, as Ctrl-C is, so that a load rolls back and records how it ended."""

    def __str__(self) -> str:
        return "terminated (SIGTERM)"
