"""The UI for real: start the Dagster webserver (own process group), ask its GraphQL API
for the assets, partitions and checks, then stop the whole group."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workdatahub.webserver import running_webserver

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

QUERY = """
{
  assetNodes {
    assetKey { path }
    partitionDefinition { description }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    with running_webserver(home, home / "webserver.log") as url:
        yield url


def graphql(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload.get("errors")
    return payload["data"]  # type: ignore[no-any-return]


def test_ui_serves_assets_partitions_and_checks(webserver: str) -> None:
    nodes = graphql(webserver, QUERY)["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {"raw/annuity_performance", "marts/fct_monthly_branch_product_line"} <= set(by_key)
    assert "Monthly" in by_key["raw/annuity_performance"]["partitionDefinition"]["description"]
    checks = {c["name"] for c in by_key["raw/annuity_performance"]["assetChecksOrError"]["checks"]}
    assert "reject_rate" in checks
    mart_checks = by_key["marts/fct_monthly_branch_product_line"]["assetChecksOrError"]["checks"]
    assert any(c["name"] == "summary_reconciles_to_fct_annuity_income" for c in mart_checks)


def test_ui_lists_sensors_and_schedule(webserver: str) -> None:
    data = graphql(
        webserver,
        """
        { workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
            ... on RepositoryLocation { repositories { sensors { name } schedules { name } } }
        } } } } }
        """,
    )
    repositories = data["workspaceOrError"]["locationEntries"][0]["locationOrLoadError"][
        "repositories"
    ]
    sensors = {s["name"] for s in repositories[0]["sensors"]}
    assert {"workbook_arrival", "alert_on_run_failure", "monthly_freshness"} <= sensors
    assert {s["name"] for s in repositories[0]["schedules"]} == {"monthly_previous_month"}
