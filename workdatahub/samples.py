"""Deterministic synthetic monthly workbooks, filed the way operators file them.

`write_samples` writes, for each month, the trustee workbook (业务收集/…受托业绩….xlsx) and
the annuity workbook (数据采集/[V<n>/]…规模收入数据….xlsx, sheets 规模明细 and 收入明细),
carrying the quirks of the data contract so every cleansing rule has something to do, and
a handful of rows per sheet that must be rejected (`SampleFile.expected_rejects`). Plans,
account numbers, customer names and branches come from the dbt seeds, so company_id
resolution hits every step of its chain; a share of customers is unknown on purpose.

Same (months, rows, seed, quirks) gives byte-identical files: every random draw comes from
a `random.Random` seeded by (seed, month, sheet), and zip entries carry a fixed timestamp.

What varies by month (k = year * 12 + month - 1, so any three consecutive months cover
every variant) when quirks are on:
- k % 2 == 0: blank row between the merged title and the header; 机构代码 column present;
  k % 4 == 1: a "单位：元" row there instead; k % 4 == 3: header right under the title.
- k % 2 == 1: shuffled column order.
- k % 3 == 1: header aliases (计划号, 机构, 年化收益率, 流失（含待遇支付）);
  k % 3 == 2: headers padded with spaces and an extra 经办人 column.
- 月度 is mostly written as: k % 4 == 0 date cells, 1 the integer 202411, 2 text 2024年11月,
  3 text 2024-11 (each month also mixes in the other spellings).
- Annuity files on disk: k % 3 == 0 a stale copy in the base folder and in V1, the current
  workbook in V2; k % 3 == 1 the workbook in the base folder and a stale copy in a `VX`
  folder (not a version); k % 3 == 2 the base folder only. Lock files (k % 3 != 2), a
  `回复_…` reply workbook and a `.eml` always sit next to the current workbook.

The workbooks are streamed as SpreadsheetML directly rather than through xlsxwriter:
xlsxwriter's per-cell Python path took about 145 s for 500,000 x 27 constant cells on the
development machine, before generating any data. Here each row is laid out by one cached
str.format template per pattern of cell types, which is several times faster. The package
holds the standard minimal parts and stores text the way Excel saves it: in a shared
strings table, each cell pointing at its entry (`t="s"`), so a benchmark reads the bytes an
operator's workbook holds (inline strings would double the sheet XML). Dates are
date-formatted number cells; the title is a merged cell.
"""

from __future__ import annotations

import csv
import random
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

from workdatahub.excel.reader import column_letter

SEEDS_DIR = Path(__file__).parent.parent / "dbt_project" / "seeds"
# where `wdh sample` and `wdh demo` write by default: beside the operators' folders, never
# in them (a sample's V2 folder would supersede a real workbook)
SAMPLE_DIR = Path(__file__).parent.parent / "data" / "sample"
# bumped whenever the bytes written change for the same arguments (2: shared strings; 3: the
# 合计 row leaves out the amounts a reject replaced with text, as a SUM does)
SAMPLE_FORMAT = 3
DOMAINS = ("trustee_performance", "annuity_performance", "annuity_income")
ANNUITY_DOMAINS = ("annuity_performance", "annuity_income")

PERFORMANCE_SHEET = "规模明细"
INCOME_SHEET = "收入明细"
TRUSTEE_SHEET = "受托业绩"
TRUSTEE_FOLDER = "受托部"
COLLECTIVE, SINGLE = "集合计划", "单一计划"
NEWER_NAME_FROM = date(2024, 7, 1)  # the workbook is called …规模及收入数据… from then on

# Rows planted to be rejected: one per kind (in shuffled order) while the sheet has 40 rows
# for each, so the reject rate stays at 2.5% at most, under every domain's threshold.
ROWS_PER_REJECT = 40
PERFORMANCE_REJECTS = ("money_abc", "month_13", "month_abc", "other_month", "plan_type_other")
INCOME_REJECTS = ("fee_abc", "month_13", "month_abc", "other_month", "plan_type_other")
TRUSTEE_REJECTS = ("duplicate_key", "rate_abc", "scale_abc", "other_month", "month_13")


@dataclass
class SampleFile:
    domain: str
    period: date
    path: Path
    rows: int  # data rows in the sheet, rejects included (title/header/blank/totals excluded)
    expected_rejects: int
    kept: bool = False  # the file was there already and was left as it was (no `overwrite`)


# -- reference data (the dbt seeds) ---------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    code: str
    name: str
    plan_type: str
    company_id: str  # the plan's company (reference or override), "" for a 集合计划
    occupational: bool


@dataclass(frozen=True)
class _Reference:
    plans: tuple[_Plan, ...]
    companies: tuple[tuple[str, str], ...]  # (normalised name, company_id)
    accounts: dict[str, tuple[str, ...]]  # company_id -> annuity account numbers
    branches: tuple[tuple[str, str], ...]  # (branch_name, branch_code)
    former_names: tuple[str, ...]  # customer names only the override table knows


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@lru_cache(maxsize=4)
def load_reference(seeds_dir: Path = SEEDS_DIR) -> _Reference:
    overrides = _read_csv(seeds_dir / "ref_company_id_overrides.csv")
    by_plan = {
        r["match_value"]: r["company_id"] for r in overrides if r["match_type"] == "plan_code"
    }
    plans = tuple(
        _Plan(
            code=r["plan_code"],
            name=r["plan_name"],
            plan_type=r["plan_type"],
            company_id=r["company_id"] or by_plan.get(r["plan_code"], ""),
            occupational="职业年金" in r["plan_name"],
        )
        for r in _read_csv(seeds_dir / "ref_annuity_plans.csv")
    )
    accounts: dict[str, list[str]] = {}
    for r in _read_csv(seeds_dir / "ref_annuity_accounts.csv"):
        accounts.setdefault(r["company_id"], []).append(r["annuity_account_no"])
    return _Reference(
        plans=plans,
        companies=tuple(
            (r["company_name"], r["company_id"])
            for r in _read_csv(seeds_dir / "ref_company_names.csv")
        ),
        accounts={k: tuple(v) for k, v in accounts.items()},
        branches=tuple(
            (r["branch_name"], r["branch_code"]) for r in _read_csv(seeds_dir / "ref_branches.csv")
        ),
        former_names=tuple(
            r["match_value"] for r in overrides if r["match_type"] == "customer_name"
        ),
    )


# -- the book of business: plan x portfolio x customer lines, stable across months ----------

_PORTFOLIO_TYPES = ("固定收益型", "含权益型", "权益型", "货币型")
_UNKNOWN_CITIES = ("绍兴", "温州", "泉州", "徐州", "潍坊", "株洲", "柳州", "遵义", "赣州", "台州")
_UNKNOWN_CORES = ("弘毅", "宇航", "君诚", "聚力", "新元", "正泰", "华瑞", "同舟")
_UNKNOWN_TRADES = ("新材料", "纸业", "船舶", "家居", "陶瓷", "酒业")
# None is an empty cell throughout: an empty string would still be written as a cell
_STAFF = ("王敏", "李娜", "张伟", "刘洋", "陈静", "杨帆", None)
_NOTES = (None, None, None, "补录", "调整", "已核对", "待确认")
_LEGAL_FORMS = ("集团股份有限公司", "股份有限公司", "集团有限公司", "有限责任公司", "有限公司")


@dataclass(frozen=True, slots=True)
class _Line:
    """One plan x portfolio x customer line; text is XML-escaped once here, not per cell."""

    business_type: str
    plan_type: str
    plan_code: str
    plan_name: str
    portfolio_type: str
    portfolio_code: str
    portfolio_cell: str | int  # some lines store the code as a number
    portfolio_name: str
    names: tuple[str, ...]  # [0] as normally typed, the rest spellings of the same company
    group_no: str | None
    group_name: str
    sub_no: str | int | None
    sub_name: str | None
    branch_name: str
    branch_code: str
    assets: float
    decimals: int


def _short_name(name: str) -> str:
    for form in _LEGAL_FORMS:
        if name.endswith(form):
            return name[: -len(form)]
    return name


def name_spellings(name: str) -> tuple[str, ...]:
    """Ways operators type one company: every one normalises back to `name`."""
    half = name.replace("（", "(").replace("）", ")")
    mid = len(name) // 2
    return (
        half,
        f" {name[:mid]} {name[mid:]} ",
        f"{name[:2]}\u3000{name[2:]}",
        f"{half}及下属子企业",
        f"{name}(团托)",
        f"{name}-养老",
        f"{name}-福利",
        f"{name}(已转出)",
        f"{name}（存量）",
        f"存量-{name}",
        f"（原）{name}",  # (glued, 原 is the name's own: 原平市)
        f"{name}-转移终止",
        f"{half}及下属子企业(团托)",
    )


def _unknown_names(rng: random.Random, known: set[str], count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = (
            rng.choice(_UNKNOWN_CITIES) + rng.choice(_UNKNOWN_CORES)
            + rng.choice(_UNKNOWN_TRADES) + rng.choice(_LEGAL_FORMS)
        )  # fmt: skip
        if name not in known and name not in names:
            names.append(name)
    return names


def _build_book(ref: _Reference, seed: int, size: int = 2000) -> list[_Line]:
    rng = random.Random(f"workdatahub-book-{seed}")
    names_by_id = {cid: name for name, cid in ref.companies}
    unknown = _unknown_names(rng, set(names_by_id), 40)
    portfolios: dict[str, list[tuple[str, str, str]]] = {}
    for number, plan in enumerate(ref.plans):
        kinds = rng.sample(_PORTFOLIO_TYPES, rng.randint(1, 3))
        base = _short_name(plan.name).removesuffix("企业年金集合计划")
        portfolios[plan.code] = [
            (kind, str(10000 + number * 17 + j), f"{base}{kind}组合")
            for j, kind in enumerate(kinds)
        ]
    collective = [p for p in ref.plans if p.plan_type == COLLECTIVE]
    single = [p for p in ref.plans if p.plan_type != COLLECTIVE]
    branches = ref.branches
    book: list[_Line] = []
    for _ in range(size):
        plan = rng.choice(single) if rng.random() < 0.55 else rng.choice(collective)
        company_id = plan.company_id
        if not company_id:
            roll = rng.random()
            if roll < 0.85:
                name, company_id = rng.choice(ref.companies)
            elif roll < 0.97 or not ref.former_names:
                name, company_id = rng.choice(unknown), ""
            else:
                name, company_id = rng.choice(ref.former_names), ""
        else:
            name = names_by_id.get(company_id) or rng.choice(unknown)
        accounts = ref.accounts.get(company_id, ())
        if accounts and rng.random() < 0.9:
            group_no = "C" + rng.choice(accounts)
        elif not company_id and rng.random() < 0.3:
            group_no = f"C699{rng.randrange(10**6):06d}"  # an account the reference does not know
        else:
            group_no = None
        sub_no: str | int | None = None
        sub_name = None
        code_as_number = rng.random() < 0.5
        if group_no and rng.random() < 0.15:
            sub_no = f"{group_no[1:]}{rng.randint(1, 40):03d}"
            sub_no = int(sub_no) if code_as_number else sub_no
            sub_name = escape(f"{_short_name(name)}{rng.choice(branches)[0]}分公司")
        business = ("职年" if plan.occupational else "企年") + rng.choice(("受托", "投资"))
        kind, code, portfolio_name = rng.choice(portfolios[plan.code])
        branch_name, branch_code = branches[0] if rng.random() < 0.1 else rng.choice(branches)
        book.append(
            _Line(
                business_type=business,
                plan_type=plan.plan_type,
                plan_code=escape(plan.code),
                plan_name=escape(plan.name),
                portfolio_type=kind,
                portfolio_code=code,
                portfolio_cell=int(code) if code_as_number else code,
                portfolio_name=escape(portfolio_name),
                names=tuple(escape(n) for n in (name, *name_spellings(name))),
                group_no=group_no,
                group_name=escape(name),
                sub_no=sub_no,
                sub_name=sub_name,
                branch_name=escape(branch_name),
                branch_code=escape(branch_code),
                assets=10 ** (4 + 5 * rng.random()),
                decimals=4 if rng.random() < 0.2 else 2,
            )
        )
    return book


# -- month variants -------------------------------------------------------------------------


class ExcelDate(int):
    """An Excel serial day number, written as a date cell."""


class Title(str):
    """A title cell: bold, merged across the header's width."""

    __slots__ = ()


_EPOCH = date(1899, 12, 30)
_FULL_WIDTH = str.maketrans("0123456789,.", "０１２３４５６７８９，．")


def excel_serial(day: date) -> ExcelDate:
    return ExcelDate((day - _EPOCH).days)


def _previous_month(period: date) -> date:
    return (
        date(period.year - 1, 12, 1)
        if period.month == 1
        else period.replace(month=period.month - 1)
    )


def _month_end(period: date) -> date:
    following = (
        date(period.year + 1, 1, 1)
        if period.month == 12
        else period.replace(month=period.month + 1)
    )
    return date.fromordinal(following.toordinal() - 1)


def _month_spellings(period: date) -> list[object]:
    """Every accepted way the operators write 月度; the first four are the monthly favourites."""
    y, m = period.year, period.month
    return [
        excel_serial(period),
        y * 100 + m,
        f"{y}年{m:02d}月",
        f"{y}-{m:02d}",
        excel_serial(_month_end(period)),
        f"{y}/{m}",
        f"{y % 100}年{m}月",
        y * 10000 + m * 100 + 1,
        f"{y}{m:02d}",
        f"{y}年{m}月{_month_end(period).day}日",
        f"{y}-{m:02d}-01",
    ]


@dataclass(frozen=True)
class _Layout:
    title: bool
    gap: str | None  # between title and header: None nothing, "" blank row, else a note row
    shuffled: bool
    aliases: bool
    padded: bool
    branch_code_column: bool
    clerk_column: bool
    month_style: int
    quirks: bool


def _month_index(period: date) -> int:
    """k in the module docstring: consecutive months take consecutive values."""
    return period.year * 12 + period.month - 1


def _layout(period: date, quirks: bool) -> _Layout:
    k = _month_index(period)
    if not quirks:
        return _Layout(False, None, False, False, False, False, False, 0, False)
    gap = "" if k % 2 == 0 else ("单位：元" if k % 4 == 1 else None)
    return _Layout(
        title=True,
        gap=gap,
        shuffled=k % 2 == 1,
        aliases=k % 3 == 1,
        padded=k % 3 == 2,
        branch_code_column=k % 2 == 0,
        clerk_column=k % 3 == 2,
        month_style=k % 4,
        quirks=True,
    )


def _rng(seed: int, period: date, sheet: str) -> random.Random:
    return random.Random(f"workdatahub-{seed}-{period:%Y%m}-{sheet}")


# -- sheet columns --------------------------------------------------------------------------
# Canonical order as (header, alias written in alias months); rows are built in this order
# and each month picks and orders its columns from it.

_PERFORMANCE_HEADERS: tuple[tuple[str, str | None], ...] = (
    ("月度", None), ("业务类型", None), ("计划类型", None), ("计划代码", "计划号"),
    ("计划名称", None), ("组合类型", None), ("组合代码", None), ("组合名称", None),
    ("客户名称", None), ("集团企业客户号", None), ("集团企业客户名称", None), ("子企业号", None),
    ("子企业名称", None), ("期初资产规模", None), ("期末资产规模", None), ("供款", None),
    ("流失(含待遇支付)", "流失（含待遇支付）"), ("流失", None), ("待遇支付", None),
    ("投资收益", None), ("当期收益率", "年化收益率"), ("机构名称", "机构"), ("机构代码", None),
    ("经办人", None), ("备注", None),
)  # fmt: skip
(
    P_MONTH, P_BUSINESS, P_PLAN_TYPE, P_PLAN_CODE, P_PLAN_NAME, P_PORTFOLIO_TYPE,
    P_PORTFOLIO_CODE, P_PORTFOLIO_NAME, P_CUSTOMER, P_GROUP_NO, P_GROUP_NAME, P_SUB_NO,
    P_SUB_NAME, P_OPENING, P_CLOSING, P_CONTRIBUTIONS, P_OUTFLOW_ALL, P_OUTFLOW, P_BENEFITS,
    P_INCOME, P_RETURN, P_BRANCH, P_BRANCH_CODE, P_CLERK, P_NOTE,
) = range(len(_PERFORMANCE_HEADERS))  # fmt: skip

_INCOME_HEADERS: tuple[tuple[str, str | None], ...] = (
    ("月度", None), ("机构名称", "机构"), ("计划代码", "计划号"), ("客户名称", None),
    ("业务类型", None), ("计划类型", None), ("组合代码", None), ("计划名称", None),
    ("组合类型", None), ("组合名称", None), ("固费", None), ("浮费", None), ("回补", None),
    ("税", None), ("机构代码", None), ("经办人", None), ("备注", None),
)  # fmt: skip
(
    I_MONTH, I_BRANCH, I_PLAN_CODE, I_CUSTOMER, I_BUSINESS, I_PLAN_TYPE, I_PORTFOLIO_CODE,
    I_PLAN_NAME, I_PORTFOLIO_TYPE, I_PORTFOLIO_NAME, I_FIXED, I_VARIABLE, I_REBATE, I_TAX,
    I_BRANCH_CODE, I_CLERK, I_NOTE,
) = range(len(_INCOME_HEADERS))  # fmt: skip

_TRUSTEE_HEADERS: tuple[tuple[str, str | None], ...] = (
    ("年", None), ("月", None), ("计划代码", None), ("公司代码", None), ("收益率", None),
    ("净值", None), ("规模", None), ("经办人", None),
)  # fmt: skip
T_YEAR, T_MONTH, T_PLAN, T_COMPANY, T_RATE, T_NAV, T_SCALE, T_CLERK = range(8)
_PADDED = {
    "客户名称": " 客户名称 ",
    "期末资产规模": "期末资产规模 ",
    "固费": " 固费",
    "规模": "规模 ",
}


def _columns(
    headers: tuple[tuple[str, str | None], ...],
    layout: _Layout,
    rng: random.Random,
    optional: dict[int, bool],
) -> tuple[list[int], list[str]]:
    """The month's column order (indexes into the canonical row) and its header texts."""
    order = [i for i in range(len(headers)) if optional.get(i, True)]
    if layout.shuffled:
        rng.shuffle(order)
        # the totals row writes 合计 in the first column, which must be one the reader maps
        first_known = next(i for i in order if headers[i][0] not in ("经办人", "备注"))
        order.remove(first_known)
        order.insert(0, first_known)
    texts = []
    for i in order:
        header, alias = headers[i]
        if layout.aliases and alias:
            header = alias
        elif layout.padded:
            header = _PADDED.get(header, header)
        texts.append(escape(header))
    return order, texts


# -- rows -----------------------------------------------------------------------------------


def _money_text(value: float, style: int) -> str:
    """A money figure as operators type it into a text cell."""
    if style == 0:
        return f"{value:,.2f}"
    if style == 1:
        return f"¥{value:,.2f}" if value >= 0 else f"-¥{-value:,.2f}"
    if style == 2:
        return f"({-value:,.2f})" if value < 0 else f"￥{value:,.2f}"
    if style == 3:
        return f"{value:.2f}".translate(_FULL_WIDTH)
    return f"  {value}  "


@dataclass
class _SheetPlan:
    """Where the rejects, the blank rows and the preamble go in one sheet."""

    rows: int
    rejects: dict[int, str]
    blanks: frozenset[int]
    preamble: list[list[object] | None]
    totals: bool

    @property
    def last_row(self) -> int:
        return len(self.preamble) + 1 + self.rows + len(self.blanks) + (1 if self.totals else 0)


def reject_count(rows: int, kinds: tuple[str, ...], quirks: bool) -> int:
    """Rejects planted in a sheet: one per kind, while the sheet has 40 rows for each."""
    return min(len(kinds), rows // ROWS_PER_REJECT) if quirks else 0


def _plan_sheet(
    rng: random.Random, rows: int, kinds: tuple[str, ...], layout: _Layout, title: str, width: int
) -> _SheetPlan:
    rejects: dict[int, str] = {}
    blanks: frozenset[int] = frozenset()
    preamble: list[list[object] | None] = []
    if layout.quirks:
        count = reject_count(rows, kinds, quirks=True)
        positions = sorted(rng.sample(range(1, rows), count))
        rejects = dict(zip(positions, rng.sample(kinds, count), strict=True))
        if rows >= 10:
            blanks = frozenset(rng.sample(range(rows - 1), 2))
    if layout.title:
        preamble.append([Title(escape(title))])
        if layout.gap is not None:
            preamble.append([layout.gap] if layout.gap else None)
    return _SheetPlan(rows, rejects, blanks, preamble, totals=layout.quirks)


def _emit(
    plan: _SheetPlan,
    header: list[str],
    body: Iterator[list[object]],
    totals: Callable[[], list[object]],
) -> Iterator[list[object] | None]:
    yield from plan.preamble
    yield list[object](header)
    blanks = plan.blanks
    for i, row in enumerate(body):
        yield row
        if i in blanks:
            yield None
    if plan.totals:
        yield totals()


def _performance_rows(
    book: list[_Line], rng: random.Random, period: date, plan: _SheetPlan, layout: _Layout,
    order: list[int], sums: list[float],
) -> Iterator[list[object]]:  # fmt: skip
    rnd = rng.random
    n_book = len(book)
    spellings = _month_spellings(period)
    usual_month = spellings[layout.month_style]
    previous = _month_spellings(_previous_month(period))[layout.month_style]
    quirks = layout.quirks
    rejects = plan.rejects
    corrections = {"P0290": "1P0290", "P0807": "1P0807"}
    note_count, staff_count = len(_NOTES), len(_STAFF)
    for i in range(plan.rows):
        line = book[int(rnd() * n_book)]
        scale = line.assets * (0.9 + 0.2 * rnd())
        places = line.decimals
        rate = 0.005 + 0.075 * rnd() if rnd() < 0.92 else -0.03 * rnd()
        opening = round(scale, places)
        contributions = round(scale * 0.02 * rnd(), places)
        benefits = round(scale * 0.01 * rnd(), places)
        outflow = round(scale * 0.004 * rnd(), places)
        income = round(scale * rate / 12, places)
        closing = round(opening + contributions - benefits - outflow + income, places)
        sums[0] += opening
        sums[1] += closing
        cells: list[object] = [
            usual_month, line.business_type, line.plan_type, line.plan_code, line.plan_name,
            line.portfolio_type, line.portfolio_cell, line.portfolio_name, line.names[0],
            line.group_no, line.group_name, line.sub_no, line.sub_name, opening, closing,
            contributions, round(benefits + outflow, places), outflow, benefits, income,
            round(rate, 6), line.branch_name, line.branch_code,
            _STAFF[int(rnd() * staff_count)], _NOTES[int(rnd() * note_count)],
        ]  # fmt: skip
        if quirks:
            if rnd() < 0.2:
                cells[P_CUSTOMER] = line.names[1 + int(rnd() * (len(line.names) - 1))]
            if line.plan_code in corrections and rnd() < 0.4:
                cells[P_PLAN_CODE] = corrections[line.plan_code]
            if income < 0 and rnd() < 0.3:  # losses as accountants write them: (1,234.50)
                cells[P_INCOME] = f"({-income:,.2f})"
            if rnd() < 0.25:
                _performance_quirk(cells, int(rnd() * 12), rnd, spellings, line)
            kind = rejects.get(i)
            if kind is not None:
                _performance_reject(cells, kind, period, previous)
        if cells[P_CLOSING] == "abc":  # the 合计 row, a SUM, leaves text out
            sums[1] -= closing
        yield [cells[c] for c in order]


def _performance_quirk(
    cells: list[object], kind: int, rnd: Callable[[], float], spellings: list[object], line: _Line
) -> None:
    """One of the contract's harmless quirks; none of them makes the row a reject."""
    if kind <= 3:  # money typed as text
        column = (P_OPENING, P_CLOSING, P_CONTRIBUTIONS, P_INCOME)[kind]
        value = cells[column]
        if isinstance(value, float):
            cells[column] = _money_text(value, int(rnd() * 5))
    elif kind == 4:
        cells[P_RETURN] = f"{float(cells[P_RETURN]) * 100:.2f}%"  # type: ignore[arg-type]
    elif kind == 5:
        rate = float(cells[P_RETURN])  # type: ignore[arg-type]
        if abs(rate) > 0.0101:  # a bare figure above 1 is read as a percent
            cells[P_RETURN] = round(rate * 100, 4)
    elif kind == 6:  # empty plan code: AN001 / AN002 by plan type
        cells[P_PLAN_CODE] = None if rnd() < 0.5 else "-"
    elif kind == 7:
        cells[P_PORTFOLIO_CODE] = "F" + line.portfolio_code
    elif kind == 8:  # empty portfolio code: QTAN001/2/3
        cells[P_PORTFOLIO_CODE] = None if rnd() < 0.5 else "N/A"
    elif kind == 9:
        cells[P_SUB_NAME] = "无"
        cells[P_GROUP_NAME] = "-"
        cells[P_BENEFITS] = "-"
    elif kind == 10:  # branch unknown: head office
        cells[P_BRANCH] = None if rnd() < 0.5 else "暂无"
        cells[P_BRANCH_CODE] = "null"
    else:
        cells[P_MONTH] = spellings[int(rnd() * len(spellings))]


def _performance_reject(cells: list[object], kind: str, period: date, previous: object) -> None:
    if kind == "money_abc":
        cells[P_CLOSING] = "abc"
    elif kind == "month_13":
        cells[P_MONTH] = f"{period.year}年13月"
    elif kind == "month_abc":
        cells[P_MONTH] = "abc"
    elif kind == "other_month":
        cells[P_MONTH] = previous
    elif kind == "plan_type_other":
        cells[P_PLAN_CODE] = None
        cells[P_PLAN_TYPE] = "其他"


def _income_rows(
    book: list[_Line], rng: random.Random, period: date, plan: _SheetPlan, layout: _Layout,
    order: list[int], sums: list[float],
) -> Iterator[list[object]]:  # fmt: skip
    rnd = rng.random
    n_book = len(book)
    spellings = _month_spellings(period)
    usual_month = spellings[layout.month_style]
    previous = _month_spellings(_previous_month(period))[layout.month_style]
    quirks = layout.quirks
    rejects = plan.rejects
    note_count, staff_count = len(_NOTES), len(_STAFF)
    for i in range(plan.rows):
        line = book[int(rnd() * n_book)]
        scale = line.assets * (0.9 + 0.2 * rnd())
        fixed = round(scale * (0.0005 + 0.0025 * rnd()) / 12, 2)
        variable: object = round(scale * 0.001 * rnd() / 12, 2) if rnd() < 0.3 else 0.0
        rebate: object = -round(fixed * 0.1 * rnd(), 2) if rnd() < 0.1 else 0.0
        tax = round((fixed + float(variable)) * 0.06, 2)  # type: ignore[arg-type]
        sums[0] += fixed
        sums[1] += tax
        cells: list[object] = [
            usual_month, line.branch_name, line.plan_code, line.names[0], line.business_type,
            line.plan_type, line.portfolio_cell, line.plan_name, line.portfolio_type,
            line.portfolio_name, fixed, variable, rebate, tax, line.branch_code,
            _STAFF[int(rnd() * staff_count)], _NOTES[int(rnd() * note_count)],
        ]  # fmt: skip
        if quirks:
            if rnd() < 0.2:
                cells[I_CUSTOMER] = line.names[1 + int(rnd() * (len(line.names) - 1))]
            if rnd() < 0.3:  # a fee nobody typed: a placeholder that counts as 0
                cells[I_VARIABLE if variable == 0.0 else I_REBATE] = ("-", None, "无", "暂无")[
                    int(rnd() * 4)
                ]
            if rnd() < 0.2:
                _income_quirk(cells, int(rnd() * 8), rnd, spellings, line)
            kind = rejects.get(i)
            if kind is not None:
                _income_reject(cells, kind, period, previous)
        if cells[I_FIXED] == "abc":  # the 合计 row, a SUM, leaves text out
            sums[0] -= fixed
        yield [cells[c] for c in order]


def _income_quirk(
    cells: list[object], kind: int, rnd: Callable[[], float], spellings: list[object], line: _Line
) -> None:
    if kind <= 1:
        column = (I_FIXED, I_TAX)[kind]
        value = cells[column]
        if isinstance(value, float):
            cells[column] = _money_text(value, int(rnd() * 5))
    elif kind == 2:
        cells[I_PLAN_CODE] = None if rnd() < 0.5 else "-"
    elif kind == 3:
        if line.plan_code in ("P0290", "P0807"):
            cells[I_PLAN_CODE] = "1" + line.plan_code
        else:
            cells[I_PORTFOLIO_CODE] = "F" + line.portfolio_code
    elif kind == 4:
        cells[I_PORTFOLIO_CODE] = None
    elif kind == 5:
        cells[I_BRANCH] = "-"
        cells[I_BRANCH_CODE] = "null"
    elif kind == 6:
        cells[I_PORTFOLIO_NAME] = "暂无"
    else:
        cells[I_MONTH] = spellings[int(rnd() * len(spellings))]


def _income_reject(cells: list[object], kind: str, period: date, previous: object) -> None:
    if kind == "fee_abc":
        cells[I_FIXED] = "abc"
    elif kind == "month_13":
        cells[I_MONTH] = f"{period.year}年13月"
    elif kind == "month_abc":
        cells[I_MONTH] = "abc"
    elif kind == "other_month":
        cells[I_MONTH] = previous
    elif kind == "plan_type_other":
        cells[I_PLAN_CODE] = None
        cells[I_PLAN_TYPE] = "其他"


def _trustee_key(plans: list[str], companies: list[str], i: int) -> tuple[str, str]:
    """Row i's (计划代码, 公司代码); unique for every i, so duplicates are only the planted one."""
    if i < len(plans) * len(companies):
        return plans[i % len(plans)], companies[i // len(plans)]
    return plans[i % len(plans)], str(700_000_000 + i)


def _trustee_rows(
    ref: _Reference, rng: random.Random, period: date, plan: _SheetPlan, layout: _Layout,
    order: list[int], sums: list[float],
) -> Iterator[list[object]]:  # fmt: skip
    rnd = rng.random
    year, month = period.year, period.month
    previous = _previous_month(period)
    quirks = layout.quirks
    rejects = plan.rejects
    plans = [escape(p.code) for p in ref.plans]
    companies = [escape(company_id) for _, company_id in ref.companies]
    staff_count = len(_STAFF)
    # the duplicate repeats the key of the row just before it that is itself fine
    duplicate_of = {
        p: next(q for q in range(p - 1, -1, -1) if q not in rejects)
        for p, kind in rejects.items()
        if kind == "duplicate_key"
    }
    for i in range(plan.rows):
        plan_code, company_code = _trustee_key(plans, companies, duplicate_of.get(i, i))
        rate = round(0.01 + 0.07 * rnd(), 6)
        nav = round(1 + 1.5 * rnd(), 4)
        scale = round(10 ** (6 + 3 * rnd()), 2)
        sums[0] += scale
        cells: list[object] = [
            year,
            month,
            plan_code,
            company_code,
            rate,
            nav,
            scale,
            _STAFF[int(rnd() * staff_count)],
        ]
        if quirks:
            roll = rnd()
            if roll < 0.3 and company_code.isdigit():
                cells[T_COMPANY] = int(company_code)  # a code stored as a number
            elif roll < 0.36:
                cells[T_RATE] = f"{rate * 100:.2f}%"
            elif roll < 0.42:
                cells[T_RATE] = round(rate * 100, 4)  # always above 1: a percent figure
            elif roll < 0.48:
                cells[T_SCALE] = _money_text(scale, int(rnd() * 5))
            elif roll < 0.51:
                cells[T_YEAR], cells[T_MONTH] = str(year), f"{month:02d}"
            elif roll < 0.53:
                cells[T_YEAR] = year % 100  # two-digit years mean 20YY
            elif roll < 0.56:
                cells[T_NAV] = "-"
            kind = rejects.get(i)
            if kind == "rate_abc":
                cells[T_RATE] = "abc"
            elif kind == "scale_abc":
                cells[T_SCALE] = "abc"
            elif kind == "other_month":
                cells[T_YEAR], cells[T_MONTH] = previous.year, previous.month
            elif kind == "month_13":
                cells[T_MONTH] = 13
        if cells[T_SCALE] == "abc":  # the 合计 row, a SUM, leaves text out
            sums[0] -= scale
        yield [cells[c] for c in order]


# -- the workbook writer --------------------------------------------------------------------

_ZIP_TIME = (2024, 1, 1, 0, 0, 0)
_COMPRESS_LEVEL = 1  # the sheet XML is large and repetitive; level 1 is ~3x faster than 6
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_OFFICE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_STYLES = (
    f'{_XML}<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="等线"/><family val="2"/></font>'
    '<font><b/><sz val="14"/><name val="等线"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"'
    ' applyAlignment="1"><alignment horizontal="center"/></xf></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)
_CORE = (
    f"{_XML}<cp:coreProperties"
    ' xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
    ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    "<dc:creator>WorkDataHub samples</dc:creator>"
    '<dcterms:created xsi:type="dcterms:W3CDTF">2024-01-01T00:00:00Z</dcterms:created>'
    '<dcterms:modified xsi:type="dcterms:W3CDTF">2024-01-01T00:00:00Z</dcterms:modified>'
    "</cp:coreProperties>"
)


@dataclass
class _Sheet:
    name: str
    width: int
    last_row: int
    rows: Iterable[list[object] | None]  # None is an empty row
    merge_title: bool


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 0
    # ZipFile.open() takes the level from the ZipInfo (renamed in Python 3.13)
    attribute = "compress_level" if hasattr(info, "compress_level") else "_compresslevel"
    setattr(info, attribute, _COMPRESS_LEVEL)
    return info


def _row_template(signature: tuple[type, ...], letters: list[str]) -> str:
    """A str.format template for rows whose cells have these types ({0} is the row number;
    a text cell's field takes its index in the shared strings table).

    Rows repeat a handful of type patterns, so one cached template per pattern lets
    str.format (C code) lay out the whole row instead of a Python loop over its cells.
    """
    parts = ['<row r="{0}">']
    for position, (letter, kind) in enumerate(zip(letters, signature, strict=False), 1):
        ref = f'r="{letter}{{0}}"'
        if kind is str:
            parts.append(f'<c {ref} t="s"><v>{{{position}}}</v></c>')
        elif kind is float or kind is int:
            parts.append(f"<c {ref}><v>{{{position}}}</v></c>")
        elif kind is ExcelDate:
            parts.append(f'<c {ref} s="1"><v>{{{position}}}</v></c>')
        elif kind is Title:
            parts.append(f'<c {ref} s="2" t="s"><v>{{{position}}}</v></c>')
        elif kind is not type(None):
            raise TypeError(f"cannot write a {kind.__name__} to a sample cell")
    parts.append("</row>")
    return "".join(parts)


class _SharedStrings:
    """The workbook's shared strings table: each distinct (already escaped) text once."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.count = 0  # cells referring to the table

    def xml(self) -> bytes:
        items = "".join(
            f'<si><t xml:space="preserve">{text}</t></si>' if text != text.strip() else
            f"<si><t>{text}</t></si>"
            for text in self.index
        )  # fmt: skip
        return (
            f'{_XML}<sst xmlns="{_MAIN}" count="{self.count}" uniqueCount="{len(self.index)}">'
            f"{items}</sst>"
        ).encode()


def _sheet_xml(sheet: _Sheet, write: Callable[[bytes], object], strings: _SharedStrings) -> None:
    """Every str handed in is already XML text (escaped when the value was made); text goes
    to `strings` and the cell holds its index."""
    last = column_letter(sheet.width - 1)
    write(
        (
            f'{_XML}<worksheet xmlns="{_MAIN}" xmlns:r="{_OFFICE_REL}">'
            f'<dimension ref="A1:{last}{max(sheet.last_row, 1)}"/>'
            '<sheetViews><sheetView workbookViewId="0"/></sheetViews>'
            '<sheetFormatPr defaultRowHeight="15"/>'
            f'<cols><col min="1" max="{sheet.width}" width="16" customWidth="1"/></cols>'
            "<sheetData>"
        ).encode()
    )
    letters = [column_letter(i) for i in range(sheet.width)]
    templates: dict[tuple[type, ...], tuple[str, list[int]]] = {}
    index = strings.index
    chunk: list[str] = []
    n = 0
    for n, cells in enumerate(sheet.rows, 1):
        if cells is None:
            continue
        signature = tuple(map(type, cells))
        known = templates.get(signature)
        if known is None:
            texts = [i for i, kind in enumerate(signature) if kind is str or kind is Title]
            known = templates[signature] = (_row_template(signature, letters), texts)
        template, texts = known
        values = list(cells)  # the row generator may still look at its rows
        for i in texts:
            text = str(values[i])
            found = index.get(text)
            if found is None:
                found = index[text] = len(index)
            values[i] = found
        strings.count += len(texts)
        chunk.append(template.format(n, *values))
        if len(chunk) >= 2000:
            write("".join(chunk).encode())
            chunk.clear()
    write("".join(chunk).encode())
    if n != sheet.last_row:
        raise AssertionError(f"sheet {sheet.name}: wrote {n} rows, planned {sheet.last_row}")
    tail = "</sheetData>"
    if sheet.merge_title:
        tail += f'<mergeCells count="1"><mergeCell ref="A1:{last}1"/></mergeCells>'
    tail += (
        '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
    )
    write((tail + "</worksheet>").encode())


def write_workbook(path: Path, sheets: list[_Sheet]) -> None:
    """Stream the sheets into an .xlsx; written beside the target and renamed when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.part")  # hidden: discovery never sees a half file
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for i in range(1, len(sheets) + 1)
    )
    content_types = (
        f'{_XML}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        f"{overrides}"
        '<Override PartName="/xl/styles.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        '<Override PartName="/docProps/core.xml" ContentType="application/'
        'vnd.openxmlformats-package.core-properties+xml"/>'
        "</Types>"
    )
    root_rels = (
        f'{_XML}<Relationships xmlns="{_PACKAGE_REL}">'
        f'<Relationship Id="rId1" Type="{_OFFICE_REL}/officeDocument" Target="xl/workbook.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/'
        'relationships/metadata/core-properties" Target="docProps/core.xml"/>'
        "</Relationships>"
    )
    workbook = (
        f'{_XML}<workbook xmlns="{_MAIN}" xmlns:r="{_OFFICE_REL}">'
        '<bookViews><workbookView activeTab="0"/></bookViews><sheets>'
        + "".join(
            f'<sheet name="{escape(s.name)}" sheetId="{i}" r:id="rId{i}"/>'
            for i, s in enumerate(sheets, 1)
        )
        + "</sheets></workbook>"
    )
    workbook_rels = (
        f'{_XML}<Relationships xmlns="{_PACKAGE_REL}">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{_OFFICE_REL}/worksheet" '
            f'Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, len(sheets) + 1)
        )
        + f'<Relationship Id="rId{len(sheets) + 1}" Type="{_OFFICE_REL}/styles" '
        'Target="styles.xml"/>'
        f'<Relationship Id="rId{len(sheets) + 2}" Type="{_OFFICE_REL}/sharedStrings" '
        'Target="sharedStrings.xml"/></Relationships>'
    )
    try:
        with zipfile.ZipFile(temp, "w") as archive:
            archive.writestr(_zip_info("[Content_Types].xml"), content_types)
            archive.writestr(_zip_info("_rels/.rels"), root_rels)
            archive.writestr(_zip_info("docProps/core.xml"), _CORE)
            archive.writestr(_zip_info("xl/workbook.xml"), workbook)
            archive.writestr(_zip_info("xl/_rels/workbook.xml.rels"), workbook_rels)
            archive.writestr(_zip_info("xl/styles.xml"), _STYLES)
            strings = _SharedStrings()
            for i, sheet in enumerate(sheets, 1):
                info = _zip_info(f"xl/worksheets/sheet{i}.xml")
                # past 2 GiB of XML an entry needs zip64, decided up front because it
                # streams; cells average 30-70 bytes, so 15 million leave a wide margin
                big = sheet.last_row * sheet.width > 15_000_000
                with archive.open(info, "w", force_zip64=big) as stream:
                    _sheet_xml(sheet, stream.write, strings)
            archive.writestr(_zip_info("xl/sharedStrings.xml"), strings.xml())
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


# -- one workbook per domain and month ------------------------------------------------------


def _annuity_sheets(
    ref: _Reference, book: list[_Line], period: date, rows: int, seed: int, quirks: bool
) -> tuple[list[_Sheet], int, int]:
    """Both sheets of the annuity workbook, and how many rows of each must be rejected."""
    layout = _layout(period, quirks)
    ym = f"{period.year}年{period.month}月"

    rng = _rng(seed, period, PERFORMANCE_SHEET)
    optional = {P_BRANCH_CODE: layout.branch_code_column, P_CLERK: layout.clerk_column}
    order, header = _columns(_PERFORMANCE_HEADERS, layout, rng, optional)
    width = len(order)
    performance = _plan_sheet(rng, rows, PERFORMANCE_REJECTS, layout, f"{ym}规模明细表", width)
    sums = [0.0, 0.0]
    body = _performance_rows(book, rng, period, performance, layout, order, sums)
    totals = _totals(order, {P_OPENING: 0, P_CLOSING: 1}, sums)

    rng_income = _rng(seed, period, INCOME_SHEET)
    optional = {I_BRANCH_CODE: layout.branch_code_column, I_CLERK: layout.clerk_column}
    order_income, header_income = _columns(_INCOME_HEADERS, layout, rng_income, optional)
    width_income = len(order_income)
    income = _plan_sheet(rng_income, rows, INCOME_REJECTS, layout, f"{ym}收入明细表", width_income)
    sums_income = [0.0, 0.0]
    body_income = _income_rows(book, rng_income, period, income, layout, order_income, sums_income)
    totals_income = _totals(order_income, {I_FIXED: 0, I_TAX: 1}, sums_income)

    sheets = [
        _Sheet(
            PERFORMANCE_SHEET, width, performance.last_row,
            _emit(performance, header, body, totals), layout.title,
        ),
        _Sheet(
            INCOME_SHEET, width_income, income.last_row,
            _emit(income, header_income, body_income, totals_income), layout.title,
        ),
    ]  # fmt: skip
    return sheets, len(performance.rejects), len(income.rejects)


def _totals(
    order: list[int], columns: dict[int, int], sums: list[float]
) -> Callable[[], list[object]]:
    """The 合计 row; built after the body so it can show the running sums."""

    def row() -> list[object]:
        cells: list[object] = ["合计"] + [None] * (len(order) - 1)
        for position, column in enumerate(order):
            if column in columns and position > 0:
                cells[position] = round(sums[columns[column]], 2)
        return cells

    return row


def _trustee_sheet(
    ref: _Reference, period: date, rows: int, seed: int, quirks: bool
) -> tuple[_Sheet, int]:
    layout = _layout(period, quirks)
    k = _month_index(period)
    # the trustee template changes less: a title only every other month, never aliases
    layout = _Layout(
        title=quirks and k % 2 == 0,
        gap="" if quirks and k % 4 == 0 else None,
        shuffled=layout.shuffled,
        aliases=False,
        padded=layout.padded,
        branch_code_column=False,
        clerk_column=quirks,
        month_style=0,
        quirks=quirks,
    )
    rng = _rng(seed, period, TRUSTEE_SHEET)
    order, header = _columns(_TRUSTEE_HEADERS, layout, rng, {T_CLERK: layout.clerk_column})
    title = f"{period.year}年{period.month}月受托业绩"
    plan = _plan_sheet(rng, rows, TRUSTEE_REJECTS, layout, title, len(order))
    sums = [0.0]
    body = _trustee_rows(ref, rng, period, plan, layout, order, sums)
    totals = _totals(order, {T_SCALE: 0}, sums)
    sheet = _Sheet(
        TRUSTEE_SHEET, len(order), plan.last_row, _emit(plan, header, body, totals), layout.title
    )
    return sheet, len(plan.rejects)


def annuity_file_name(period: date) -> str:
    spelling = "规模及收入数据" if period >= NEWER_NAME_FROM else "规模收入数据"
    return f"{period.year}年{period.month:02d}月年金终稿数据-{spelling}.xlsx"


def trustee_file_name(period: date) -> str:
    return f"{period.year}年{period.month:02d}月受托业绩.xlsx"


def _month_folder(out_dir: Path, period: date) -> Path:
    return out_dir / f"{period.year:04d}{period.month:02d}" / "收集数据"


def _lock_file(path: Path) -> None:
    # what Excel leaves while a workbook is open: the owner's name, padded; never a workbook
    path.write_bytes(b"\x08WDH-user" + b"\x00" * 45 + b"\x20" * 111)


def _mail(path: Path, period: date, attachment: str) -> None:
    path.write_text(
        "From: ops@example.com\nTo: data@example.com\n"
        f"Subject: {period.year}年{period.month}月年金终稿数据\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
        f"附件为本月终稿数据：{attachment}\n",
        encoding="utf-8",
    )


def _reply_workbook(path: Path) -> None:
    rows: list[list[object] | None] = [["说明"], ["已收到，数据核对无误。"]]
    write_workbook(path, [_Sheet("回复", 1, len(rows), rows, merge_title=False)])


def _clear(base: Path, subfolders: list[str], names: list[str]) -> None:
    """Remove this month's files of an earlier run whose arguments filed them elsewhere.

    Otherwise a V2 left by a run with quirks would win over a plain rewrite, or two trustee
    workbooks would sit in one month. Only the exact names this module writes are touched,
    and a subfolder only when that leaves it empty.
    """
    for folder in [base, *(base / sub for sub in subfolders)]:
        for name in names:
            (folder / name).unlink(missing_ok=True)
        if folder != base and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _write_annuity(
    ref: _Reference, book: list[_Line], out_dir: Path, period: date, rows: int, seed: int,
    quirks: bool, overwrite: bool,
) -> tuple[Path, int, int, bool]:  # fmt: skip
    base = _month_folder(out_dir, period) / "数据采集"
    name = annuity_file_name(period)
    k = _month_index(period)
    variant = k % 3 if quirks else 2
    folder = base / "V2" if variant == 0 else base
    path = folder / name
    if path.exists() and not overwrite:
        return (
            path,
            reject_count(rows, PERFORMANCE_REJECTS, quirks),
            reject_count(rows, INCOME_REJECTS, quirks),
            True,
        )
    sheets, performance_rejects, income_rejects = _annuity_sheets(
        ref, book, period, rows, seed, quirks
    )
    _clear(
        base,
        ["V1", "V2", "VX"],
        [name, f"~${name}", f"回复_{name}", f"{name.removesuffix('.xlsx')}.eml"],
    )
    write_workbook(path, sheets)
    if quirks:
        # earlier sends the operators superseded; small, and different from the current file
        stale_rows = max(1, min(rows, 30))
        stale_places = {0: [base, base / "V1"], 1: [base / "VX"]}.get(variant, [])
        for number, place in enumerate(stale_places):
            stale, _, _ = _annuity_sheets(ref, book, period, stale_rows, seed + 1 + number, quirks)
            write_workbook(place / name, stale)
        if variant != 2:
            _lock_file(folder / f"~${name}")
        _reply_workbook(folder / f"回复_{name}")
        _mail(folder / f"{name.removesuffix('.xlsx')}.eml", period, name)
    return path, performance_rejects, income_rejects, False


def _write_trustee(
    ref: _Reference, out_dir: Path, period: date, rows: int, seed: int, quirks: bool,
    overwrite: bool,
) -> tuple[Path, int, bool]:  # fmt: skip
    k = _month_index(period)
    folder = _month_folder(out_dir, period) / "业务收集" / TRUSTEE_FOLDER
    if quirks and k % 2 == 1:  # some months the trustee team files into a month subfolder
        folder = folder / f"{period.year}年{period.month:02d}月"
    name = trustee_file_name(period)
    path = folder / name
    if path.exists() and not overwrite:
        return path, reject_count(rows, TRUSTEE_REJECTS, quirks), True
    sheet, rejects = _trustee_sheet(ref, period, rows, seed, quirks)
    base = _month_folder(out_dir, period) / "业务收集" / TRUSTEE_FOLDER
    _clear(base, [f"{period.year}年{period.month:02d}月"], [name, f"~${name}"])
    write_workbook(path, [sheet])
    if quirks and k % 3 == 0:
        _lock_file(folder / f"~${name}")
    return path, rejects, False


def write_samples(
    out_dir: Path,
    months: list[date],
    rows: int = 200,
    seed: int = 7,
    domains: tuple[str, ...] = DOMAINS,
    quirks: bool = True,
    overwrite: bool = False,
) -> list[SampleFile]:
    """Write the sample workbooks for `months` under `out_dir`; one SampleFile per domain and month.

    The two annuity domains share one workbook (written once). An existing workbook is kept
    unless `overwrite`; it is still returned, with the counts these arguments would give.
    """
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(
            f"no samples for domain(s) {', '.join(unknown)} (known: {', '.join(DOMAINS)})"
        )
    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    ref = load_reference()
    book = _build_book(ref, seed) if any(d in ANNUITY_DOMAINS for d in domains) else []
    periods = list(dict.fromkeys(date(m.year, m.month, 1) for m in months))
    written: list[SampleFile] = []
    for period in periods:
        annuity: tuple[Path, int, int, bool] | None = None
        for domain in domains:
            if domain == "trustee_performance":
                path, rejects, kept = _write_trustee(
                    ref, out_dir, period, rows, seed, quirks, overwrite
                )
                written.append(SampleFile(domain, period, path, rows, rejects, kept))
                continue
            if annuity is None:
                annuity = _write_annuity(ref, book, out_dir, period, rows, seed, quirks, overwrite)
            path, performance_rejects, income_rejects, kept = annuity
            rejects = performance_rejects if domain == "annuity_performance" else income_rejects
            written.append(SampleFile(domain, period, path, rows, rejects, kept))
    return written
