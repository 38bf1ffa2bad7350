"""Find the workbook(s) for one domain and month, exactly as operators file them.

Rules (see the data contract): the highest `V<n>` folder that holds a matching file wins,
otherwise the base folder; lock files, hidden files, mail files and the domain's own
exclusions are ignored; two matches in the chosen folder is an error naming them all, and so
are two folders with the same version number (`V1` and `V01`) that both hold one.

A file extension written in a pattern matches in any case (`.xlsx` finds `.XLSX` and
`.Xlsx`: Windows users produce them). A file named like a domain's workbook but saved in
the old `.xls` format counts as that workbook's place: in the chosen folder without an
.xlsx beside it, it is an error naming it (it cannot be read: save it as .xlsx); beside an
.xlsx (what Excel's "Save As" leaves) or in an older folder it is listed as ignored; never
a silent fall-back to an older .xlsx. Paths in messages are the paths on disk (a
folder `v2` is named `v2`).

Links are followed only while they stay inside the data directory: a file or folder link
pointing elsewhere, a broken link and anything that is not a regular file (a pipe would
block the reader forever) are listed as ignored with the reason, never read; a folder
link back to a folder already walked is not walked twice (no endless loop).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from workdatahub.errors import InputError, NoWorkbookError, printable
from workdatahub.periods import folder_name
from workdatahub.sources.spec import DomainSpec

_VERSION_DIR = re.compile(r"^[Vv](\d+)$")
_MONTH_DIR = re.compile(r"^(\d{4})(0[1-9]|1[0-2])$")
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
LEGACY_SUFFIX = ".xls"  # Excel 97-2003: named like the workbook, but not readable
ALWAYS_EXCLUDED = ("~$*", ".*", "*.eml")


# what tells a file saved again or replaced (Excel saves by writing a new file and renaming
# it over the old one) from the one hashed: its size and modification time (not its inode,
# which some network shares do not keep stable)
Stamp = tuple[int, int]


def stamp_of(path: Path) -> Stamp:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class SourceFile:
    path: Path
    version: str | None  # "V2", or None for the base folder
    sha256: str
    stamp: Stamp  # the file as hashed: its size and modification time

    @property
    def size(self) -> int:
        return self.stamp[0]

    def check_unchanged(self) -> None:
        """Raise an InputError when the file is no longer the one hashed: its rows may not
        be those the sha256 recorded with them (nor those an append checked against). A
        file whose size or time changed is hashed again: one only touched (a sync client, a
        virus scanner) passes. (A replacement that keeps both, as a copy keeping times may,
        goes unseen.)"""
        try:
            unchanged = stamp_of(self.path) == self.stamp or sha256_of(self.path) == self.sha256
        except OSError:
            unchanged = False
        if not unchanged:
            raise InputError(
                f"{printable(self.path)}: changed while it was being loaded (saved again, "
                "replaced or removed); table unchanged, load it again"
            )

    def to_json(self, data_dir: Path | None = None) -> dict[str, object]:
        path = self.path
        if data_dir is not None and path.is_relative_to(data_dir):
            path = path.relative_to(data_dir)
        return {"path": str(path), "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Ignored:
    path: Path
    reason: str
    # a file or folder that would count (named like a workbook, a version folder) but
    # cannot be read safely: a link outside the data directory, a broken link, a pipe
    refused: bool = False
    candidate: bool = False  # refused, and named like the month's workbook


@dataclass
class DiscoveryResult:
    domain: str
    period: date
    base: Path
    files: list[SourceFile] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)

    def to_json(self, data_dir: Path | None = None) -> dict[str, object]:
        def rel(path: Path) -> str:
            if data_dir is not None and path.is_relative_to(data_dir):
                return str(path.relative_to(data_dir))
            return str(path)

        return {
            "domain": self.domain,
            "period": f"{self.period:%Y-%m}",
            "files": [f.to_json(data_dir) for f in self.files],
            "ignored": [{"path": rel(i.path), "reason": i.reason} for i in self.ignored],
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


_GLOB_CHARS = frozenset("*?[")


def _literal_extension(pattern: str) -> str | None:
    """The extension a pattern ends with when it is literal text (`*受托业绩*.xlsx` → `xlsx`),
    else None (`.*`, `~$*`, `*.xls?`)."""
    _, dot, extension = pattern.rpartition(".")
    if not dot or not extension or _GLOB_CHARS.intersection(extension):
        return None
    return extension


def _match_one(name: str, pattern: str) -> bool:
    """`fnmatch` case-sensitively, except a literal extension, which matches in any case."""
    name, pattern = _nfc(name), _nfc(pattern)
    extension = _literal_extension(pattern)
    if extension is not None:
        size = len(extension)
        pattern = pattern[:-size] + extension.lower()
        if len(name) > size:
            name = name[:-size] + name[-size:].lower()
    return fnmatch.fnmatchcase(name, pattern)


def _matches(name: str, patterns: list[str] | tuple[str, ...]) -> str | None:
    for pattern in patterns:
        if _match_one(name, pattern):
            return pattern
    return None


def _legacy_patterns(patterns: list[str]) -> list[str]:
    """The domain's workbook patterns with the old `.xls` extension instead of .xlsx/.xlsm:
    `*规模收入数据*.xlsx` → `*规模收入数据*.xls`."""
    legacy: list[str] = []
    for pattern in patterns:
        extension = _literal_extension(pattern)
        if extension is not None and f".{extension.lower()}" in WORKBOOK_SUFFIXES:
            alternative = pattern[: -len(extension)] + LEGACY_SUFFIX.removeprefix(".")
            if alternative not in legacy:
                legacy.append(alternative)
    return legacy


def never_counts(name: str, is_folder: bool) -> bool:
    """What discovery never looks at below a base folder: hidden folders (not entered), and
    lock files, hidden files and mail (`ALWAYS_EXCLUDED`)."""
    if is_folder:
        return name.startswith(".")
    return _matches(name, ALWAYS_EXCLUDED) is not None


def _resolved(path: Path) -> Path | None:
    """Where `path` really is, or None for a broken link or a link loop."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python 3.11)
        return None


def base_folder(spec: DomainSpec, period: date, data_dir: Path) -> Path:
    folder = data_dir / spec.discovery.base.replace("{YYYYMM}", folder_name(period))
    try:
        base = folder.resolve()
    except (OSError, RuntimeError):
        raise InputError(f"{spec.name}: base folder {printable(folder)} is a link loop") from None
    if not base.is_relative_to(data_dir.resolve()):
        raise InputError(f"{spec.name}: base folder {printable(base)} escapes the data directory")
    return base


def _walk(
    folder: Path, recursive: bool, skip_versions: bool, root: Path, seen: set[Path]
) -> tuple[list[Path], list[Ignored]]:
    """Entries below `folder` that are not folders (files, links, pipes: `_classify` judges
    them), and folder links refused; hidden folders are never entered."""
    found: list[Path] = []
    refused: list[Ignored] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found, refused
    for entry in entries:
        if not entry.is_dir():
            found.append(entry)
            continue
        if never_counts(entry.name, is_folder=True) or not recursive:
            continue
        if skip_versions and _VERSION_DIR.match(entry.name):
            continue
        real = _resolved(entry)
        if real is None or not real.is_relative_to(root):
            reason = "folder link points outside the data directory"
            refused.append(Ignored(entry, reason, refused=True))
            continue
        if real in seen:
            continue  # a link back to a folder already walked
        seen.add(real)
        files, more = _walk(entry, recursive, False, root, seen)
        found.extend(files)
        refused.extend(more)
    return found, refused


def _unusable(path: Path, root: Path) -> str | None:
    real = _resolved(path)
    if real is None:
        return "broken link" if path.is_symlink() else "cannot be resolved"
    if not real.is_relative_to(root):
        return "links outside the data directory"
    if not real.is_file():
        return "not a regular file"
    return None


@dataclass
class _Found:
    """What one folder (a version folder, or the base folder with its subfolders) holds."""

    matched: list[Path] = field(default_factory=list)  # readable candidates
    legacy: list[Path] = field(default_factory=list)  # named like one, but an old .xls
    ignored: list[Ignored] = field(default_factory=list)

    @property
    def holds_one(self) -> bool:
        return bool(self.matched or self.legacy)


def _classify(spec: DomainSpec, files: list[Path], root: Path) -> _Found:
    found = _Found()
    excludes = [*ALWAYS_EXCLUDED, *spec.discovery.exclude]
    named = [*spec.discovery.patterns, *_legacy_patterns(spec.discovery.patterns)]
    for path in files:
        if not _matches(path.name, named):
            continue
        excluded_by = _matches(path.name, excludes)
        problem = _unusable(path, root) if not excluded_by else None
        suffix = path.suffix.lower()
        if excluded_by:
            found.ignored.append(Ignored(path, f"excluded by {excluded_by!r}"))
        elif problem:
            found.ignored.append(Ignored(path, problem, refused=True, candidate=True))
        elif suffix == LEGACY_SUFFIX:
            found.legacy.append(path)
        elif suffix not in WORKBOOK_SUFFIXES:  # a pattern without an extension (`*受托业绩*`)
            found.ignored.append(Ignored(path, "not an .xlsx/.xlsm workbook"))
        else:
            found.matched.append(path)
    return found


def _folder(spec: DomainSpec, folder: Path, skip_versions: bool, root: Path) -> _Found:
    seen = {folder.resolve()}
    files, refused = _walk(folder, spec.discovery.recursive, skip_versions, root, seen)
    found = _classify(spec, files, root)
    found.ignored[:0] = refused
    if not spec.discovery.recursive:
        # a workbook one folder down is never read; named so, it is not missed unseen (a
        # correction sent in `VX` or `V2 修订`, which are no version folders)
        unread = _classify(spec, _unread_subfolders(folder, skip_versions), root)
        why = "in a subfolder, not read: a correction goes in a V<n> folder"
        found.ignored += [Ignored(p, why) for p in unread.matched + unread.legacy]
    return found


def _unread_subfolders(folder: Path, skip_versions: bool) -> list[Path]:
    """The entries of `folder`'s subfolders (not version folders, when those are read on
    their own; not hidden ones) that are not folders."""
    entries: list[Path] = []
    with contextlib.suppress(OSError):
        for sub in sorted(folder.iterdir()):
            if not sub.is_dir() or never_counts(sub.name, is_folder=True):
                continue
            if skip_versions and _VERSION_DIR.match(sub.name):
                continue
            with contextlib.suppress(OSError):
                entries += [entry for entry in sorted(sub.iterdir()) if not entry.is_dir()]
    return entries


def _superseded(found: _Found, version: str) -> list[Ignored]:
    return [Ignored(p, f"superseded by {version}") for p in found.matched] + [
        Ignored(p, f"old .xls workbook, not read; superseded by {version}") for p in found.legacy
    ]


def _in_version_folder(path: Path, base: Path) -> bool:
    """Whether a folder between `base` and the file `path` is named like a version."""
    return any(_VERSION_DIR.match(part) for part in path.relative_to(base).parts[:-1])


def missing_data_folder(data_dir: Path) -> str | None:
    """Why `data_dir` holds no month at all, or None when it is a folder."""
    if data_dir.is_dir():
        return None
    return (
        f"no data folder {printable(data_dir)} (set WDH_DATA_DIR, or give --data-dir, to the "
        "folder that holds the YYYYMM folders)"
    )


def discover(spec: DomainSpec, period: date, data_dir: Path) -> DiscoveryResult:
    """Return the one workbook for (domain, month), or raise `InputError` saying why not."""
    root = data_dir.resolve()
    base = base_folder(spec, period, data_dir)
    result = DiscoveryResult(domain=spec.name, period=period, base=base)
    if not base.is_dir():
        missing = missing_data_folder(data_dir)
        if missing:  # the whole share, not the month: where it is looked for
            raise InputError(f"{spec.name} {period:%Y-%m}: {missing}")
        hint = ""
        if _MONTH_DIR.match(data_dir.resolve().name):  # --data-dir given a month's folder
            hint = " (the data folder is the one that holds the YYYYMM folders, not a month's)"
        raise InputError(f"{spec.name} {period:%Y-%m}: no folder {printable(base)}{hint}")

    versions: dict[int, list[Path]] = {}
    refused_versions: dict[int, Ignored] = {}  # version folder links: outside, or broken
    if spec.discovery.version_folders:
        for entry in sorted(base.iterdir()):
            match = _VERSION_DIR.match(entry.name)
            # (a link named like a version folder counts even when broken: an unmounted
            # share's V3 must not let V2 load unseen)
            if match and (entry.is_dir() or entry.is_symlink()):
                real = _resolved(entry)
                reason = None
                if real is None or not real.exists():
                    reason = "broken folder link"
                elif not real.is_relative_to(root):
                    reason = "folder link points outside the data directory"
                if reason is not None:
                    refused_versions.setdefault(int(match[1]), Ignored(entry, reason, True))
                    result.ignored.append(Ignored(entry, reason, refused=True))
                    continue
                if real is not None and real.is_dir():
                    versions.setdefault(int(match[1]), []).append(entry)

    # newest first: each version number's folders (`V1`, `V01`), then the base folder
    chosen: _Found | None = None
    chosen_folder = base
    chosen_version: str | None = None
    for number in sorted({*versions, *refused_versions}, reverse=True):
        label = f"V{number}"
        holding: list[tuple[Path, _Found]] = []
        refused = [refused_versions[number]] if number in refused_versions else []
        for folder in versions.get(number, []):
            found = _folder(spec, folder, False, root)
            result.ignored.extend(found.ignored)
            refused += [i for i in found.ignored if i.refused]
            if found.holds_one:
                holding.append((folder, found))
        if chosen is None and refused and not holding:
            # the newest version holds nothing readable, only what cannot be read safely:
            # an older one is not loaded in its place unseen (the operator put a correction
            # there)
            first = refused[0]
            itself = first is refused_versions.get(number)
            where = (
                ", the newest version folder," if itself else f" in {label}, the newest version,"
            )
            raise InputError(
                f"{spec.name} {period:%Y-%m}: {printable(first.path)}{where} is refused "
                f"({first.reason}); the month is not loaded from an older version: put the "
                "workbook itself there, or remove it"
            )
        candidates = [i for i in refused if i.candidate]
        if chosen is None and holding and candidates:
            # beside a readable workbook, one named like it that cannot be read: which of
            # the two is the correction is not known (as with two readable ones)
            (_, found), other = holding[0], candidates[0]
            readable = (found.matched or found.legacy)[0]
            raise InputError(
                f"{spec.name} {period:%Y-%m}: {label} holds {printable(readable)} "
                f"and {printable(other.path)} ({other.reason}), expected one workbook: "
                "remove the one that is not the month's"
            )
        if chosen is not None:
            for _, found in holding:
                result.ignored.extend(_superseded(found, chosen_version or ""))
        elif len(holding) > 1:
            folders = "; ".join(printable(folder) for folder, _ in holding)
            raise InputError(
                f"{spec.name} {period:%Y-%m}: {len(holding)} version folders for {label} hold "
                f"a matching file, expected one: {folders}"
            )
        elif holding:
            (chosen_folder, chosen), chosen_version = holding[0], label
    base_found = _folder(spec, base, True, root)
    result.ignored.extend(base_found.ignored)
    if chosen is not None:
        result.ignored.extend(_superseded(base_found, chosen_version or ""))
    else:
        chosen = base_found

    # an .xls a recursive walk finds in a V<n> folder further down is a correction put in
    # the wrong place: a candidate, as an .xlsx there is; one in another folder (an archive's)
    # is left, and one beside the .xlsx is what Excel's "Save As .xlsx" leaves behind
    beside = {p.parent for p in chosen.matched}
    misplaced = [
        p
        for p in chosen.legacy
        if chosen.matched and chosen_version is None and p.parent not in beside
        if _in_version_folder(p, base)
    ]
    if chosen.legacy and chosen.matched:
        result.ignored.extend(
            Ignored(
                p,
                "old .xls workbook, not read; the .xlsx beside it is loaded"
                if p.parent in beside
                else f"old .xls workbook in another folder, not read; {chosen.matched[0].name} "
                "is loaded",
            )
            for p in chosen.legacy
            if p not in misplaced
        )
    elif chosen.legacy:
        listed = "; ".join(printable(p) for p in sorted(chosen.legacy))
        what = (
            "is an old Excel 97-2003 .xls workbook, which cannot be read: open it"
            if len(chosen.legacy) == 1
            else "are old Excel 97-2003 .xls workbooks, which cannot be read: open each"
        )
        raise InputError(
            f"{spec.name} {period:%Y-%m}: {listed} {what} in Excel and save it as .xlsx"
        )
    if not chosen.matched:
        patterns = ", ".join(spec.discovery.patterns)
        refused = [i for i in result.ignored if not i.reason.startswith("excluded by")]
        excluded = [i for i in result.ignored if i.reason.startswith("excluded by")]
        # a matching file refused for what it is (a link outside, a pipe) must not go unseen;
        # nor one the rules leave out (a reply mail's 回复_ copy, a lock file) when it is all
        # there is
        shown = refused or excluded
        why = f" ({printable(shown[0].path)}: {shown[0].reason})" if shown else ""
        # (a file refused for what it is is there, and wrong; an Excel lock file or a reply
        # mail's copy alone is no workbook yet)
        raise (InputError if refused else NoWorkbookError)(
            f"{spec.name} {period:%Y-%m}: no file matching {patterns} in {printable(base)}{why}"
        )
    competing = sorted(chosen.matched + misplaced)
    if len(competing) > 1:
        listed = "; ".join(printable(p) for p in competing)
        # (in the base folder: the other may be a correction, which has a folder of its own;
        # one in a V<n> folder further down, beside the file it corrects, is not in it)
        hint = ")"
        if spec.discovery.version_folders and chosen_version is None:
            nested = [p.parent for p in competing if _in_version_folder(p, base)]
            hint = (
                f"; a correction goes in a V<n> folder directly in {printable(base)}, not in "
                f"{printable(nested[0])})"
                if nested
                else "; a correction goes in a V<n> folder)"
            )
        raise InputError(
            f"{spec.name} {period:%Y-%m}: {len(competing)} candidate files in "
            f"{printable(chosen_folder)}, expected one: {listed} (keep one{hint}"
        )
    path = chosen.matched[0]
    try:
        before = stamp_of(path)
        digest = sha256_of(path)
        if stamp_of(path) != before:
            raise InputError(
                f"{printable(path)}: changed while it was being read (being saved?); "
                "try again once it is saved"
            )
    except OSError as error:
        raise InputError(f"{printable(path)}: cannot be read ({error.strerror})") from None
    result.files.append(SourceFile(path, chosen_version, digest, before))
    result.ignored.sort(key=lambda i: str(i.path))
    return result


def available_periods(spec: DomainSpec, data_dir: Path) -> list[date]:
    """Months that have a folder for this domain (the arrival sensor's months). A month
    whose base folder cannot be used (a link out of the data directory, a link loop) is
    listed too: discovering it says why, for that month alone."""
    months: list[date] = []
    if not data_dir.is_dir():
        return months
    for entry in sorted(data_dir.iterdir()):
        match = _MONTH_DIR.match(entry.name)
        if match and entry.is_dir():
            period = date(int(match[1]), int(match[2]), 1)
            try:
                present = base_folder(spec, period, data_dir).is_dir()
            except InputError:
                present = True
            if present:
                months.append(period)
    return months


__all__ = ["DiscoveryResult", "Ignored", "SourceFile", "asdict", "available_periods", "discover"]
