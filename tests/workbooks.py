"""Build small workbooks cell by cell for targeted tests (xlsxwriter, deterministic)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import xlsxwriter

TRUSTEE_HEADER = ["年", "月", "计划代码", "公司代码", "收益率", "净值", "规模"]

ANNUITY_PERFORMANCE_HEADER = [
    "月度", "业务类型", "计划类型", "计划代码", "计划名称", "组合类型", "组合代码", "组合名称",
    "客户名称", "集团企业客户号", "集团企业客户名称", "子企业号", "子企业名称", "期初资产规模",
    "期末资产规模", "供款", "流失(含待遇支付)", "流失", "待遇支付", "投资收益", "当期收益率",
    "机构名称", "备注",
]  # fmt: skip

ANNUITY_INCOME_HEADER = [
    "月度", "业务类型", "计划类型", "计划代码", "计划名称", "组合类型", "组合代码", "组合名称",
    "客户名称", "机构名称", "固费", "浮费", "回补", "税",
]  # fmt: skip


class Merged:
    """A merged title cell spanning `width` columns."""

    def __init__(self, text: str, width: int) -> None:
        self.text, self.width = text, width


class Formatted:
    """A number cell shown in a number format: `Formatted(123, "000000")`."""

    def __init__(self, value: float, num_format: str) -> None:
        self.value, self.num_format = value, num_format


def write_workbook(
    path: Path,
    sheets: dict[str, list[list[Any] | Merged | None]],
    *,
    first_row: int = 0,
    first_col: int = 0,
) -> Path:
    """Each sheet is a list of rows; None is an empty row; datetimes become date cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    book = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False})
    book.set_properties({"created": datetime(2024, 1, 1)})
    date_format = book.add_format({"num_format": "yyyy-mm-dd"})
    formats: dict[str, Any] = {}
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for offset, row in enumerate(rows):
            r = first_row + offset
            if row is None:
                continue
            if isinstance(row, Merged):
                sheet.merge_range(r, first_col, r, first_col + row.width - 1, row.text)
                continue
            for c, value in enumerate(row):
                col = first_col + c
                if value is None:
                    continue
                if isinstance(value, (datetime, date)):
                    sheet.write_datetime(
                        r, col, datetime(value.year, value.month, value.day), date_format
                    )
                elif isinstance(value, Formatted):
                    shown = formats.setdefault(
                        value.num_format, book.add_format({"num_format": value.num_format})
                    )
                    sheet.write_number(r, col, value.value, shown)
                elif isinstance(value, str):
                    sheet.write_string(r, col, value)
                else:
                    sheet.write(r, col, value)
    book.close()
    return path


def trustee_folder(data_dir: Path, yyyymm: str, *parts: str) -> Path:
    return data_dir.joinpath(yyyymm, "收集数据", "业务收集", *parts)


def annuity_folder(data_dir: Path, yyyymm: str, *parts: str) -> Path:
    return data_dir.joinpath(yyyymm, "收集数据", "数据采集", *parts)
