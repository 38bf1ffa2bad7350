"""Structured logs: readable in a terminal, JSON in production; always to stderr.

Every line can carry domain, partition and load id (bind them with `log.bind(...)`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any

import structlog

from workdatahub.settings import get_settings, mask_url

_configured = False


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written: Dagster and test runners swap the
    stream to capture it, and a logger bound to an old, closed stream would fail."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and ("://" in value or "password=" in value.lower()):
            event[key] = mask_url(value)
    return event


def configure_logging(force: bool = False) -> None:
    global _configured
    if _configured and not force:
        return
    settings = get_settings()
    level = getattr(logging, settings.log_level)
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if settings.json_logs
        # (NO_COLOR, https://no-color.org: set and not empty, no colours)
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # third-party chatter stays out of the operator's terminal unless asked for
    for noisy in ("pgserver", "alembic", "fasteners"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # the database driver's own warnings (an error it ignored while closing a lost
    # connection, before the load is retried) come out as log lines like ours, not as a
    # bare line on stderr (Python's last-resort handler)
    driver = logging.getLogger("psycopg")
    if not any(isinstance(h, _AsOurs) for h in driver.handlers):
        driver.addHandler(_AsOurs())
        driver.propagate = False
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    _configured = True


class _AsOurs(logging.Handler):
    """A standard-library log record, written by structlog as this project's lines are."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = structlog.get_logger(record.name)
        logger.log(record.levelno, record.getMessage(), logger=record.name)


def get_logger(**context: Any) -> Any:
    configure_logging()
    return structlog.get_logger("workdatahub").bind(**context)
