"""Sample workbooks: deterministic, filed where discovery looks, shaped like the contract.

No database; fastexcel reads the workbooks directly so these tests do not lean on the
project's own reader or cleansing.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import re
import time
import unicodedata
from collections import Counter
from datetime import date
from pathlib import Path

import fastexcel
import pytest

from workdatahub.samples import (
    INCOME_SHEET,
    PERFORMANCE_SHEET,
    SampleFile,
    load_reference,
    name_spellings,
    write_samples,
)
from workdatahub.sources.spec import SourcesFile

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "dbt_project" / "seeds"
# month index k = year*12 + month - 1: 2024-01 is k%2=0, k%3=0, k%4=0; the others follow
JAN, FEB, MAR, AUG = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1), date(2024, 8, 1)
MONTHS = [JAN, FEB, MAR, AUG]
ROWS = 400
ALWAYS_EXCLUDED = ("~$*", ".*", "*.eml")

Rows = list[tuple[str | None, ...]]


def norm(text: str | None) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or ""))


def sheet_rows(path: Path, sheet: str | int) -> Rows:
    reader = fastexcel.read_excel(str(path))
    frame = reader.load_sheet(sheet, header_row=None, skip_rows=0, dtypes="string").to_polars()
    return frame.rows()


def header_index(rows: Rows, marker: str) -> int:
    return next(i for i, row in enumerate(rows) if marker in {norm(c) for c in row})


def data_rows(rows: Rows, marker: str) -> Rows:
    """Rows below the header that are neither blank nor the 合计 line."""
    body = rows[header_index(rows, marker) + 1 :]
    filled = [r for r in body if any(c is not None and c.strip() for c in r)]
    return [r for r in filled if next(c for c in r if c and c.strip()).strip() != "合计"]


def column(rows: Rows, marker: str, *headers: str) -> list[str | None]:
    header = [norm(c) for c in rows[header_index(rows, marker)]]
    wanted = {norm(h) for h in headers}
    position = next(i for i, h in enumerate(header) if h in wanted)
    return [r[position] for r in data_rows(rows, marker)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SampleFile]]:
    out = tmp_path_factory.mktemp("samples")
    return out, write_samples(out, MONTHS, rows=ROWS)


def by(files: list[SampleFile], domain: str, period: date) -> SampleFile:
    return next(f for f in files if f.domain == domain and f.period == period)


# -- determinism and the files on disk ------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    write_samples(tmp_path / "a", [JAN, FEB], rows=120, seed=3)
    write_samples(tmp_path / "b", [JAN, FEB], rows=120, seed=3)
    first, second = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert first == second
    assert len(first) > 10  # workbooks, stale copies, lock, reply and mail files

    other = write_samples(tmp_path / "c", [JAN], rows=120, seed=4)
    assert sha256(other[0].path) != first[str(other[0].path.relative_to(tmp_path / "c"))]


def test_one_sample_file_per_domain_and_month(samples: tuple[Path, list[SampleFile]]) -> None:
    _, files = samples
    assert [(f.domain, f.period) for f in files] == [
        (d, m)
        for m in MONTHS
        for d in ("trustee_performance", "annuity_performance", "annuity_income")
    ]
    for month in MONTHS:
        performance = by(files, "annuity_performance", month)
        assert performance.path == by(files, "annuity_income", month).path


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def test_paths_follow_the_discovery_rules(
    samples: tuple[Path, list[SampleFile]], sources: SourcesFile
) -> None:
    out, files = samples
    for sample in files:
        discovery = sources.domain(sample.domain).discovery
        base = out / discovery.base.replace("{YYYYMM}", f"{sample.period:%Y%m}")
        relative = sample.path.relative_to(base)
        excludes = [*ALWAYS_EXCLUDED, *discovery.exclude]

        def candidates(folder: Path, recursive: bool, d=discovery, x=excludes) -> list[Path]:
            found = folder.rglob("*") if recursive else folder.iterdir()
            return sorted(
                p
                for p in found
                if p.is_file() and _matches(p.name, d.patterns) and not _matches(p.name, x)
            )

        assert _matches(sample.path.name, discovery.patterns)
        assert not _matches(sample.path.name, excludes)
        if sample.domain == "trustee_performance":
            assert candidates(base, recursive=True) == [sample.path]
            continue
        versions = {
            int(p.name[1:]): p
            for p in base.iterdir()
            if p.is_dir() and re.fullmatch(r"V\d+", p.name) and candidates(p, False)
        }
        winner = versions[max(versions)] if versions else base
        assert sample.path.parent == winner
        assert candidates(winner, recursive=False) == [sample.path]
        assert len(relative.parts) in (1, 2)
        newer = "规模及收入数据" in sample.path.name
        assert newer == (sample.period >= date(2024, 7, 1))


def test_discovery_extras_are_on_disk(samples: tuple[Path, list[SampleFile]]) -> None:
    _, files = samples
    jan = by(files, "annuity_performance", JAN).path
    assert jan.parent.name == "V2"
    base = jan.parent.parent
    assert (base / "V1" / jan.name).is_file() and (base / jan.name).is_file()
    assert sha256(base / "V1" / jan.name) != sha256(jan)
    assert (jan.parent / f"~${jan.name}").is_file()
    assert (jan.parent / f"回复_{jan.name}").is_file()
    assert (jan.parent / f"{jan.stem}.eml").is_file()
    feb = by(files, "annuity_performance", FEB).path
    assert (feb.parent / "VX" / feb.name).is_file()  # not a version folder
    assert by(files, "trustee_performance", FEB).path.parent.name == "2024年02月"


def test_discovery_picks_the_current_workbook(
    samples: tuple[Path, list[SampleFile]], sources: SourcesFile
) -> None:
    discovery = pytest.importorskip("workdatahub.sources.discovery")
    out, files = samples
    for sample in files:
        found = discovery.discover(sources.domain(sample.domain), sample.period, out)
        assert [f.path for f in found.files] == [sample.path]


# -- the workbooks --------------------------------------------------------------------------


def test_sheets_and_headers_match_the_spec(
    samples: tuple[Path, list[SampleFile]], sources: SourcesFile
) -> None:
    _, files = samples
    for sample in files:
        spec = sources.domain(sample.domain)
        names = fastexcel.read_excel(str(sample.path)).sheet_names
        if sample.domain == "trustee_performance":
            rows, marker = sheet_rows(sample.path, 0), "计划代码"
        else:
            assert names == [PERFORMANCE_SHEET, INCOME_SHEET]
            rows, marker = sheet_rows(sample.path, str(spec.sheet)), "月度"
        header = {norm(c) for c in rows[header_index(rows, marker)] if c}
        for col in spec.required_headers:
            assert header & set(col.headers), f"{sample.path.name}: {col.name} missing"
        known = {h for col in spec.source_columns for h in col.headers}
        assert header - known, "an unknown extra column (备注/经办人) is expected"


def test_data_rows_totals_and_blank_rows(samples: tuple[Path, list[SampleFile]]) -> None:
    _, files = samples
    for sample in files:
        sheet = {"annuity_income": INCOME_SHEET, "annuity_performance": PERFORMANCE_SHEET}
        rows = sheet_rows(sample.path, sheet.get(sample.domain, 0))
        marker = "计划代码" if sample.domain == "trustee_performance" else "月度"
        assert len(data_rows(rows, marker)) == sample.rows
        assert rows[-1][0] == "合计"
        body = rows[header_index(rows, marker) + 1 : -1]
        assert sum(all(c is None for c in r) for r in body) == 2


def test_title_rows_shuffles_and_aliases_by_month(samples: tuple[Path, list[SampleFile]]) -> None:
    _, files = samples
    jan = sheet_rows(by(files, "annuity_performance", JAN).path, PERFORMANCE_SHEET)
    assert jan[0][0] == "2024年1月规模明细表" and all(c is None for c in jan[1])
    assert header_index(jan, "月度") == 2
    standard = [c for c in jan[2] if c]
    assert standard[:4] == ["月度", "业务类型", "计划类型", "计划代码"]

    feb = sheet_rows(by(files, "annuity_performance", FEB).path, PERFORMANCE_SHEET)
    assert feb[1][0] == "单位：元" and header_index(feb, "月度") == 2
    aliased = [c for c in feb[2] if c]
    assert {"计划号", "机构", "年化收益率", "流失（含待遇支付）"} <= set(aliased)
    assert aliased[:4] != ["月度", "业务类型", "计划类型", "计划号"]  # shuffled

    mar = sheet_rows(by(files, "annuity_performance", MAR).path, PERFORMANCE_SHEET)
    padded = [c for c in mar[header_index(mar, "月度")] if c]
    assert any(c != c.strip() for c in padded) and "经办人" in padded


def test_cell_quirks_are_present(samples: tuple[Path, list[SampleFile]]) -> None:
    _, files = samples
    cells: list[str] = []
    months: list[str | None] = []
    for month in MONTHS:
        path = by(files, "annuity_performance", month).path
        rows = sheet_rows(path, PERFORMANCE_SHEET)
        cells += [c for r in data_rows(rows, "月度") for c in r if c]
        months += column(rows, "月度", "月度")
        income = sheet_rows(path, INCOME_SHEET)
        cells += [c for r in data_rows(income, "月度") for c in r if c]
    text = set(cells)
    for expected in ("1P0290", "1P0807", "-", "N/A", "无", "暂无", "null", "abc", "其他"):
        assert expected in text, expected
    for pattern in (
        r"^\d{1,3}(,\d{3})+\.\d+$",  # thousands separators
        r"^[¥￥]",
        r"^\(\d[\d,]*\.\d+\)$",  # accounting negative
        r"[０-９]",  # full-width digits
        r"^-?\d+\.\d+%$",
        r"^F\d{5}$",  # portfolio code with a leading F
        r"及下属子企业",
        r"\(团托\)$",
        r"-养老$",
        r"已转出",
        r"\u3000| ",
    ):
        assert any(re.search(pattern, c) for c in cells), pattern
    spellings = {m for m in months if m}
    assert {"2024-01-01 00:00:00", "202402", "2024年03月", "2024-08"} <= spellings
    assert any(re.fullmatch(r"\d{2}年\d{1,2}月", m) for m in spellings)


def test_planted_rejects(samples: tuple[Path, list[SampleFile]]) -> None:
    _, files = samples
    for sample in files:
        assert sample.expected_rejects == 5
        assert sample.expected_rejects / sample.rows <= 0.05
    path = by(files, "annuity_performance", JAN).path
    rows = sheet_rows(path, PERFORMANCE_SHEET)
    assert column(rows, "月度", "期末资产规模").count("abc") == 1
    assert column(rows, "月度", "月度").count("2024年13月") == 1
    assert column(rows, "月度", "月度").count("2023-12-01 00:00:00") == 1  # period mismatch
    assert column(rows, "月度", "计划类型").count("其他") == 1
    income = sheet_rows(path, INCOME_SHEET)
    assert column(income, "月度", "固费").count("abc") == 1

    trustee = sheet_rows(by(files, "trustee_performance", JAN).path, 0)
    keys = zip(
        column(trustee, "计划代码", "年"),
        column(trustee, "计划代码", "月"),
        column(trustee, "计划代码", "计划代码"),
        column(trustee, "计划代码", "公司代码"),
        strict=True,
    )

    def number(text: str | None) -> int:
        value = int(float(text or 0))
        return value + 2000 if value < 100 and len(str(text)) <= 2 and value > 12 else value

    counted = Counter((number(y), number(m), p, c) for y, m, p, c in keys)
    assert [k for k, n in counted.items() if n > 1] and max(counted.values()) == 2
    assert sum(n > 1 for n in counted.values()) == 1
    rates = column(trustee, "计划代码", "收益率")
    assert rates.count("abc") == 1


def test_without_quirks_the_workbook_is_plain(tmp_path: Path) -> None:
    files = write_samples(tmp_path, [JAN], rows=150, quirks=False)
    assert all(f.expected_rejects == 0 for f in files)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        {f.path.name for f in files}
    )
    rows = sheet_rows(files[1].path, PERFORMANCE_SHEET)
    assert rows[0][:3] == ("月度", "业务类型", "计划类型")
    assert len(rows) == 151 and rows[-1][0] != "合计"
    assert not {"abc", "1P0290", "2024年13月"} & {c for r in rows for c in r if c}


def test_existing_files_are_kept_unless_overwrite(tmp_path: Path) -> None:
    first = write_samples(tmp_path, [MAR], rows=60)
    before = {f.path: sha256(f.path) for f in first}
    again = write_samples(tmp_path, [MAR], rows=90)
    assert [f.path for f in again] == [f.path for f in first]
    assert {f.path: sha256(f.path) for f in again} == before
    rewritten = write_samples(tmp_path, [MAR], rows=90, overwrite=True)
    assert {f.path: sha256(f.path) for f in rewritten} != before


def test_rewrite_with_other_arguments_leaves_one_candidate(tmp_path: Path) -> None:
    write_samples(tmp_path, [JAN, FEB], rows=60)  # JAN annuity in V2, FEB trustee in a subfolder
    plain = write_samples(tmp_path, [JAN, FEB], rows=60, quirks=False, overwrite=True)
    workbooks = sorted(p for p in tmp_path.rglob("*.xlsx"))
    assert workbooks == sorted({f.path for f in plain})
    assert not (tmp_path / "202401" / "收集数据" / "数据采集" / "V2").exists()


def test_only_known_domains(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="annuity_fees"):
        write_samples(tmp_path, [JAN], domains=("annuity_fees",))
    only = write_samples(tmp_path, [JAN], rows=50, domains=("annuity_income",))
    assert [f.domain for f in only] == ["annuity_income"]
    assert not (tmp_path / "202401" / "收集数据" / "业务收集").exists()


def test_five_thousand_rows_are_quick(tmp_path: Path) -> None:
    started = time.perf_counter()
    files = write_samples(tmp_path, [AUG], rows=5000)
    elapsed = time.perf_counter() - started
    assert elapsed < 15, f"5,000 rows took {elapsed:.1f}s"
    rows = sheet_rows(files[1].path, PERFORMANCE_SHEET)
    assert len(data_rows(rows, "月度")) == 5000


# -- reference seeds ------------------------------------------------------------------------

SEED_COLUMNS = {
    "ref_product_lines.csv": ["business_type", "product_line_code", "product_line_name"],
    "ref_branches.csv": ["branch_name", "branch_code"],
    "ref_annuity_plans.csv": ["plan_code", "plan_name", "plan_type", "company_id"],
    "ref_annuity_accounts.csv": ["annuity_account_no", "company_id"],
    "ref_company_names.csv": ["company_name", "company_id"],
    "ref_company_id_overrides.csv": ["match_type", "match_value", "company_id"],
}


def seed(name: str) -> list[dict[str, str]]:
    with (SEEDS / name).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == SEED_COLUMNS[name]
        return list(reader)


def test_seeds_are_small_and_keyed() -> None:
    for name, columns in SEED_COLUMNS.items():
        assert (SEEDS / name).stat().st_size < 30_000
        rows = seed(name)
        assert rows and all(all(r[c] is not None for c in columns) for r in rows)
        key = columns[:2] if name == "ref_company_id_overrides.csv" else columns[:1]
        assert len({tuple(r[k] for k in key) for r in rows}) == len(rows), name

    lines = {r["business_type"]: r["product_line_code"] for r in seed("ref_product_lines.csv")}
    assert lines["企年投资"] == "PL201" and lines["职年受托"] == "PL204" and len(lines) >= 7
    branches = seed("ref_branches.csv")
    assert branches[0] == {"branch_name": "总部", "branch_code": "G00"}
    assert [b["branch_code"] for b in branches] == [f"G{i:02d}" for i in range(len(branches))]
    assert 35 <= len(branches) <= 45


def test_seed_company_ids_are_consistent() -> None:
    names = seed("ref_company_names.csv")
    ids = {r["company_id"] for r in names}
    assert len(names) >= 190 and all(re.fullmatch(r"\d{9}", i) for i in ids)
    assert len(ids) == len(names)  # one name per company, one id per name
    plans = seed("ref_annuity_plans.csv")
    assert {"P0290", "P0807"} <= {p["plan_code"] for p in plans} and len(plans) >= 55
    for plan in plans:
        assert plan["plan_type"] in ("集合计划", "单一计划")
        if plan["plan_type"] == "集合计划":
            assert plan["company_id"] == ""
        elif plan["company_id"]:
            assert plan["company_id"] in ids
    accounts = seed("ref_annuity_accounts.csv")
    assert len(accounts) >= 140
    assert all(re.fullmatch(r"\d{9}", a["annuity_account_no"]) for a in accounts)
    assert {a["company_id"] for a in accounts} <= ids
    overrides = seed("ref_company_id_overrides.csv")
    assert {o["match_type"] for o in overrides} == {"plan_code", "customer_name"}
    assert {o["company_id"] for o in overrides} <= ids
    # a plan registered without a company gets it from the override table
    no_company = {
        p["plan_code"] for p in plans if p["plan_type"] == "单一计划" and not p["company_id"]
    }
    assert no_company <= {o["match_value"] for o in overrides if o["match_type"] == "plan_code"}
    known = {r["company_name"] for r in names}
    assert not known & {o["match_value"] for o in overrides}


def test_names_are_normalised_and_spellings_normalise_back() -> None:
    rules = pytest.importorskip("workdatahub.cleansing.rules")
    pl = pytest.importorskip("polars")
    names = [name for name, _ in load_reference().companies]
    raw = names + [s for n in names for s in name_spellings(n)]
    expected = names + [n for n in names for _ in name_spellings(n)]
    frame = pl.DataFrame({"name": raw})
    normalised = frame.select(rules.company_name(pl.col("name")).value.alias("name"))["name"]
    assert normalised.to_list() == expected
