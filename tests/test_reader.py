"""Reading real layouts: title rows, aliases, full-width headers, shuffled and extra
columns, blank and totals rows; Excel row numbers as the operator sees them."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests import hostile_corpus as corpus
from tests.hostile_corpus import trustee_rows
from tests.workbooks import (
    ANNUITY_INCOME_HEADER,
    TRUSTEE_HEADER,
    Formatted,
    Merged,
    write_workbook,
)
from workdatahub.errors import InputError
from workdatahub.excel.reader import ROW, read_sheet
from workdatahub.sources.spec import SourcesFile


@pytest.mark.parametrize(("first_row", "first_col"), [(0, 0), (3, 2)])
def test_title_rows_and_offsets_keep_excel_row_numbers(
    sources: SourcesFile, tmp_path: Path, first_row: int, first_col: int
) -> None:
    spec = sources.domain("trustee_performance")
    path = write_workbook(
        tmp_path / "t.xlsx",
        {
            "Sheet1": [
                Merged("2024年11月受托业绩表", 7),
                None,
                TRUSTEE_HEADER,
                *trustee_rows(3, start=0),
            ]
        },
        first_row=first_row,
        first_col=first_col,
    )
    sheet = read_sheet(path, spec)
    assert sheet.header_row == first_row + 3
    assert sheet.frame[ROW].to_list() == [first_row + 4, first_row + 5, first_row + 6]
    assert sheet.frame["plan_code"].to_list() == ["P0000", "P0001", "P0002"]


def test_blank_and_totals_rows_are_skipped_not_rejected(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    rows = trustee_rows(2, start=0)
    path = write_workbook(
        tmp_path / "t.xlsx",
        {
            "S": [
                TRUSTEE_HEADER,
                rows[0],
                None,
                ["", " ", None],
                rows[1],
                ["合计", None, None, None, None, None, 200],
                [None, "总计"],
            ]
        },
    )
    sheet = read_sheet(path, spec)
    assert sheet.frame[ROW].to_list() == [2, 5]
    assert sheet.skipped_blank == 2 and sheet.skipped_totals == 2
    assert sheet.rows_read == 2


@pytest.mark.parametrize("marker", ["合 计", "合计：", " 总　计 ", "合  计:", "合\u3000\u3000计"])
def test_totals_markers_spaced_out_or_written_as_a_label(
    sources: SourcesFile, tmp_path: Path, marker: str
) -> None:
    spec = sources.domain("trustee_performance")
    rows = trustee_rows(2, start=0)
    totals = [marker, None, None, None, None, None, 200]
    past_a_number = [2024, marker, None, None, None, None, 200]  # found past the year too
    path = write_workbook(
        tmp_path / "t.xlsx", {"S": [TRUSTEE_HEADER, rows[0], totals, rows[1], past_a_number]}
    )
    sheet = read_sheet(path, spec)
    assert sheet.frame[ROW].to_list() == [2, 4]
    assert sheet.skipped_totals == 2 and sheet.rows_read == 2


def test_signature_lines_below_the_totals_row_are_a_footer_not_data(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    rows = trustee_rows(2, start=0)
    totals = ["合计", None, None, None, None, None, 200]
    signed = ["制表人：张三", None, "审核: 李四", None, None, "复核：", None]
    path = write_workbook(
        tmp_path / "t.xlsx",
        {"S": [TRUSTEE_HEADER, *rows, totals, signed, None, [None, "注：规模单位为元"]]},
    )
    sheet = read_sheet(path, spec)
    assert sheet.frame[ROW].to_list() == [2, 3]
    assert (sheet.skipped_footer, sheet.skipped_totals, sheet.skipped_blank) == (2, 1, 1)
    # only at the sheet's end: lines with data after them are data (and rejected); so is a
    # line with a number; without a totals row there is no footer
    for name, table in {
        "later.xlsx": [TRUSTEE_HEADER, rows[0], totals, signed, rows[1]],
        "number.xlsx": [TRUSTEE_HEADER, *rows, totals, ["制表日期：", 20241205]],
        "bare.xlsx": [TRUSTEE_HEADER, *rows, signed],
    }.items():
        read = read_sheet(write_workbook(tmp_path / name, {"S": table}), spec)
        assert read.skipped_footer == 0 and read.rows_read == 3, name


def test_totals_rows_are_read_in_the_sheets_order_past_numbers_and_dates(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """The marker is the row's first non-empty text cell: in a column the spec does not read
    (a leading 序号), or after a number or a date (the year filled on every row)."""
    spec = sources.domain("trustee_performance")
    rows = trustee_rows(3, start=0)
    path = write_workbook(
        tmp_path / "t.xlsx",
        {
            "S": [
                ["序号", *TRUSTEE_HEADER],
                [1, *rows[0]],
                ["合计", None, None, None, None, None, None, 200],  # 序号 holds the marker
                [2, *rows[1]],
                [None, 2024, "总计", None, None, None, None, 300],  # a number before it
                [None, date(2024, 11, 1), None, "合计"],  # a date before it
                [3, 2024, "x", "合计"],  # text before it: a data row (rejected later)
                [4, *rows[2]],
            ]
        },
    )
    sheet = read_sheet(path, spec)
    assert sheet.frame[ROW].to_list() == [2, 4, 7, 8]
    assert sheet.skipped_totals == 3 and sheet.skipped_blank == 0


def test_aliases_fullwidth_headers_shuffled_and_extra_columns(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_income")
    header = list(reversed(ANNUITY_INCOME_HEADER))
    header[header.index("计划代码")] = " 计划号 "  # alias, with spaces
    header[header.index("机构名称")] = "机构"  # alias
    header[header.index("固费")] = "固费\u3000"  # full-width space
    header.insert(3, "经办人")  # unknown column
    row = {h.strip(): f"v{i}" for i, h in enumerate(header)}
    path = write_workbook(tmp_path / "a.xlsx", {"收入明细": [header, list(row.values())]})
    sheet = read_sheet(path, spec)
    assert sheet.columns["plan_code"] == "计划号"
    assert sheet.columns["branch_name"] == "机构"
    assert "经办人" not in sheet.frame.columns
    assert sheet.frame["plan_code"].to_list() == [row["计划号"]]
    assert sheet.missing_optional == ["branch_code"]


def test_fullwidth_bracket_header_matches(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    from tests.workbooks import ANNUITY_PERFORMANCE_HEADER

    header = [
        ("流失（含待遇支付）" if h == "流失(含待遇支付)" else h) for h in ANNUITY_PERFORMANCE_HEADER
    ]
    path = write_workbook(
        tmp_path / "a.xlsx", {"规模明细": [header, ["202411"] + ["x"] * (len(header) - 1)]}
    )
    sheet = read_sheet(path, spec)
    assert sheet.columns["outflow_incl_benefits"] == "流失（含待遇支付）"
    assert sheet.columns["outflow"] == "流失"


def test_numbers_and_dates_stored_both_ways_arrive_as_text(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_income")
    header = ANNUITY_INCOME_HEADER
    rows = [
        [
            date(2024, 11, 1),
            "企年受托",
            "集合计划",
            12345,
            "n",
            "t",
            678,
            "p",
            "c",
            "北京",
            1.5,
            "2,000",
            0,
            "-",
        ],
        ["2024年11月", "企年受托", "集合计划", "P1", "n", "t", "F9", "p", "c", "北京", 1, 2, 3, 4],
    ]
    path = write_workbook(tmp_path / "a.xlsx", {"收入明细": [header, *rows]})
    frame = read_sheet(path, spec).frame
    assert frame["period"].to_list() == ["2024-11-01 00:00:00", "2024年11月"]
    assert frame["plan_code"].to_list() == ["12345", "P1"]  # a code stored as a number: no .0
    assert frame["variable_fee"].to_list() == ["2,000", "2"]


def test_a_code_in_a_zeros_format_keeps_its_zeros(sources: SourcesFile, tmp_path: Path) -> None:
    """A code in a `000000` format shows its zeros (123 is 000123 on screen and in the
    reference data), and is read so; a number in any other format reads as written (a
    percent-format rate included: a bare number above 1 is a percent figure, whatever the
    cell shows, as the contract has it)."""
    spec = sources.domain("trustee_performance")
    rows = [
        [2024, 11, Formatted(123, "000000"), "C1", Formatted(1.5, "0.00%"), 1, 2],
        [2024, 11, Formatted(1234567, "000000"), "C1", Formatted(0.035, "0.00%"), 1, 2],
        [2024, 11, Formatted(-12, "000"), "C1", 3.5, 1, 2],
        [2024, 11, Formatted(7, "0"), "C1", 3.5, 1, 2],
        [2024, 11, Formatted(12.5, "0000"), "C1", 3.5, 1, 2],
        [2024, 11, Formatted(290, '"P"0000'), "C1", 3.5, 1, 2],
    ]
    path = write_workbook(tmp_path / "t.xlsx", {"S": [TRUSTEE_HEADER, *rows]})
    frame = read_sheet(path, spec).frame
    assert frame["plan_code"].to_list() == ["000123", "1234567", "-012", "7", "12.5", "290"]
    assert frame["return_rate"].to_list() == ["1.5", "0.035", "3.5", "3.5", "3.5", "3.5"]

    # a formula's result shows in the format too, on every path
    def formula(book: Any, sheet: Any) -> None:
        sheet.write_formula(1, 2, "=100+23", book.add_format({"num_format": "000000"}), 123)

    book = corpus.sheet_book(tmp_path / "f.xlsx", [TRUSTEE_HEADER, rows[0][:2]], edit=formula)
    assert read_sheet(book, spec).frame["plan_code"].to_list() == ["000123"]


def test_missing_required_column_names_it(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    header = [h for h in TRUSTEE_HEADER if h != "公司代码"]
    path = write_workbook(tmp_path / "t.xlsx", {"S": [header, [2024, 11, "P1", "5%", 1, 2]]})
    with pytest.raises(InputError, match=r"required column missing: 公司代码 \(header row 1\)"):
        read_sheet(path, spec)


def test_missing_required_column_names_the_headers_nobody_claims(
    sources: SourcesFile, tmp_path: Path
) -> None:
    # the usual cause: a header renamed this month; the message points at it (and at an
    # unknown extra column), not at the headers the contract knows
    spec = sources.domain("trustee_performance")
    header = [" 公司编码 " if h == "公司代码" else h for h in TRUSTEE_HEADER] + ["经办人"]
    path = write_workbook(tmp_path / "t.xlsx", {"S": [["标题"], header, [2024, 11, "P1"]]})
    with pytest.raises(InputError) as caught:
        read_sheet(path, spec)
    assert str(caught.value).endswith(
        "required column missing: 公司代码 (header row 2; headers no column reads there: "
        "公司编码, 经办人)"
    )


@pytest.mark.parametrize(
    ("title", "refused"),
    [
        ("单位：元", False),
        ("金额单位: 人民币元", False),
        ("单位：元/万份", False),
        ("单位：万元", True),
        ("（金额单位：千元）", True),
        ("2024年11月规模明细表　单位：人民币万元", True),
        ("单位（万元）", True),
        ("2024年11月规模明细表（万元）", True),
        ("单位/万元", True),
        ("金额单位为万元", True),
    ],
)
def test_a_sheet_stating_its_amounts_in_a_multiple_of_yuan_is_refused(
    sources: SourcesFile, tmp_path: Path, title: str, refused: bool
) -> None:
    # the contract's amounts are 元: 万元 figures loaded as they stand would be 10,000× short
    spec = sources.domain("trustee_performance")
    rows = [["规模明细"], [None, None, None, title], TRUSTEE_HEADER, *trustee_rows(2)]
    path = write_workbook(tmp_path / "t.xlsx", {"S": rows})
    if not refused:
        assert read_sheet(path, spec).frame.height == 2
        return
    with pytest.raises(InputError) as caught:
        read_sheet(path, spec)
    assert str(caught.value).endswith(
        f"sheet 'S': row 2: the sheet states {title!r}; amounts load as 元, as the contract "
        "has them: convert the sheet to 元 (or correct that line) and load it again"
    )


def test_a_unit_beside_the_headers_is_seen_too(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    rows = [[*TRUSTEE_HEADER, None, "单位：万元"], *trustee_rows(2)]
    path = write_workbook(tmp_path / "t.xlsx", {"S": rows})
    with pytest.raises(InputError, match=r"row 1: the sheet states '单位：万元'"):
        read_sheet(path, spec)
    # the header of an extra column, in its own unit, is that column's: the table is read
    extra = [[*TRUSTEE_HEADER, "期末规模（万元）"], *trustee_rows(2)]
    assert read_sheet(write_workbook(tmp_path / "e.xlsx", {"S": extra}), spec).rows_read == 2


def test_no_header_row_at_all(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    path = write_workbook(tmp_path / "t.xlsx", {"S": [["a", "b"], [1, 2]]})
    with pytest.raises(InputError, match="no header row found"):
        read_sheet(path, spec)


def test_missing_sheet_lists_the_sheets(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    path = write_workbook(tmp_path / "a.xlsx", {"收入明细": [["月度"]], "其他": [["x"]]})
    with pytest.raises(InputError, match=r"sheet '规模明细' not found \(sheets: 收入明细, 其他\)"):
        read_sheet(path, spec)


def test_duplicate_header_is_an_error_naming_both_columns(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    path = write_workbook(
        tmp_path / "t.xlsx", {"S": [[*TRUSTEE_HEADER, "计划代码"], trustee_rows(1, start=0)[0]]}
    )
    with pytest.raises(InputError, match=r"appears twice \(columns C and H\)"):
        read_sheet(path, spec)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a zip at all", "not a readable workbook"),
        (b"PK\x03\x04broken", "not a readable workbook"),
    ],
)
def test_not_a_workbook(
    sources: SourcesFile, tmp_path: Path, content: bytes, expected: str
) -> None:
    spec = sources.domain("trustee_performance")
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=expected):
        read_sheet(path, spec)


def test_zip_that_is_not_a_workbook(sources: SourcesFile, tmp_path: Path) -> None:
    import zipfile

    spec = sources.domain("trustee_performance")
    path = tmp_path / "z.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(InputError, match=str(path)):
        read_sheet(path, spec)


def test_flagged_cells_keep_their_place_when_the_table_is_offset(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """Error cells and merged ranges are located in Excel coordinates, whatever the first used
    row and column are, and only for the columns the spec reads."""
    import xlsxwriter

    from workdatahub.excel.reader import CELL_ISSUE

    spec = sources.domain("trustee_performance")
    path = tmp_path / "t.xlsx"
    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("S")
    sheet.write(0, 5, "2024年11月")  # a title right of the table moves the first used column
    sheet.write_row(3, 2, ["备注", *TRUSTEE_HEADER])  # header in row 4 from column C
    for r, row in enumerate(trustee_rows(4, start=0)):
        sheet.write_row(4 + r, 3, row)
    sheet.write_formula(5, 8, "1/0", None, "#DIV/0!")  # I6: 净值 of Excel row 6
    sheet.write_formula(6, 2, "1/0", None, "#DIV/0!")  # C7: 备注, not read
    sheet.merge_range(6, 5, 7, 5, "P9")  # F7:F8: 计划代码 of rows 7 and 8
    book.close()
    corpus.as_excel_saved(path)
    frame = read_sheet(path, spec).frame
    assert frame[ROW].to_list() == [5, 6, 7, 8]
    assert frame[CELL_ISSUE + "net_value"].to_list() == [None, "Excel error #DIV/0!", None, None]
    assert frame["net_value"].to_list() == ["1.5", "#DIV/0!", "1.5", "1.5"]
    merged = "part of merged cells F7:F8; unmerge them and fill each cell"
    assert frame[CELL_ISSUE + "plan_code"].to_list() == [None, None, merged, merged]
    assert sorted(c for c in frame.columns if c.startswith(CELL_ISSUE)) == [
        CELL_ISSUE + "net_value", CELL_ISSUE + "plan_code",
    ]  # fmt: skip


_ROWS = [
    [None, None, None],  # blank
    ["", None, ""],  # blank
    ["合计", None, "100"],  # totals
    [None, " 总计 ", "5"],  # totals: the first non-blank cell, trimmed
    ["x", "合计", None],  # data: the marker is not the first cell
    ["合计x", None, None],  # data: not the marker alone
    ["202411", "合计", None],  # totals: the first text cell, past a number
    ["2024-11-01 00:00:00", " 1.5", "总计"],  # totals: past a date (as read) and a number
    ["a1", "1", "合计"],  # data: text before the marker
    [None, "a\x00b", None],  # data holding a NUL
    ["1", "2", "3"],
]


@pytest.mark.parametrize("whitespace_first", [False, True])
def test_row_marks_need_only_the_first_non_empty_cell(whitespace_first: bool) -> None:
    import polars as pl

    from workdatahub.excel import reader

    rows = _ROWS + ([[" ", "合计", None], ["\u3000", None, " "]] if whitespace_first else [])
    names = ["a", "b", "c"]
    body = pl.DataFrame(
        {n: [r[i] for r in rows] for i, n in enumerate(names)},
        schema=dict.fromkeys(names, pl.String),
    ).with_row_index(ROW)
    fast = reader._row_marks(body, names, [])
    assert fast.equals(reader._row_marks(body, names, [], cell_by_cell=True))
    expected_blank = [True, True, False, False, False, False, False, False, False, False, False]
    expected_totals = [False, False, True, True, False, False, True, True, False, False, False]
    if whitespace_first:  # whitespace before a marker: still its row's first non-blank cell
        expected_blank += [False, True]
        expected_totals += [True, False]
    assert fast["_blank"].to_list() == expected_blank
    assert fast["_totals"].to_list() == expected_totals
    assert fast["_nul"].to_list() == [i == 9 for i in range(len(rows))]


@pytest.mark.parametrize("whitespace_first", [False, True])
def test_row_marks_read_the_unread_columns_in_the_sheets_order(whitespace_first: bool) -> None:
    """A column the spec does not read (`u`, first in the sheet) counts for totals, not for
    blank rows; an error or a boolean before the marker is no text cell either."""
    import polars as pl

    from workdatahub.excel import reader

    rows = [
        ["合计", None, None],  # the marker alone, in the unread column: totals, not blank
        ["7", None, None],  # something in the unread column only: blank
        ["8", "#DIV/0!", "合计"],  # past a number and an error
        [None, "true", "总计"],  # past a boolean (as the readers write one)
        ["9", "x", "合计"],  # text first: data
        [None, "a", "b"],
        ["备注", "合计", None],  # text in the unread column first: data
    ] + ([[" ", "合计", None]] if whitespace_first else [])
    body = pl.DataFrame(
        {n: [r[i] for r in rows] for i, n in enumerate(["u", "a", "b"])},
        schema=dict.fromkeys(["u", "a", "b"], pl.String),
    ).with_row_index(ROW)
    order = ["u", "a", "b"]
    fast = reader._row_marks(body, ["a", "b"], [], nul_free=True, sheet_order=order)
    slow = reader._row_marks(body, ["a", "b"], [], True, nul_free=True, sheet_order=order)
    assert fast.equals(slow)
    expected_totals = [True, False, True, True, False, False, False] + [True] * whitespace_first
    assert fast["_totals"].to_list() == expected_totals
    assert fast["_blank"].to_list() == [False, True] + [False] * (len(rows) - 2)


def test_a_stray_cell_far_right_leaves_the_totals_test_to_the_table(
    sources: SourcesFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The used range runs to a stray cell in column ZZ: the totals test reads the table's
    columns and the unread ones holding something below the header, not ~700 empty ones."""
    from workdatahub.excel import reader

    spec = sources.domain("trustee_performance")
    rows: list[object] = [
        ["序号", *TRUSTEE_HEADER],
        *[[n, *row] for n, row in enumerate(trustee_rows(3, start=0), start=1)],
        ["合计", None, None, None, None, None, None, 300],
    ]
    stray = [None] * 701 + ["stray"]  # column ZZ of row 1
    path = write_workbook(tmp_path / "t.xlsx", {"S": [stray, *rows]})
    seen: list[list[str]] = []
    row_marks = reader._row_marks

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(list(kwargs["sheet_order"]))  # type: ignore[arg-type]
        return row_marks(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reader, "_row_marks", spy)
    sheet = read_sheet(path, spec)
    assert sheet.rows_read == 3 and sheet.skipped_totals == 1
    assert [len(order) for order in seen] == [len(TRUSTEE_HEADER) + 1]  # and 序号


def test_row_marks_test_cell_by_cell_only_the_rows_that_need_it() -> None:
    """Rows mixing empty cells, whitespace, markers, numbers and text, in an unread column
    too: the marks are those of testing every row cell by cell, whichever rows hold a
    whitespace-only cell first."""
    import random

    import polars as pl

    from workdatahub.excel import reader

    cells = [None, "", " ", "\u3000", "合计", " 总计 ", "202411", "1.5", "x", "true"]
    pick = random.Random(7)
    rows = [[pick.choice(cells) for _ in range(4)] for _ in range(3_000)]
    order = ["u", "a", "b", "c"]
    body = pl.DataFrame(
        {n: [r[i] for r in rows] for i, n in enumerate(order)},
        schema=dict.fromkeys(order, pl.String),
    ).with_row_index(ROW)
    names = ["a", "b", "c"]
    by_rows = reader._row_marks(body, names, [], nul_free=True, sheet_order=order)
    every = reader._row_marks(body, names, [], True, nul_free=True, sheet_order=order)
    assert by_rows.equals(every)
    assert by_rows["_totals"].sum() > 0 and by_rows["_blank"].sum() > 0
    # and the first cell alone decides the rows it can: those differ when not told apart
    assert not reader._row_marks(body, names, [], False, nul_free=True, sheet_order=order).equals(
        every
    )


def test_a_padded_marker_past_a_number_makes_a_totals_row() -> None:
    """`202411 | " 总计 "`: the first text cell, trimmed, is the marker, as when it comes
    first; text before it still makes a data row."""
    import polars as pl

    from workdatahub.excel import reader

    rows = [
        ["202411", " 总计 ", None],
        ["202411", "合计\u3000", None],
        ["1.5", None, "\t合计"],
        ["202411", "x", " 合计 "],
        ["202411", "a", "b"],
    ]
    body = pl.DataFrame(
        {n: [r[i] for r in rows] for i, n in enumerate("abc")},
        schema=dict.fromkeys("abc", pl.String),
    ).with_row_index(ROW)
    marks = reader._row_marks(body, ["a", "b", "c"], [], nul_free=True)
    assert marks["_totals"].to_list() == [True, True, True, False, False]
    assert not marks["_blank"].any()
