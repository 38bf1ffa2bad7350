"""The months operators type: `--period`, `--months`."""

from __future__ import annotations

from datetime import date

import pytest

from workdatahub.periods import PeriodError, month_range, parse_period


@pytest.mark.parametrize(
    "text", ["2024-03", "202403", "2024-03-01", " 2024-03 ", "2024-3", "2024-3-01"]
)
def test_a_month_as_operators_type_it(text: str) -> None:
    assert parse_period(text) == date(2024, 3, 1)


@pytest.mark.parametrize(
    "text", ["2024-13", "2024-0", "20243", "2024/03", "2024-03-02", "24-03", "", "0000-01"]
)
def test_what_is_no_month_is_said_so(text: str) -> None:
    with pytest.raises(PeriodError, match=r"is not a month like 2024-11"):
        parse_period(text)


def test_a_range_takes_two_dots() -> None:
    assert month_range("2024-11..2025-01") == [
        date(2024, 11, 1),
        date(2024, 12, 1),
        date(2025, 1, 1),
    ]
    with pytest.raises(PeriodError) as error:
        month_range("2024-01...2024-03")
    assert error.value.message == (
        "month range '2024-01...2024-03': a range takes two dots, like 2024-01..2024-03"
    )
