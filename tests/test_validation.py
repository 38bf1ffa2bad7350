"""Cleanse + Pandera on whole workbooks: valid rows and rejects with file/row/column/value."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.workbooks import (
    ANNUITY_INCOME_HEADER,
    ANNUITY_PERFORMANCE_HEADER,
    TRUSTEE_HEADER,
    write_workbook,
)
from workdatahub.pipeline import check_file
from workdatahub.sources.spec import SourcesFile

NOV = date(2024, 11, 1)


def test_trustee_rejects_name_row_column_value_reason(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    rows = [
        TRUSTEE_HEADER,
        [2024, 11, "P1", "C1", "5%", "1,234.5", "¥100"],  # row 2 valid
        [2024, 11, "P2", "C1", 3.5, "abc", 1],  # row 3 net_value not a number
        [2024, 11, "P1", "C1", 0.01, 1, 1],  # row 4 duplicate key of row 2
        [2024, 10, "P3", "C1", 0.01, 1, 1],  # row 5 another month
        [2024, 11, None, "C1", 0.01, 1, 1],  # row 6 plan code missing
        [2024, 13, "P4", "C1", 0.01, 1, 1],  # row 7 not a month
        [2024, 11, "P5", 1001, "(1.5)", "-", "N/A"],  # row 8 valid: negative rate, nulls
    ]
    result = check_file(spec, write_workbook(tmp_path / "t.xlsx", {"S": rows}), NOV)
    rejects = {
        (r["row"], r["column"]): (r["value"], r["reason"]) for r in result.to_json()["rejects"]
    }
    assert rejects == {
        (3, "net_value"): ("abc", "not a number: 'abc'"),
        (4, "report_date,plan_code,company_code"): (
            "2024-11-01 / P1 / C1",
            "duplicate key: 2024-11-01 / P1 / C1",
        ),
        (5, "report_date"): ("2024 / 10", "period mismatch: row is for 2024-10, loading 2024-11"),
        (6, "plan_code"): (None, "required value missing"),
        (7, "report_date"): ("2024 / 13", "年/月 do not form a valid month"),
    }
    valid = result.validated.valid
    assert valid["_row"].to_list() == [2, 8]
    assert valid["net_value"].to_list() == [Decimal("1234.5"), None]
    assert valid["fund_scale"].to_list() == [Decimal("100"), None]
    assert valid["return_rate"].to_list() == [Decimal("0.05"), Decimal("-0.015")]
    assert valid["company_code"].to_list() == ["C1", "1001"]
    assert result.validated.rows_rejected == 5
    # the quarantine keeps the whole raw row
    assert result.validated.rejected_rows.filter(_row=3)["net_value"].to_list() == ["abc"]


def _performance_row(**overrides: object) -> list[object]:
    base = dict.fromkeys(ANNUITY_PERFORMANCE_HEADER)
    base.update(
        {
            "月度": "202411", "业务类型": "企年受托", "计划类型": "单一计划", "计划代码": "P0001",
            "组合代码": "F12345", "客户名称": " 中国石化 (团托) ", "集团企业客户号": "C600123",
            "期初资产规模": "1,000", "期末资产规模": 1100, "供款": 100, "流失(含待遇支付)": "(10)",
            "当期收益率": "5%", "机构名称": "北京",
        }
    )  # fmt: skip
    base.update(overrides)
    return list(base.values())


def test_annuity_performance_rules_applied(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    rows = [
        ANNUITY_PERFORMANCE_HEADER,
        _performance_row(),
        _performance_row(计划代码="1P0290", 组合代码=None, 业务类型="职年受托"),
        _performance_row(计划代码=None, 计划类型="集合计划", 组合代码=None),
        _performance_row(计划代码=None, 计划类型="其他"),  # row 5 rejected
        _performance_row(业务类型="企年保险"),  # row 6 not an accepted business type
        _performance_row(月度="2024年11月", 期末资产规模="abc"),  # row 7 rejected
    ]
    result = check_file(spec, write_workbook(tmp_path / "a.xlsx", {"规模明细": rows}), NOV)
    valid = result.validated.valid
    assert valid["_row"].to_list() == [2, 3, 4]
    assert valid["plan_code"].to_list() == ["P0001", "P0290", "AN001"]
    assert valid["portfolio_code"].to_list() == ["12345", "QTAN003", "QTAN001"]
    assert valid["customer_name"].to_list() == ["中国石化"] * 3
    assert valid["annuity_account_name"].to_list() == ["中国石化 (团托)"] * 3
    assert valid["annuity_account_no"].to_list() == ["600123"] * 3
    assert valid["group_customer_no"].to_list() == ["C600123"] * 3
    assert valid["outflow_incl_benefits"].to_list() == [Decimal("-10")] * 3
    assert valid["period"].to_list() == [NOV] * 3
    reasons = {(r["row"], r["column"]): r["reason"] for r in result.to_json()["rejects"]}
    assert "plan type" in reasons[(5, "plan_code")]
    assert reasons[(6, "business_type")].startswith("not one of 企年受托")
    assert reasons[(7, "closing_assets")] == "not a number: 'abc'"


def test_a_code_that_was_only_its_prefix_gets_the_default(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    rows = [
        ANNUITY_PERFORMANCE_HEADER,
        _performance_row(组合代码="F", 集团企业客户号="C"),  # the default, not an empty code
        _performance_row(组合代码="F 123", 集团企业客户号="C 600123"),  # trimmed once more
    ]
    result = check_file(spec, write_workbook(tmp_path / "a.xlsx", {"规模明细": rows}), NOV)
    valid = result.validated.valid
    assert valid["portfolio_code"].to_list() == ["QTAN002", "123"]  # (单一计划)
    assert valid["annuity_account_no"].to_list() == [None, "600123"]


def test_income_blank_placeholders_count_as_zero_but_text_rejects(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_income")
    common = ["202411", "企年投资", "集合计划", "P1", "n", "t", "F1", "p", "某公司", "上海"]
    rows = [ANNUITY_INCOME_HEADER, [*common, "-", None, "无", 5], [*common, "abc", 1, 2, 3]]
    result = check_file(spec, write_workbook(tmp_path / "a.xlsx", {"收入明细": rows}), NOV)
    valid = result.validated.valid
    assert valid["fixed_fee"].to_list() == [Decimal(0)]
    assert valid["variable_fee"].to_list() == [Decimal(0)]
    assert valid["rebate"].to_list() == [Decimal(0)]
    assert valid["tax"].to_list() == [Decimal(5)]
    assert result.to_json()["rejects"] == [
        {"row": 3, "column": "fixed_fee", "value": "abc", "reason": "not a number: 'abc'",
         "header": "固费"}
    ]  # fmt: skip


def test_schema_is_built_once_per_spec_and_follows_a_changed_spec(sources: SourcesFile) -> None:
    from workdatahub.validation.schema import schema_for

    spec = sources.domain("annuity_performance")
    assert schema_for(spec) is schema_for(spec)
    # a spec with other accepted values (a changed data_sources.yml) gets its own schema
    column = next(c for c in spec.columns if c.allowed)
    assert column.allowed is not None
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    for entry in data["columns"]:
        if entry["name"] == column.name:
            entry["allowed"] = column.allowed[:1]
    other = type(spec).model_validate(data)
    assert schema_for(other) is not schema_for(spec)
    checks = schema_for(other).columns[column.name].checks
    assert checks[0].statistics["allowed_values"] == column.allowed[:1]


def test_later_parts_get_the_value_checks_only_with_the_same_failures(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the full Pandera schema has passed a frame schema, frames of that schema are
    checked with the schema of the value checks alone (required, accepted values): the
    failures are the same; a frame of another schema gets the full schema again."""
    import polars as pl

    from workdatahub.cleansing.cleanse import cleanse
    from workdatahub.excel.reader import read_sheet
    from workdatahub.validation.schema import _pandera_failures, _schemas

    # a spec object of its own: nothing validated with it yet
    spec = type(sources.domain("annuity_performance")).model_validate(
        sources.domain("annuity_performance").model_dump(by_alias=True, exclude_unset=True)
    )
    rows = [
        ANNUITY_PERFORMANCE_HEADER,
        _performance_row(),
        _performance_row(业务类型="企年保险"),  # row 3 not an accepted business type
        _performance_row(计划类型="其他计划"),  # row 4 neither
        _performance_row(月度=None),  # row 5 required period missing
    ]
    frame = cleanse(
        read_sheet(write_workbook(tmp_path / "a.xlsx", {"规模明细": rows}), spec).frame, spec, None
    ).frame
    schemas = _schemas(spec)
    assert len(schemas.rows.columns) < len(schemas.full.columns)
    assert not schemas.passed
    used: list[str] = []  # which schema each validation ran

    def spied(name: str, validate: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            used.append(name)
            return validate(*args, **kwargs)

        return run

    for name in ("full", "rows"):
        schema = getattr(schemas, name)
        monkeypatch.setattr(schema, "validate", spied(name, schema.validate))
    first = _pandera_failures(frame, spec)  # the full schema
    assert len(schemas.passed) == 1
    again = _pandera_failures(frame, spec)  # the value checks alone
    assert used == ["full", "rows"]
    assert again.sort(pl.all()).equals(first.sort(pl.all()))
    assert {(r["row"], r["column"]) for r in first.iter_rows(named=True)} == {
        (3, "business_type"), (4, "plan_type"), (5, "period"),
    }  # fmt: skip
    # another frame schema (a column of the wrong type) is checked in full, and not passed
    wrong = frame.with_columns(pl.col("opening_assets").cast(pl.Float64))
    assert _pandera_failures(wrong, spec).sort(pl.all()).equals(first.sort(pl.all()))
    assert used == ["full", "rows", "full"]
    assert len(schemas.passed) == 1


def test_a_cell_that_fails_to_parse_is_rejected_for_that_not_for_a_rule_after_it(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """计划代码 written as a date cell, 计划类型 neither 集合计划 nor 单一计划: the code's
    own reason (a date, not a code) comes first, not the default rule's, which only sees
    an empty code."""
    from datetime import datetime

    from tests.workbooks import ANNUITY_PERFORMANCE_HEADER

    spec = sources.domain("annuity_performance")
    row: dict[str, Any] = dict.fromkeys(ANNUITY_PERFORMANCE_HEADER)
    row.update(
        {"月度": "202411", "业务类型": "企年受托", "计划类型": "其他",
         "计划代码": datetime(2024, 1, 1), "计划名称": "计划", "组合代码": "F12345",
         "客户名称": "某公司", "机构名称": "北京"}
    )  # fmt: skip
    path = write_workbook(
        tmp_path / "a.xlsx", {"规模明细": [ANNUITY_PERFORMANCE_HEADER, list(row.values())]}
    )
    rejects = check_file(spec, path, date(2024, 11, 1)).validated.rejects
    reasons = dict(zip(rejects["column"], rejects["reason"], strict=True))
    assert reasons["plan_code"].startswith("a date, not a code"), reasons
