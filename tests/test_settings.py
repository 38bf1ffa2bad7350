"""Settings: every variable documented; passwords never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workdatahub.errors import ConfigError
from workdatahub.settings import Settings, mask_url

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*(WDH_[A-Z_]+)=", text, flags=re.M))
    expected = {f"WDH_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, expected - documented


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://loader:s3cret@db:5432/wh", "postgresql://loader:***@db:5432/wh"),
        ("postgresql+psycopg2://u:p%40ss@h/d", "postgresql+psycopg2://u:***@h/d"),
        ("host=db password=s3cret user=u", "host=db password=*** user=u"),
        ("postgresql://postgres@/wh?host=/tmp", "postgresql://postgres@/wh?host=/tmp"),
        (
            "cannot connect to postgresql://a:b@c/d: refused",
            "cannot connect to postgresql://a:***@c/d: refused",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_prod_refuses_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from workdatahub.warehouse.db import database_url

    monkeypatch.delenv("WDH_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="prod needs WDH_DATABASE_URL"):
        database_url(Settings(environment="prod"))


def test_database_url_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDH_DATABASE_URL", "postgresql://u:topsecret@h/d")
    settings = Settings()
    assert "topsecret" not in repr(settings) and "topsecret" not in str(settings.model_dump())


def test_relative_paths_are_the_project_folders_wherever_a_command_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`WDH_HOME=.wdh` (as .env.example shows it) from dbt_project/ or anywhere else is the
    project's .wdh, not a second, empty warehouse beside the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WDH_HOME", ".wdh")
    monkeypatch.setenv("WDH_DATA_DIR", "data/sample")
    monkeypatch.setenv("WDH_SOURCES_FILE", "data_sources.yml")
    settings = Settings()
    assert settings.home == ROOT / ".wdh"
    assert settings.data_dir == ROOT / "data" / "sample"
    assert settings.sources_file == ROOT / "data_sources.yml"
    monkeypatch.setenv("WDH_DATA_DIR", str(tmp_path / "x"))
    assert Settings().data_dir == tmp_path / "x"
