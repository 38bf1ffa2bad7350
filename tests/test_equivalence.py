"""The fast path (vectorised, per-distinct, fast number paths) and a row-by-row reference
implementation of the rules (tests/reference_rules.py) give the same cleaned rows and the
same rejects, on the sample workbooks (every quirk of the contract and planted rejects, in
three month layouts, all three domains) and on a workbook of awkward spellings.

Both sides start from the same reader output, so this compares cleansing and validation.
"""

from __future__ import annotations

import itertools
import random
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import reference_rules
from tests.workbooks import ANNUITY_PERFORMANCE_HEADER, TRUSTEE_HEADER, write_workbook
from workdatahub import pipeline
from workdatahub.cleansing.cleanse import cleanse
from workdatahub.cleansing.values import FAST_PATHS, PARSERS, blank_to_null
from workdatahub.excel.reader import ROW, read_sheet
from workdatahub.pipeline import check_file
from workdatahub.samples import write_samples
from workdatahub.sources.spec import DomainSpec, SourcesFile
from workdatahub.validation.schema import validate

NOV = date(2024, 11, 1)
NULLS = ["", "-", "N/A", "null", "无", "暂无"]
MONTHS = [date(2024, 10, 1), date(2024, 11, 1), date(2024, 12, 1)]  # every sample layout


def fast_path(frame: pl.DataFrame, spec: DomainSpec, period: date) -> reference_rules.Checked:
    validated = validate(cleanse(frame, spec, period), spec)
    return reference_rules.Checked(
        valid=validated.valid.rows(named=True),
        rejects=[tuple(r) for r in validated.rejects.rows()],  # type: ignore[misc]
        rejected_rows=validated.rejected_rows.rows(named=True),
    )


def assert_same(frame: pl.DataFrame, spec: DomainSpec, period: date) -> reference_rules.Checked:
    fast = fast_path(frame, spec, period)
    reference = reference_rules.check_rows(frame.iter_rows(named=True), spec, period)
    assert fast.rejects == reference.rejects
    assert [r[ROW] for r in fast.valid] == [r[ROW] for r in reference.valid]
    for mine, theirs in zip(fast.valid, reference.valid, strict=True):
        assert mine == theirs, f"row {mine[ROW]}"
    assert fast.rejected_rows == reference.rejected_rows
    return fast


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    return write_samples(tmp_path_factory.mktemp("samples"), MONTHS, rows=400, seed=11)


@pytest.mark.parametrize("domain", ["annuity_performance", "annuity_income", "trustee_performance"])
def test_sample_workbooks_fast_path_equals_reference(
    sources: SourcesFile, samples: list[Any], domain: str
) -> None:
    spec = sources.domain(domain)
    for sample in (s for s in samples if s.domain == domain):
        sheet = read_sheet(sample.path, spec)
        result = assert_same(sheet.frame, spec, sample.period)
        # the planted rejects are the rows rejected, and every other row is loaded
        assert len(result.rejected_rows) == sample.expected_rejects
        assert len(result.valid) == sheet.rows_read - sample.expected_rejects


def _awkward_performance_rows() -> list[list[Any]]:
    """Each row varies a few cells of a valid row; column order as the header."""
    base: dict[str, Any] = dict.fromkeys(ANNUITY_PERFORMANCE_HEADER)
    base.update(
        {
            "月度": "202411", "业务类型": "企年受托", "计划类型": "单一计划", "计划代码": "P0001",
            "计划名称": "计划", "组合代码": "F12345", "客户名称": "某公司", "期初资产规模": 1,
            "当期收益率": "5%", "机构名称": "北京",
        }
    )  # fmt: skip
    variants: list[dict[str, Any]] = [
        {},
        # months: every spelling, full-width, spaced, serial numbers, dates, bad ones
        *[
            {"月度": m}
            for m in [
                "2024-11",
                "2024-11-30",
                "2024/11",
                "2024/11/05",
                "20241115",
                "2024年11月",
                "2024年 11 月",
                "24年11月",
                "2024年11月5日",
                "２０２４年１１月",
                "2024.11",
                "45597",
                "45626.0",
                " 202411 ",
                datetime(2024, 11, 30),
                202411,
                20241101,
                45610,
                "2024-11-01 00:00:00",
                "2024年13月",
                "abc",
                "202410",
                "2024-10",
                "1899-01",
                "2024-00",
                "11/2024",
                "10000",
                "2024-02-31",
                # impossible calendar days in the loaded month: rejects, not 2024-11
                "2024-11-31",
                "20241131",
                "2024年11月31日",
                "2024-11-31 00:00:00",
                "2024-11-30 00:00:00",
                "-",
                "无",
                # January, or October typed as a number (Excel keeps 2024.10 as 2024.1)
                "2024.1",
                2024.1,
                "2024.10",
                2024.11,
                "2024.01",
                # placeholders typed full width or in other capitals
                "－",
                "ＮＵＬＬ",
            ]
        ],
        # money: separators, currencies, brackets, full width, exponents, placeholders
        *[
            {"期初资产规模": v}
            for v in [
                "1,234.5",
                " 1,234.50 ",
                "¥1,234.5",
                "￥1,234.5",
                "$12",
                "€12",
                "£12",
                "(1,234.5)",
                "（1,234.5）",
                "１２３４.５",
                "-3",
                "+7",
                "1.23456789",
                "0.12345",
                "0.12355",
                "2.00005",
                "1.5E-05",
                "1e5",
                "1.",
                ".5",
                "-.5",
                "007",
                "12345678901234.1234",
                "99999999999999.9999",
                "abc",
                "12abc",
                "1,2,3x",
                "inf",
                "nan",
                "--1",
                "N/A",
                "null",
                "暂无",
                "",
                1234.5,
                0.1,
                -2.25,
                1e-7,
                123456789.1234,
                # commas only as thousands separators; beyond numeric(18,4)
                "1,234,567.5",
                "(12,345)",
                "１，２３４",
                "1.234,5",
                "1,5",
                "12,34",
                "0,5",
                "1e30",
                "100000000000000",
                1e20,
            ]
        ],
        # rates: percent signs, percent figures, brackets
        *[
            {"当期收益率": v}
            for v in [
                "5%",
                "5.5 %",
                "５％",
                "3.5",
                "-3.5",
                "0.035",
                "1",
                "0.0351234567",
                "(1.5)",
                "x%",
                "12%%",
                4.2173,
                0.042173,
                -0.5,
                "1e400",
                "1,5%",
                "0,5%",
                "1,234%",
                "1e12",
                "1000000%",
                150,
            ]
        ],
        # codes and defaults
        {"计划代码": "1P0290"},
        {"计划代码": "1P0807"},
        {"计划代码": " Ｐ０２９０ "},
        {"计划代码": None, "计划类型": "集合计划"},
        {"计划代码": "-", "计划类型": "单一计划"},
        {"计划代码": None, "计划类型": "其他"},
        {"计划代码": None, "计划类型": None},
        {"组合代码": None, "业务类型": "职年受托"},
        {"组合代码": "N/A", "业务类型": "职年投资"},
        # placeholders however they are typed: full width (a Chinese input method), capitals
        {"计划代码": "－", "计划类型": "单一计划"},
        {"计划代码": " Ｎ/Ａ ", "计划类型": "集合计划"},
        {"组合代码": "ｎｕｌｌ", "计划类型": "集合计划"},
        {"组合代码": "NULL", "业务类型": "职年受托"},
        {"客户名称": "Ｎ/Ａ"},
        {"客户名称": "n/a-1"},
        {"集团企业客户号": "－"},
        {"期末资产规模": "－"},
        {"当期收益率": "Null"},
        {"组合代码": None, "计划类型": "集合计划"},
        {"组合代码": None, "计划类型": "其他"},
        {"组合代码": "FF1"},
        {"组合代码": 12345},
        {"组合代码": "12345.0"},
        {"集团企业客户号": "C600123"},
        {"集团企业客户号": "CC1"},
        {"集团企业客户号": 600123},
        {"子企业号": 600212700017},
        # Excel date and boolean cells in code columns
        {"计划代码": datetime(2024, 1, 1)},
        {"计划代码": True},
        {"组合代码": datetime(2024, 3, 5)},
        {"组合代码": False},
        {"集团企业客户号": datetime(2024, 1, 2)},
        {"计划代码": "2024-01"},  # a text code that only looks like a month: kept
        {"业务类型": "企年保险"},
        {"业务类型": None},
        # company names
        *[
            {"客户名称": n}
            for n in [
                "  中国 平安 保险  ",
                "中国平安保险\u3000集团",
                "平安银行(深圳)分行",
                "ＡＢＣ有限公司",
                "中国石化及下属子企业",
                "中国石化(团托)",
                "中国石化-养老",
                "中国石化-福利",
                "中国石化已转出",
                "中国石化(已转出)",
                "中国石化（存量）",
                "存量-中国石化",
                "原中国石化",
                "原-中国石化",
                "中国石化（原）",
                "原平市人民医院",
                "某有限公司（太原）",
                "某集团（北京本部）",
                "中国石化_已转出",
                "中国石化-转移终止",
                "中国石化及下属子企业(团托)",
                "中国原子能",
                "已转出",
                "(团托)",
            ]
        ],
    ]
    rows = []
    for change in variants:
        row = dict(base)
        row.update(change)
        rows.append(list(row.values()))
    return rows


def test_awkward_spellings_fast_path_equals_reference(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    rows = _awkward_performance_rows()
    path = write_workbook(tmp_path / "a.xlsx", {"规模明细": [ANNUITY_PERFORMANCE_HEADER, *rows]})
    frame = read_sheet(path, spec).frame
    result = assert_same(frame, spec, NOV)
    # the corpus does reach both sides of every rule
    reasons = {reason.split(":")[0] for _, _, _, reason in result.rejects}
    assert {
        "not a number",
        "not a rate or percentage",
        "not a date or month",
        "out of range for numeric(18,4)",
        "out of range for numeric(10,6)",
        "a date, not a code (Excel may have turned the code into a date)",
        "a TRUE/FALSE cell, not a code",
        "period mismatch",
        "required value missing",
        "not one of 企年受托, 企年投资, 职年受托, 职年投资",
    } <= reasons
    assert len(result.valid) > len(rows) // 2
    money = {r[ROW]: r["opening_assets"] for r in result.valid}
    assert Decimal("-1234.5") in money.values() and Decimal("1.2346") in money.values()
    assert {Decimal("1234567.5"), Decimal("-12345"), Decimal("1234")} <= set(money.values())
    by_value = {value: (column, reason) for _, column, value, reason in result.rejects}
    for value in ("1.234,5", "1,5", "12,34", "0,5"):
        assert by_value[value] == ("opening_assets", f"not a number: '{value}'"), value
    assert by_value["1,5%"] == ("period_return", "not a rate or percentage: '1,5%'")
    assert by_value["1e30"] == ("opening_assets", "out of range for numeric(18,4): '1e30'")
    assert by_value["1e12"] == ("period_return", "out of range for numeric(10,6): '1e12'")
    for value in ("2024-11-31", "20241131", "2024年11月31日", "2024-11-31 00:00:00"):
        assert by_value[value] == ("period", f"not a date or month: '{value}'"), value
    assert by_value["true"][1] == "a TRUE/FALSE cell, not a code: 'true'"
    assert by_value["2024-03-05 00:00:00"] == (
        "portfolio_code",
        "a date, not a code (Excel may have turned the code into a date): '2024-03-05 00:00:00'",
    )
    assert "2024-01" not in by_value


def test_trustee_keys_years_and_duplicates_fast_path_equals_reference(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    rows: list[list[Any]] = [
        [2024, 11, "P1", "C1", "5%", "1,234.5", "¥100"],
        [2024, 11, "P2", "C1", 3.5, "abc", 1],
        [2024, 11, "P1", "C1", 0.01, 1, 1],  # duplicate key of the first row
        [2024, 11, "P1", "C1", 0.02, 2, 2],  # and again
        [2024, 11, "P2", "C1", 0.02, 2, 2],  # the key of a rejected row: kept
        [24, 11, "P3", "C1", 0.01, 1, 1],  # 24 means 2024
        [2024, 10, "P3", "C1", 0.01, 1, 1],
        [2024, 13, "P4", "C1", 0.01, 1, 1],
        [None, 11, "P5", "C1", 0.01, 1, 1],
        ["二〇二四", 11, "P6", "C1", 0.01, 1, 1],
        [2024, "11.0", "P7", 1001, "(1.5)", "-", "N/A"],
        [2024, 11, None, "C1", 0.01, 1, 1],
        [2024, 11, "P8", "Ｃ１", 0.01, 1, 1],  # the same company code as C1 after NFKC
        [2024, 11, "P8", "C1", 0.01, 1, 1],  # so this repeats the key above
    ]
    path = write_workbook(tmp_path / "t.xlsx", {"Sheet1": [TRUSTEE_HEADER, *rows]})
    result = assert_same(read_sheet(path, spec).frame, spec, NOV)
    duplicates = [r for r in result.rejects if r[3].startswith("duplicate key")]
    assert [r[0] for r in duplicates] == [4, 5, 15]


def test_a_failed_year_or_month_is_the_only_reject_of_its_row(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """年/月 that do not parse are the row's reject; report_date, derived from them and so
    empty, adds no "required value missing" of its own (on both sides)."""
    spec = sources.domain("trustee_performance")
    rows: list[list[Any]] = [
        ["二零二四", 11, "P1", "C1", 0.01, 1, 1],
        [2024, "十一月", "P2", "C1", 0.01, 1, 1],
        ["2024年", "11月", "P3", "C1", 0.01, 1, 1],  # a unit after the number: no reject
        ["2024年度", "11月", "P4", "C1", 0.01, 1, 1],
        [None, 11, "P5", "C1", 0.01, 1, 1],  # no year at all: the derived month is missing
        [2024, 13, "P6", "C1", 0.01, 1, 1],  # both parse, no month: the derived month says so
        [2024, 11, "P7", "C1", 0.01, 1, 1],
    ]
    path = write_workbook(tmp_path / "t.xlsx", {"Sheet1": [TRUSTEE_HEADER, *rows]})
    result = assert_same(read_sheet(path, spec).frame, spec, NOV)
    assert result.rejects == [
        (2, "report_year", "二零二四", "not a whole number: '二零二四'"),
        (3, "report_month", "十一月", "not a whole number: '十一月'"),
        (5, "report_year", "2024年度", "not a whole number: '2024年度'"),
        (6, "report_date", " / 11", "required value missing"),
        (7, "report_date", "2024 / 13", "年/月 do not form a valid month"),
    ]
    assert [r[ROW] for r in result.valid] == [4, 8]


def _checked_in_parts(path: Path, spec: DomainSpec, period: date) -> None:
    """`check_file` with its valid rows sent part by part (as a load streams them) gives
    what it gives checked whole, and the parts sent are the valid rows, in order."""
    whole = check_file(spec, path, period).validated
    sent: list[pl.DataFrame] = []
    parts = check_file(spec, path, period, on_valid=lambda valid, _: sent.append(valid))
    assert len(sent) > 2  # several parts, each validated on its own
    for name in ("valid", "rejects", "rejected_rows"):
        assert getattr(parts.validated, name).equals(getattr(whole, name)), name
    assert pl.concat(sent).equals(whole.valid)


@pytest.mark.parametrize("rows", [0, 1, 9_999, 10_000, 19_999, 20_000, 35_000, 50_000, 500_000])
def test_streamed_parts_start_small_and_double(rows: int) -> None:
    """The production schedule: every row in exactly one part, in order; 10,000 rows first,
    then twice the part before; a rest too small for a part of its own joins the last."""
    sizes = pipeline.part_sizes(rows)
    assert sum(sizes) == rows
    if rows < 2 * pipeline.FIRST_PART_ROWS:
        assert sizes == [rows]
        return
    assert sizes[0] == pipeline.FIRST_PART_ROWS
    for before, after in itertools.pairwise(sizes[:-1]):
        assert after == 2 * before
    assert sizes[-1] >= pipeline.FIRST_PART_ROWS  # the rest, never a sliver


def test_a_sheet_checked_in_parts_is_checked_as_whole(
    sources: SourcesFile, samples: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "FIRST_PART_ROWS", 3)
    monkeypatch.setattr(pipeline, "PART_GROWTH", 1)
    for sample in samples:
        _checked_in_parts(sample.path, sources.domain(sample.domain), sample.period)
    # duplicate keys in a later part than their first occurrence (parts of 3 rows)
    spec = sources.domain("trustee_performance")
    rows: list[list[Any]] = [
        [2024, 11, "P1", "C1", "5%", "1,234.5", "¥100"],
        [2024, 11, "P2", "C1", 3.5, "abc", 1],  # rejected (abc)
        [2024, 11, "P3", "C1", 0.01, 1, 1],
        [2024, 11, "P1", "C1", 0.01, 1, 1],  # duplicate of row 2, one part later
        [2024, 11, "P2", "C1", 0.02, 2, 2],  # the key of a rejected row: kept
        [2024, 11, "P4", "C1", 0.01, 1, 1],
        [2024, 11, "P3", "C1", 0.01, 1, 1],  # duplicate of row 4
        [2024, 11, "P2", "C1", 0.01, 1, 1],  # duplicate of row 6
        [2024, 11, "P5", None, 0.01, 1, 1],
        [2024, 11, "P1", "C1", 0.01, 1, 1],  # duplicate of row 2, three parts later
        [2024, 11, "P6", "C1", 0.01, 1, 1],
        [2024, 11, "P6", "C1", 0.01, 1, 1],  # duplicate within a part
    ]
    path = write_workbook(tmp_path / "t.xlsx", {"Sheet1": [TRUSTEE_HEADER, *rows]})
    _checked_in_parts(path, spec, NOV)
    rejects = check_file(spec, path, NOV).validated.rejects
    duplicates = rejects.filter(pl.col("reason").str.starts_with("duplicate key"))["row"]
    assert duplicates.to_list() == [5, 8, 9, 11, 13]


def _plain_numbers() -> list[str]:
    """Numbers as Excel cells read as text, and near misses the fast paths must leave alone;
    some beyond the columns' range (those are rejects, from the full parser)."""
    rng = random.Random(3)
    cells = [
        "0", "-0", "+3", "00012", "5.", ".5", "-.5", "1e5", "1E+05", "1.5E-05", "2.5e-7",
        "0.12345", "0.12355", "2.00005", "1.23456789", "1e300", "1E-300", "3.5", "-3.5", "1",
        "-1", "1.0000001", "0.035", "12.3456785", "1e4", "9999.9999995", "inf", "NaN",
        " 12", "12 ", "1,234", "(12)", "１２", "12%", "1e", "e5", "--1", "+-1", "1.2.3", "",
    ]  # fmt: skip
    for _ in range(2000):
        value = rng.uniform(-1e9, 1e9) * 10 ** rng.randint(-12, 8)
        cells += [repr(value), f"{value:.{rng.randint(0, 8)}f}", f"{value:.6e}"]
    return cells


@pytest.mark.parametrize("kind", sorted(FAST_PATHS))
def test_fast_paths_agree_with_the_full_parsers(kind: str) -> None:
    fast = FAST_PATHS[kind]
    raw = pl.col("v")
    full = PARSERS[kind](blank_to_null(raw, NULLS))
    assert full.error is not None
    out = (
        full.prepare(pl.LazyFrame({"v": _plain_numbers()}))
        .select(
            "v",
            handled=fast.handles(raw, NULLS),
            quick=fast.value(pl.when(fast.handles(raw, NULLS)).then(raw)),
            full=full.value,
            error=full.error,
        )
        .collect()
    )
    taken = out.filter(pl.col("handled") & pl.col("quick").is_not_null())
    assert taken.height > 2000  # the fast path does take the plain numbers
    assert taken["quick"].to_list() == taken["full"].to_list()
    assert taken["error"].null_count() == taken.height
    # and only plain ASCII numbers: spaces, separators, full-width digits go the full way
    assert not set(taken["v"]) & {" 12", "12 ", "1,234", "(12)", "１２", "12%", ""}


@pytest.mark.db
def test_binary_copy_loads_what_a_csv_copy_loads(
    sources: SourcesFile, samples: list[Any], tmp_path: Path, pg_url: str
) -> None:
    """The loader's binary COPY encoding against Postgres' own CSV parsing, same rows."""
    import uuid

    import psycopg
    from psycopg import sql

    from workdatahub.warehouse import loader

    spec = sources.domain("annuity_performance")
    path = write_workbook(
        tmp_path / "a.xlsx",
        {"规模明细": [ANNUITY_PERFORMANCE_HEADER, *_awkward_performance_rows()]},
    )
    months = [(read_sheet(path, spec).frame, NOV)]
    months += [(read_sheet(s.path, spec).frame, s.period) for s in samples if s.domain == spec.name]
    valid = pl.concat(
        [validate(cleanse(frame, spec, period), spec).valid for frame, period in months]
    ).with_columns(pl.int_range(pl.len()).cast(pl.Int64).alias(ROW))  # unique source rows
    plan = loader.build_plan(
        spec, NOV, mode="append", source_file="202411/文件.xlsx", source_sheet="规模明细",
        files=[], rows_read=valid.height, valid=valid, rejects=valid.clear(),
        rejected_rows=valid.clear(), load_id=uuid.uuid4(),
    )  # fmt: skip
    rows = loader.valid_rows_for_copy(plan, spec)
    assert rows.height > 1000 and rows["opening_assets"].null_count() > 0
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in rows.columns)
    with psycopg.connect(pg_url) as conn:
        for name in ("as_csv", "as_binary"):
            conn.execute(
                sql.SQL(
                    "create temp table {} (like raw.annuity_performance including defaults)"
                ).format(sql.Identifier(name))
            )
        with conn.cursor().copy(
            sql.SQL("copy as_csv ({}) from stdin with (format csv)").format(columns)
        ) as copy:
            for chunk in loader._csv_chunks(rows):
                copy.write(chunk)
        with conn.cursor().copy(
            sql.SQL("copy as_binary ({}) from stdin with (format binary)").format(columns)
        ) as copy:
            for chunk in loader.binary_chunks(rows, loader.copy_types(spec)):
                copy.write(chunk)
        differ = conn.execute(
            sql.SQL(
                "select count(*) from ((select {c} from as_csv except all select {c} from "
                "as_binary) union all (select {c} from as_binary except all select {c} "
                "from as_csv)) d"
            ).format(c=columns)
        ).fetchone()
        counts = conn.execute("select (select count(*) from as_binary), count(*) from as_csv")
        assert differ == (0,)
        assert counts.fetchone() == (rows.height, rows.height)


@pytest.mark.db
def test_binary_copy_field_encodings_round_trip(pg_url: str) -> None:
    """Every type the binary encoder writes, edge values and nulls, read back as sent."""
    import uuid

    import psycopg

    from workdatahub.warehouse import loader

    load_id = uuid.uuid4()
    money = ["0", "-0.0001", "0.0001", "99999999999999.9999", "-99999999999999.9999", "1", None]
    rates = ["0", "-0.000001", "9999.999999", "-9999.999999", "0.05", "-1.5", None]
    frame = pl.DataFrame(
        {
            "t": ["", "a", "中文 (全角)", "x" * 5000, "tab\there", "quote\"'", None],
            "d": [date(2000, 1, 1), date(1999, 12, 31), date(1990, 1, 1), date(2099, 12, 1),
                  date(2024, 11, 1), date(1970, 1, 1), None],
            "m": pl.Series(money).cast(pl.Decimal(18, 4)),
            "r": pl.Series(rates).cast(pl.Decimal(10, 6)),
            "b": [0, -1, 2**62, -(2**62), 2**31, 7, None],
            "i": pl.Series([0, -1, 2**31 - 1, -(2**31), 5, 6, None], dtype=pl.Int32),
            "u": [str(load_id)] * 7,
        }
    )  # fmt: skip
    types = ["text", "date", "numeric(18,4)", "numeric(10,6)", "bigint", "integer", "uuid"]
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "create temp table round_trip (t text, d date, m numeric(18,4), r numeric(10,6), "
            "b bigint, i integer, u uuid)"
        )
        with conn.cursor().copy("copy round_trip from stdin with (format binary)") as copy:
            for chunk in loader.binary_chunks(frame, types):
                copy.write(chunk)
        back = conn.execute("select t, d, m, r, b, i, u from round_trip").fetchall()
    expected = [
        (*row[:6], uuid.UUID(row[6])) for row in frame.iter_rows()
    ]  # polars gives Decimal, date, int: what psycopg reads back
    assert back == expected


def test_compiled_copy_rows_are_the_pyarrow_rows() -> None:
    """The compiled row assembly (scanner.c's wdh_copy_rows) writes the bytes the pyarrow
    one writes: every field type, nulls in each, a batch sliced out of a larger frame, and a
    null text whose Arrow span still holds bytes (which must not be sent)."""
    import uuid

    import numpy as np
    import pyarrow as pa

    from workdatahub.excel import native
    from workdatahub.warehouse import loader

    if native.library() is None:
        pytest.skip("no C compiler: loads use the pyarrow assembly only")
    # "bbb" is behind a null: offsets 0, 3, 6, 9 with the middle entry invalid
    spans = pa.LargeStringArray.from_buffers(
        3, pa.py_buffer(np.array([0, 3, 6, 9], np.int64)), pa.py_buffer(b"aaabbbccc"),
        pa.py_buffer(np.packbits(np.array([1, 0, 1], np.uint8), bitorder="little")),
    )  # fmt: skip
    rows = 9
    frame = pl.DataFrame(
        {
            "t": ["", "a", "中文 (全角)", "x" * 5000, None, "tab\there", None, "z", "q"],
            "s": pl.concat([pl.Series(spans), pl.Series(["d", None, "", "e", "f", "g"])]),
            "d": [date(2000, 1, 1), None, *[date(2024, 11, 1)] * 7],
            "m": pl.Series(["0", "-0.0001", None, "99999999999999.9999", *["1.5"] * 5]).cast(
                pl.Decimal(18, 4)
            ),
            "r": pl.Series(["0.05", None, "-9999.999999", *["0"] * 6]).cast(pl.Decimal(10, 6)),
            "b": [0, -1, 2**62, None, 5, 6, 7, 8, 9],
            "i": pl.Series([0, -1, 2**31 - 1, -(2**31), None, 6, 7, 8, 9], dtype=pl.Int32),
            "u": [str(uuid.uuid4())] * rows,
        }
    )
    types = ["text", "text", "date", "numeric(18,4)", "numeric(10,6)", "bigint", "integer", "uuid"]
    for batch in (frame, frame.slice(1, 6), frame.slice(8, 1), frame.slice(0, 0)):
        compiled = loader._binary_rows(batch, types)
        assert bytes(compiled) == loader._binary_rows(batch, types, compiled=False)
    assert len(loader._binary_rows(frame, types)) > 5000  # the rows are there, not nothing


def test_compiled_copy_rows_never_write_past_the_buffer() -> None:
    """Given less room than the rows need, the compiled join stops and says so (-1), and the
    bytes after its room are untouched."""
    import numpy as np

    from workdatahub.excel import native

    lib = native.library()
    if lib is None:
        pytest.skip("no C compiler: loads use the pyarrow assembly only")
    records = np.arange(3, dtype=">i8")  # three fixed 8-byte fields, one column
    kinds, widths = np.array([0], np.int64), np.array([8], np.int64)
    data, none = np.array([records.ctypes.data], np.int64), np.zeros(1, np.int64)
    need = 3 * (2 + 8)
    for room in (need - 1, need - 8, 0):
        out = np.full(need + 16, 0xAB, np.uint8)
        written = lib.wdh_copy_rows(
            3, 1, kinds.ctypes.data, widths.ctypes.data, data.ctypes.data,
            none.ctypes.data, none.ctypes.data, out.ctypes.data, room,
        )  # fmt: skip
        assert written == -1
        assert (out[room:] == 0xAB).all()
    out = np.zeros(need, np.uint8)
    written = lib.wdh_copy_rows(
        3, 1, kinds.ctypes.data, widths.ctypes.data, data.ctypes.data,
        none.ctypes.data, none.ctypes.data, out.ctypes.data, need,
    )  # fmt: skip
    assert written == need
    assert out.tobytes() == b"".join(b"\x00\x01" + int(v).to_bytes(8, "big") for v in records)


def _ties(rng: random.Random) -> dict[str, list[str]]:
    """Numbers whose next digit after the kept ones is a 5 (a half, or just above or below
    it), as a cell may hold them: money at its 5th decimal, rates at their 7th, percent
    figures (bare above 1, or with %) at their 5th; a float cannot hold most of them."""
    money, rates = [], []
    for _ in range(3000):
        sign = rng.choice(["", "-"])
        whole = str(rng.randint(0, 10 ** rng.randint(0, 13)))
        tail = rng.choice(["5", "50", "5000001", "4999999", "49", "51"])
        money.append(f"{sign}{whole}.{rng.randint(0, 9999):04d}{tail}")
        rates.append(f"{sign}0.{rng.randint(0, 999999):06d}{tail}")
        figure = f"{sign}{rng.randint(1, 999)}.{rng.randint(0, 9999):04d}{tail}"
        rates += [figure, f"{figure}%"]
    # text with more decimals than any cell needs (beyond the 23rd they are dropped)
    long = ["2.00004999999999999999999999", "-0.00005000000000000000000001"]
    money += long + [f"{rng.randint(0, 99)}.{rng.getrandbits(100)}" for _ in range(200)]
    rates += [
        "0.00000049999999999999999995", "49.99994999999999999999999995%",
        "1.000000000000000000000001", "-0.0000005000000000000000000001",
    ]  # fmt: skip
    return {"money": money, "rate": rates}


@pytest.mark.parametrize("kind", ["money", "rate"])
def test_halves_round_as_the_reference_rounds_them(kind: str) -> None:
    """Money and rates are rounded half away from zero from the digits the cell holds, by
    the full parsers and the fast paths alike, as the reference rounds them with Python's
    Decimal (a float route rounded about one percent-figure half in thirteen the other way)."""
    cells = _ties(random.Random(11))[kind]
    reference = getattr(reference_rules, f"parse_{kind}")
    expected = [reference(cell)[0] for cell in cells]
    parsed = PARSERS[kind](blank_to_null(pl.col("v"), NULLS))
    out = parsed.prepare(pl.LazyFrame({"v": cells})).select(parsed.value).collect()
    assert out.to_series().to_list() == expected
    fast = FAST_PATHS[kind]
    plain = [cell for cell in cells if re.fullmatch(fast.pattern, cell)]  # the cells it takes
    assert len(plain) > len(cells) / 3
    quick = pl.DataFrame({"v": plain}).select(fast.value(pl.col("v"))).to_series().to_list()
    assert quick == [reference(cell)[0] for cell in plain]
