"""data_sources.yml: the shipped file parses; mistakes name the domain and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from workdatahub.errors import ConfigError
from workdatahub.sources.spec import SourcesFile, parse_sources

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "data_sources.yml").read_text(encoding="utf-8"))


def test_shipped_file_declares_the_three_domains(sources: SourcesFile) -> None:
    assert set(sources.domains) == {"trustee_performance", "annuity_performance", "annuity_income"}
    trustee = sources.domain("trustee_performance")
    assert trustee.key == ["report_date", "plan_code", "company_code"]
    assert [c.name for c in trustee.loaded_columns] == [
        "report_date", "plan_code", "company_code", "return_rate", "net_value", "fund_scale",
    ]  # fmt: skip


def test_unknown_domain_names_the_known_ones(sources: SourcesFile) -> None:
    with pytest.raises(ConfigError, match="unknown domain 'nope'.*trustee_performance"):
        sources.domain("nope")


def _mutated(raw: dict[str, Any], change: Any) -> str:
    data = copy.deepcopy(raw)
    change(data["domains"]["trustee_performance"])
    with pytest.raises(ConfigError) as error:
        parse_sources(data)
    return str(error.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(table='x"; drop table raw.t; --'), "domain 'trustee_performance': table"),
        (lambda d: d["columns"][2].update(name="Plan Code"), "columns.2.name"),
        (lambda d: d["columns"][3].update(rules=["no_such_rule"]), "unknown rule 'no_such_rule'"),
        (lambda d: d["discovery"].update(base="../../etc/{YYYYMM}"), "discovery.base"),
        (lambda d: d["discovery"].update(base="/etc/{YYYYMM}"), "discovery.base"),
        (lambda d: d["discovery"].update(patterns=["../*.xlsx"]), "discovery.patterns"),
        (lambda d: d["discovery"].update(patterns=["*" * 40]), "discovery.patterns"),
        (lambda d: d.update(key=["missing"]), "key column 'missing'"),
        (lambda d: d.update(partition_column="plan_code"), "must have type month"),
        (lambda d: d["columns"][3].update(type="float"), "columns.3.type"),
        (lambda d: d.update(colums=[]), "colums"),
        (lambda d: d.update(max_reject_rate=2), "max_reject_rate"),
        (lambda d: d["columns"][3].update(name="load_id"), "reserved"),
    ],
)
def test_mistakes_name_domain_and_field(raw: dict[str, Any], change: Any, expected: str) -> None:
    message = _mutated(raw, change)
    assert expected in message
    assert "\n" not in message
