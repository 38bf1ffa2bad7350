"""File discovery exactly as the data contract describes it."""

from __future__ import annotations

import re
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
    assert str(error.value).endswith("(keep one)")  # (in a version folder already)
    # in the base folder, the other may be a correction: it has a folder of its own
    for path in (a, b):
        path.rename(annuity_folder(tmp_path, "202411", path.name))
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert str(error.value).endswith("(keep one; a correction goes in a V<n> folder)")


def test_a_correction_in_a_version_folder_further_down_is_told_where_it_goes(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """Trustee workbooks sit in subfolders of the base folder (受托部/); a correction put in
    a V2 folder beside the file it corrects is not in a version folder discovery reads as
    one: the two-candidates error says where it goes."""
    spec = sources.domain("trustee_performance")
    book(trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.xlsx"))
    nested = trustee_folder(tmp_path, "202411", "受托部", "V2")
    book(nested / "2024年11月受托业绩.xlsx")
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    base = trustee_folder(tmp_path, "202411")
    assert str(error.value).endswith(
        f"(keep one; a correction goes in a V<n> folder directly in {base}, not in {nested})"
    )


def test_no_folder_and_no_file_are_clear_errors(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    with pytest.raises(InputError, match="no folder"):
        discover(spec, NOV, tmp_path)
    annuity_folder(tmp_path, "202411").mkdir(parents=True)
    with pytest.raises(InputError, match="no file matching"):
        discover(spec, NOV, tmp_path)
    # the data folder given as a month's folder: said so
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path / "202411")
    assert str(error.value).endswith(
        "(the data folder is the one that holds the YYYYMM folders, not a month's)"
    )


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


# -- links, pipes and odd names: nothing outside the data directory is ever read ---------------

WORKBOOK = "2024年11月受托业绩.xlsx"


def _trustee(data_dir: Path, *parts: str) -> Path:
    return write_workbook(trustee_folder(data_dir, "202411", *parts), {"S": [TRUSTEE_HEADER]})


def test_file_link_outside_the_data_directory_is_refused(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    secret = _trustee(outside, "x.xlsx")
    link = trustee_folder(data, "202411", "受托部", WORKBOOK)
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with pytest.raises(InputError) as error:
        discover(spec, NOV, data)
    assert str(error.value) == (
        f"trustee_performance 2024-11: no file matching *受托业绩*.xlsx, *受托业绩*.xlsm in "
        f"{trustee_folder(data, '202411')} ({link}: links outside the data directory)"
    )


def test_folder_links_outside_or_in_a_loop_are_not_walked(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    _trustee(outside, "受托部", "另一个受托业绩.xlsx")
    wanted = _trustee(data, "受托部", WORKBOOK)
    base = trustee_folder(data, "202411")
    (base / "外部").symlink_to(outside, target_is_directory=True)
    (base / "受托部" / "回环").symlink_to(base, target_is_directory=True)  # a loop
    result = discover(spec, NOV, data)
    assert [f.path for f in result.files] == [wanted]
    assert [(i.path.name, i.reason) for i in result.ignored] == [
        ("外部", "folder link points outside the data directory")
    ]


def test_version_folder_link_outside_is_refused(sources: SourcesFile, tmp_path: Path) -> None:
    """The newest version refused: the base workbook is not loaded in its place unseen."""
    spec = sources.domain("trustee_performance")
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    _trustee(outside, "V9", WORKBOOK)
    _trustee(data, WORKBOOK)
    (trustee_folder(data, "202411") / "V9").symlink_to(
        trustee_folder(outside, "202411", "V9"), target_is_directory=True
    )
    with pytest.raises(InputError) as refused:
        discover(spec, NOV, data)
    assert "V9, the newest version folder, is refused (folder link points outside the data " in (
        refused.value.message
    )
    assert "not loaded from an older version" in refused.value.message


@pytest.mark.parametrize("kind", ["outside", "broken", "pipe"])
def test_a_refused_workbook_in_the_newest_version_is_an_error_not_the_older_one(
    sources: SourcesFile, tmp_path: Path, kind: str
) -> None:
    import os

    spec = sources.domain("trustee_performance")
    data = tmp_path / "data"
    _trustee(data, "V1", WORKBOOK)
    newest = trustee_folder(data, "202411", "V2", WORKBOOK)
    newest.parent.mkdir(parents=True)
    if kind == "pipe":
        os.mkfifo(newest)
    else:
        target = _trustee(tmp_path / "elsewhere", WORKBOOK) if kind == "outside" else data / "x"
        newest.symlink_to(target)
    reason = {"outside": "links outside the data directory", "broken": "broken link",
              "pipe": "not a regular file"}[kind]  # fmt: skip
    with pytest.raises(InputError, match=f"in V2, the newest version, is refused \\({reason}\\)"):
        discover(spec, NOV, data)
    os.remove(newest)  # without it, V1 is the newest
    assert discover(spec, NOV, data).files[0].version == "V1"


@pytest.mark.parametrize("kept", [WORKBOOK, "受托业绩.xls"])
def test_beside_a_readable_workbook_a_refused_one_named_like_it_is_two_candidates(
    sources: SourcesFile, tmp_path: Path, kept: str
) -> None:
    """Which of the two is the correction is not known: as with two readable workbooks
    (an old .xls counts as one too)."""
    spec = sources.domain("trustee_performance")
    data = tmp_path / "data"
    _trustee(data, "V1", WORKBOOK)
    folder = trustee_folder(data, "202411", "V2")
    _xls(folder / kept) if kept.endswith(".xls") else _trustee(data, "V2", kept)
    (folder / "受托业绩_更正.xlsx").symlink_to(tmp_path / "gone.xlsx")
    expected = rf"V2 holds .*{re.escape(kept)} and .*受托业绩_更正\.xlsx \(broken link\), "
    with pytest.raises(InputError, match=expected):
        discover(spec, NOV, data)


def test_beside_a_readable_workbook_a_refused_folder_link_is_only_listed(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")  # (its folders are read recursively)
    data = tmp_path / "data"
    _trustee(data, "V1", WORKBOOK)
    wanted = _trustee(data, "V2", WORKBOOK)
    (wanted.parent / "参考").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    result = discover(spec, NOV, data)
    assert [(f.path, f.version) for f in result.files] == [(wanted, "V2")]
    assert ("参考", "folder link points outside the data directory") in [
        (i.path.name, i.reason) for i in result.ignored
    ]


def test_a_broken_link_named_like_a_version_folder_is_the_newest_refused(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """An unmounted share's V3: V2 is not loaded in its place unseen."""
    spec = sources.domain("trustee_performance")
    data = tmp_path / "data"
    _trustee(data, "V2", WORKBOOK)
    (trustee_folder(data, "202411") / "V3").symlink_to(tmp_path / "unmounted" / "V3")
    with pytest.raises(
        InputError, match=r"V3, the newest version folder, is refused \(broken folder link\)"
    ):
        discover(spec, NOV, data)


def test_month_folder_link_outside_is_refused(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    _trustee(outside, WORKBOOK)
    data.mkdir()
    (data / "202411").symlink_to(outside / "202411", target_is_directory=True)
    with pytest.raises(InputError, match="escapes the data directory"):
        discover(spec, NOV, data)


def test_broken_links_and_pipes_are_ignored_with_the_reason(
    sources: SourcesFile, tmp_path: Path
) -> None:
    import os

    spec = sources.domain("trustee_performance")
    wanted = _trustee(tmp_path, "受托部", WORKBOOK)
    folder = wanted.parent
    (folder / "旧受托业绩.xlsx").symlink_to(tmp_path / "gone.xlsx")
    os.mkfifo(folder / "管道受托业绩.xlsx")  # reading it would block forever
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [wanted]
    assert sorted((i.path.name, i.reason) for i in result.ignored) == [
        ("旧受托业绩.xlsx", "broken link"),
        ("管道受托业绩.xlsx", "not a regular file"),
    ]


def test_link_inside_the_data_directory_is_followed(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    shared = _trustee(tmp_path, "共享", "原件.xlsx")  # inside the data directory
    link = trustee_folder(tmp_path, "202411", "受托部", WORKBOOK)
    link.parent.mkdir(parents=True)
    link.symlink_to(shared)
    assert [f.path for f in discover(spec, NOV, tmp_path).files] == [link]


def test_a_line_break_in_a_file_name_keeps_the_error_on_one_line(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    _trustee(tmp_path, "受托部", WORKBOOK)
    _trustee(tmp_path, "受托部", "副本\n受托业绩.xlsx")
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert "2 candidate files" in str(error.value) and "\n" not in str(error.value)


# -- extensions in any case, old .xls workbooks, version folders as they are on disk ----------


@pytest.mark.parametrize("extension", [".XLSX", ".Xlsx", ".XLSM", ".xlsX"])
def test_upper_case_extension_in_a_newer_version_folder_wins(
    sources: SourcesFile, tmp_path: Path, extension: str
) -> None:
    spec = sources.domain("annuity_performance")
    old = book(annuity_folder(tmp_path, "202411", NAME))
    v5 = book(annuity_folder(tmp_path, "202411", "V5", NAME.replace(".xlsx", extension)))
    result = discover(spec, NOV, tmp_path)
    assert [(f.path, f.version) for f in result.files] == [(v5, "V5")]
    assert [(i.path, i.reason) for i in result.ignored] == [(old, "superseded by V5")]


def test_upper_case_extension_matches_for_every_domain(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")
    wanted = _trustee(tmp_path, "受托部", "2024年11月受托业绩.XLSM")
    assert [f.path for f in discover(spec, NOV, tmp_path).files] == [wanted]


def test_upper_case_extension_counts_as_a_second_candidate(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    book(annuity_folder(tmp_path, "202411", "A规模收入数据.xlsx"))
    book(annuity_folder(tmp_path, "202411", "B规模收入数据.XLSX"))
    with pytest.raises(InputError, match="2 candidate files"):
        discover(spec, NOV, tmp_path)


@pytest.mark.parametrize("extension", [".xls", ".XLS"])
def test_xls_in_the_newest_version_folder_is_an_error_naming_it(
    sources: SourcesFile, tmp_path: Path, extension: str
) -> None:
    spec = sources.domain("annuity_performance")
    book(annuity_folder(tmp_path, "202411", NAME))
    book(annuity_folder(tmp_path, "202411", "V1", NAME))
    xls = annuity_folder(tmp_path, "202411", "V2", NAME.replace(".xlsx", extension))
    xls.parent.mkdir(parents=True)
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # an OLE container
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert str(error.value) == (
        f"annuity_performance 2024-11: {xls} is an old Excel 97-2003 .xls workbook, which "
        "cannot be read: open it in Excel and save it as .xlsx"
    )


def test_an_only_xls_file_is_an_error_naming_it(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("trustee_performance")
    xls = trustee_folder(tmp_path, "202411", "受托部", "2024年11月受托业绩.XLS")
    xls.parent.mkdir(parents=True)
    xls.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    message = str(error.value)
    assert str(xls) in message and "save it as .xlsx" in message
    assert "no file matching" not in message and "\n" not in message


def test_xls_in_an_older_location_is_listed_as_ignored(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    base_xls = annuity_folder(tmp_path, "202411", NAME.replace(".xlsx", ".xls"))
    v1_xls = annuity_folder(tmp_path, "202411", "V1", NAME.replace(".xlsx", ".XLS"))
    for path in (base_xls, v1_xls):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xd0\xcf\x11\xe0")
    v2 = book(annuity_folder(tmp_path, "202411", "V2", NAME))
    result = discover(spec, NOV, tmp_path)
    assert [(f.path, f.version) for f in result.files] == [(v2, "V2")]
    reason = "old .xls workbook, not read; superseded by V2"
    assert sorted((i.path, i.reason) for i in result.ignored) == sorted(
        [(base_xls, reason), (v1_xls, reason)]
    )


def test_xls_lock_and_reply_files_stay_excluded(sources: SourcesFile, tmp_path: Path) -> None:
    spec = sources.domain("annuity_performance")
    wanted = book(annuity_folder(tmp_path, "202411", "V1", NAME))
    folder = wanted.parent
    xls = NAME.replace(".xlsx", ".xls")
    (folder / f"~${xls}").write_bytes(b"lock")
    (folder / f".{xls}").write_bytes(b"hidden")
    (folder / xls.replace(".xls", "回复.xls")).write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "规模收入数据.EML").write_text("mail")
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [wanted]
    assert all(i.reason.startswith("excluded by") for i in result.ignored)


def test_a_month_holding_only_an_excluded_file_says_which(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """Only the reply mail's copy of the workbook (回复_…) is there: it stays excluded, and
    the error names it, so the operator sees what was found and why it was not taken."""
    spec = sources.domain("annuity_performance")
    reply = book(annuity_folder(tmp_path, "202411", f"回复_{NAME}"))
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert f"({reply}: excluded by" in str(error.value)


def test_two_folders_with_the_same_version_number_is_an_error_naming_both(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    book(annuity_folder(tmp_path, "202411", NAME))
    book(annuity_folder(tmp_path, "202411", "V01", NAME))
    book(annuity_folder(tmp_path, "202411", "V1", NAME.replace("规模收入", "规模及收入")))
    base = annuity_folder(tmp_path, "202411")
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert str(error.value) == (
        f"annuity_performance 2024-11: 2 version folders for V1 hold a matching file, "
        f"expected one: {base / 'V01'}; {base / 'V1'}"
    )


def test_same_version_number_is_fine_when_one_folder_holds_the_file(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    wanted = book(annuity_folder(tmp_path, "202411", "V01", NAME))
    book(annuity_folder(tmp_path, "202411", "V1", "unrelated.xlsx"))
    # and below a newer version the tie does not matter: both are superseded
    book(annuity_folder(tmp_path, "202411", "v0", NAME))
    book(annuity_folder(tmp_path, "202411", "V00", NAME))
    result = discover(spec, NOV, tmp_path)
    assert [(f.path, f.version) for f in result.files] == [(wanted, "V1")]
    assert {(i.path.parent.name, i.reason) for i in result.ignored} == {
        ("v0", "superseded by V1"),
        ("V00", "superseded by V1"),
    }


def test_an_error_names_a_lower_case_version_folder_as_it_is_on_disk(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("annuity_performance")
    a = book(annuity_folder(tmp_path, "202411", "v2", "A规模收入数据.xlsx"))
    b = book(annuity_folder(tmp_path, "202411", "v2", "B规模收入数据.xlsx"))
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert str(error.value) == (
        f"annuity_performance 2024-11: 2 candidate files in {a.parent}, expected one: {a}; {b} "
        "(keep one)"  # (in a version folder already)
    )
    assert "/V2" not in str(error.value)


def _xls(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # an OLE container
    return path


def test_an_xls_beside_the_xlsx_it_was_saved_as_is_ignored(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """Excel's "Save As .xlsx" leaves the .xls behind: the .xlsx beside it is loaded."""
    spec = sources.domain("annuity_performance")
    xlsx = book(annuity_folder(tmp_path, "202411", "V2", NAME))
    xls = _xls(annuity_folder(tmp_path, "202411", "V2", NAME.replace(".xlsx", ".xls")))
    result = discover(spec, NOV, tmp_path)
    assert [(f.path, f.version) for f in result.files] == [(xlsx, "V2")]
    assert [(i.path, i.reason) for i in result.ignored] == [
        (xls, "old .xls workbook, not read; the .xlsx beside it is loaded")
    ]


def test_an_archived_xls_in_a_subfolder_does_not_block_the_month(
    sources: SourcesFile, tmp_path: Path
) -> None:
    spec = sources.domain("trustee_performance")  # (recursive: subfolders are searched)
    xlsx = _trustee(tmp_path, "受托部", WORKBOOK)
    old = _xls(trustee_folder(tmp_path, "202411", "受托部", "历史", "2019年受托业绩.xls"))
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [xlsx]
    assert [(i.path, i.reason) for i in result.ignored] == [
        (old, f"old .xls workbook in another folder, not read; {WORKBOOK} is loaded")
    ]


def test_an_xls_correction_in_a_version_folder_further_down_is_no_silent_fallback(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """A V2 beside the file it corrects (受托部/V2) is no version folder discovery reads as
    one; saved as .xls, the correction was listed as "the .xlsx beside it is loaded" and the
    older workbook loaded. It is a candidate, as an .xlsx there is: the error says where it
    goes (and once there, that an .xls is to be saved as .xlsx)."""
    spec = sources.domain("trustee_performance")
    xlsx = _trustee(tmp_path, "受托部", WORKBOOK)
    xls = _xls(trustee_folder(tmp_path, "202411", "受托部", "V2", "2024年11月受托业绩.xls"))
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    base = trustee_folder(tmp_path, "202411")
    assert str(error.value) == (
        f"trustee_performance 2024-11: 2 candidate files in {base}, expected one: {xlsx}; "
        f"{xls} (keep one; a correction goes in a V<n> folder directly in {base}, not in "
        f"{xls.parent})"
    )


def test_a_workbook_in_a_subfolder_that_is_no_version_is_named_not_missed(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """A correction sent in `VX` (no version folder) is not read, and discovery says so:
    among the files ignored beside the base folder's workbook, and in the error when it is
    the only one."""
    spec = sources.domain("annuity_performance")
    name = "2024年11月年金终稿数据-规模收入数据.xlsx"
    unread = book(annuity_folder(tmp_path, "202411", "VX", name))
    with pytest.raises(InputError) as error:
        discover(spec, NOV, tmp_path)
    assert str(error.value).endswith(
        f"({unread}: in a subfolder, not read: a correction goes in a V<n> folder)"
    )
    base = book(annuity_folder(tmp_path, "202411", name))
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [base]
    assert {(i.path, i.reason) for i in result.ignored} == {
        (unread, "in a subfolder, not read: a correction goes in a V<n> folder")
    }
    # in a version folder the same file is the correction, and nothing is said of it
    version = annuity_folder(tmp_path, "202411", "V1")
    unread.parent.rename(version)
    assert [f.path for f in discover(spec, NOV, tmp_path).files] == [version / name]


def test_a_recursive_domains_base_workbook_is_superseded_by_its_version_once(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """The walk of a recursive domain's base folder does not go into its V<n> folders: the
    V2 workbook is loaded, and the base one is listed once as superseded (not the loaded
    workbook listed as ignored too)."""
    spec = sources.domain("trustee_performance")
    base = _trustee(tmp_path, WORKBOOK)
    newer = _trustee(tmp_path, "V2", WORKBOOK)
    result = discover(spec, NOV, tmp_path)
    assert [f.path for f in result.files] == [newer]
    assert [(i.path, i.reason) for i in result.ignored] == [(base, "superseded by V2")]


def test_a_month_folder_that_is_no_month_is_not_a_month(
    sources: SourcesFile, tmp_path: Path
) -> None:
    """`202413` is a folder, not a month: the arrival sensor's list of months skips it
    (taken for one, it would fail every tick of the sensor for every domain)."""
    from workdatahub.sources.discovery import available_periods

    (tmp_path / "202413").mkdir()
    (tmp_path / "202400").mkdir()
    _trustee(tmp_path, WORKBOOK)
    assert available_periods(sources.domain("trustee_performance"), tmp_path) == [NOV]
