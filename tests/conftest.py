"""Shared fixtures. Tests that touch the database use a real Postgres: the embedded one
(its own database, `workdatahub_test`, so a developer's demo data is left alone) or the
server named by WDH_DATABASE_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("WDH_DATABASE_NAME", "workdatahub_test")
os.environ.setdefault("WDH_LOG_LEVEL", "WARNING")

from workdatahub.settings import reset_settings
from workdatahub.sources.spec import DomainSpec, SourcesFile, load_sources

reset_settings()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sources() -> SourcesFile:
    return load_sources(ROOT / "data_sources.yml")


@pytest.fixture
def trustee(sources: SourcesFile) -> DomainSpec:
    return sources.domain("trustee_performance")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A migrated warehouse database."""
    from workdatahub.warehouse.db import database_url
    from workdatahub.warehouse.migrate import upgrade

    url = database_url()
    upgrade(url)
    return url


@pytest.fixture
def pg(pg_url: str) -> Iterator[object]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def fresh_tables(pg: object) -> None:
    """Empty the raw tables and the audit tables (each test starts from nothing)."""
    pg.execute(  # type: ignore[attr-defined]
        "truncate raw.trustee_performance, raw.annuity_performance, raw.annuity_income, "
        "wdh.data_quality_metrics, wdh.rejected_rows, wdh.load_log"
    )


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


# Sheets are read by the compiled scanner whatever their size; these modules' tests read
# them by fastexcel, the reader of a machine without a C compiler (tests/test_reader_native
# and test_reader_split run the same tests scanned and cut in pieces).
FASTEXCEL_MODULES = frozenset({"tests.test_reader", "tests.test_hostile"})


@pytest.fixture(autouse=True)
def fastexcel_reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.module.__name__ in FASTEXCEL_MODULES:
        from workdatahub.excel import reader

        monkeypatch.setattr(reader, "NATIVE_MIN_BYTES", 1 << 62)
