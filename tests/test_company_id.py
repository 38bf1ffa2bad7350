"""The temporary company_id: stable, well-formed, and equal to the values dbt computes.

The expected ids below were computed by the dbt macro `temp_company_id` on Postgres 16,
so these tests pin the Python twin to the SQL one without needing a database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from workdatahub.warehouse.company_id import temp_company_id

ID_SHAPE = re.compile(r"^IN[A-Z2-7]{16}$")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("某某集团有限公司", "INVTJQ3VVSC3CHDKPG"),
        ("abc", "INXJ4BNP4PAHH6UQKB"),
        ("", "IN4OYMIQUY7QOBJGX3"),
    ],
)
def test_known_values(name: str, expected: str) -> None:
    assert temp_company_id(name) == expected


def test_missing_name_uses_the_empty_string_id() -> None:
    # dbt hashes coalesce(customer_name, ''): nameless rows share one documented id
    assert temp_company_id(None) == temp_company_id("") == "IN4OYMIQUY7QOBJGX3"


@pytest.mark.parametrize("name", ["某某集团有限公司", "A", "上海测试科技(团托)", "x" * 500])
def test_shape_is_in_plus_16_base32_characters(name: str) -> None:
    assert ID_SHAPE.fullmatch(temp_company_id(name))


def test_stable_across_processes_and_name_sensitive() -> None:
    # another interpreter with another string-hash seed gives the same id
    other = subprocess.run(
        [sys.executable, "-c", "from workdatahub.warehouse.company_id import temp_company_id; "
         "print(temp_company_id('某某集团有限公司'))"],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert other == temp_company_id("某某集团有限公司")
    assert temp_company_id("某某集团有限公司") != temp_company_id("某某集团有限公司本部")
