"""Re-running the reader and hostile-workbook tests through one path of the reader
(tests/test_reader_split.py: the parallel parse; tests/test_reader_native.py: the native
scan), and making sure every sheet really went that way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from workdatahub.excel import reader


def drop_unreachable_tests(namespace: dict[str, Any], module: str) -> None:
    """Remove the imported tests the patches cannot reach: those of the loader (database)
    and those running `wdh` in a subprocess."""
    for name, test in list(namespace.items()):
        if name.startswith("test_") and getattr(test, "__module__", module) != module:
            marks = {m.name for m in getattr(test, "pytestmark", [])}
            if "db" in marks or name in _UNREACHABLE:
                del namespace[name]


_UNREACHABLE = {
    "test_real_processes_print_one_line_and_exit_2",  # `wdh` in a subprocess
    # a sheet whose XML the scan leaves to fastexcel whole (a namespace prefix)
    "test_a_sheet_written_with_a_namespace_prefix_gets_every_check",
    # tests that choose the reads themselves (the native scan broken, or on and off)
    "test_a_failing_native_scan_is_said_and_the_sheet_read_all_the_same",
    "test_a_header_merged_down_over_the_row_below_is_the_header",
}


@dataclass
class Route:
    required: bool = True  # a sheet with rows, read without an error, must have gone this way
    tried: list[bool] = field(default_factory=list)  # per attempt of the path: was it taken


def require(monkeypatch: pytest.MonkeyPatch, route: Route, attempt: str, failure: str) -> None:
    """Record each call of `reader.<attempt>` (None: the path was not taken) and fail a
    read of a sheet with rows that did not take it, with `failure` after the sheet."""
    original, load_and_scan = getattr(reader, attempt), reader._load_and_scan

    def tried(book: Any, sheet: Any) -> Any:
        result = original(book, sheet)
        route.tried.append(result is not None)
        return result

    def loaded(book: Any, sheet: Any, where: str) -> Any:
        route.tried.clear()
        result = load_and_scan(book, sheet, where)
        if route.required and result[0].height:
            assert route.tried == [True], f"{where}: {failure}"
        return result

    monkeypatch.setattr(reader, attempt, tried)
    monkeypatch.setattr(reader, "_load_and_scan", loaded)


def read_unforced(
    path: Any, spec: Any, route: Route, monkeypatch: pytest.MonkeyPatch, threshold: str
) -> reader.SheetData:
    """The same sheet read the way it would be without the forced path (the reader's size
    `threshold` for that path out of reach), for comparison."""
    with monkeypatch.context() as patch:
        patch.setattr(reader, threshold, 1 << 62)
        patch.setattr(route, "required", False)
        return reader.read_sheet(path, spec)
