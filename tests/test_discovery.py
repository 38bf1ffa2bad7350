"""File discovery exactly as the data contract describes it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests.workbooks import TRUSTEE_HEADER, annuity_folder, trustee_folder, write_workbook
from workdatahub.errors import InputError
from workdatahub.sources.discovery import discover
from workdatahub.sources.spec import SourcesFile

NOV = date(2024, 11, 1)
NAME = "2024年11月年金终稿数据-规模收入数据.xlsx"


def book(path: Path) -> Path:
    return write_workbook(path, {"规模明细": [["月度"], ["202411"]]})


def test_highest_version_folder_wins(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    book(annuity_folder(tmp_path, "202411", NAME))
    book(annuity_folder(tmp_path, "202411", "V1", NAME))
    v2 = book(annuity_folder(tmp_path, "202411", "V2", NAME.replace("规模收入", "规模及收入")))
    book(annuity_folder(tmp_path, "202411", "V10", "unrelated.xlsx"))  # holds no match
    book(annuity_folder(tmp_path, "202411", "VX", NAME))  # not a version folder
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [v2]
    assert result.files[0].version == "V2"
    assert len(result.files[0].sha256) == 64
    reasons = {p.path.parent.name: p.reason for p in result.ignored}
    assert reasons["V1"] == "superseded by V2"
    assert reasons["数据采集"] == "superseded by V2"


def test_base_folder_used_without_versions_and_exclusions_ignored(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    wanted = book(annuity_folder(tmp_path, "202411", NAME))
    folder = annuity_folder(tmp_path, "202411")
    (folder / f"~${NAME}").write_bytes(b"lock")
    (folder / f".{NAME}").write_bytes(b"hidden")
    book(folder / NAME.replace(".xlsx", "回复.xlsx"))
    (folder / "规模收入数据.eml").write_text("mail")
    (folder / "规模收入数据.csv").write_text("a,b")
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [wanted]
    assert result.files[0].version is None
    ignored = {p.path.name: p.reason for p in result.ignored}
    assert "~$" in ignored[f"~${NAME}"]
    assert "回复" in ignored[NAME.replace(".xlsx", "回复.xlsx")]


def test_two_candidates_is_an_error_naming_both(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    a = book(annuity_folder(tmp_path, "202411", "V1", "A规模收入数据.xlsx"))
    b = book(annuity_folder(tmp_path, "202411", "V1", "B规模及收入数据.xlsm"))
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert str(a) in str(error.value) and str(b) in str(error.value)
    assert "2 candidate files" in str(error.value)


def test_no_folder_and_no_file_are_clear_errors(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    with pytest.raises(InputError, match="no folder"):
        discover(spec, NOV, tmp_path)
    annuity_folder(tmp_path, "202411").mkdir(parents=True)
    with pytest.raises(InputError, match="no file matching"):
        discover(spec, NOV, tmp_path)


def test_trustee_files_are_found_in_subfolders(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    path = write_workbook(
        trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx"),
        {"Sheet1": [TRUSTEE_HEADER]},
    )
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [path]
    payload = result.to_json(tmp_path)
    assert payload["files"][0]["path"] == "202411/收集数据/业务收集/受托部/2024年11月受托业绩.xlsx"
