"""`data_sources.yml` parsed into validated models.

Every identifier that reaches SQL (table and column names) is checked against a strict
pattern here, so nothing from config can smuggle quoting tricks into a statement; the
loader still quotes them. A domain may not load into the warehouse's own schemas (audit,
dbt models, system catalogs), nor into a table another domain loads (each load deletes the
month first). Paths stay inside the data directory; file patterns are globs, not regexes,
bounded in length and wildcards (Python's fnmatch matches them without backtracking).
A mistake gives one message naming the domain and the field.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from collections.abc import Callable, Hashable
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workdatahub.errors import ConfigError, printable

# \Z, not $: `$` also matches before a trailing newline
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
RESERVED_COLUMNS = frozenset({"load_id", "source_file", "source_sheet", "source_row", "loaded_at"})
# the audit schema, the schemas dbt builds, and Postgres' own
RESERVED_SCHEMAS = frozenset(
    {"wdh", "staging", "marts", "reference", "audit", "public", "information_schema"}
)
ColumnType = Literal["text", "code", "month", "money", "rate", "integer"]
RefreshMode = Literal["delete_insert", "append", "upsert"]

# glob metacharacters are fine; path separators and control characters are not
_SAFE_PATTERN = re.compile(r"[^/\\\x00-\x1f\x7f]{1,200}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Excel's rules for a sheet name: 1-31 characters, none of : \ / ? * [ ]
_SHEET_NAME = re.compile(r"[^:\\/?*\[\]\x00-\x1f\x7f]{1,31}\Z")


def normalize_header(text: str) -> str:
    """Headers match after trimming, NFKC (full-width -> half-width) and dropping spaces."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(text)))


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{what} {value!r} is not a safe SQL identifier (lower-case letters, digits, _; max 63)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Derive(_Model):
    rule: str
    from_: list[str] = Field(alias="from", min_length=1)


class ColumnSpec(_Model):
    name: str
    header: str | None = None
    aliases: list[str] = Field(default_factory=list)
    type: ColumnType = "text"
    required: bool = False
    load: bool = True
    optional_header: bool = False
    null_as_zero: bool = False
    allowed: list[str] | None = None
    rules: list[str] = Field(default_factory=list)
    derive: Derive | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        _identifier(value, "column name")
        if value in RESERVED_COLUMNS:
            raise ValueError(f"column name {value!r} is reserved for lineage")
        return value

    @model_validator(mode="after")
    def _source_or_derived(self) -> ColumnSpec:
        if (self.header is None) == (self.derive is None):
            raise ValueError(f"column {self.name!r} needs exactly one of `header` or `derive`")
        return self

    @property
    def headers(self) -> list[str]:
        """Every accepted header spelling, normalised."""
        names = [self.header, *self.aliases] if self.header else []
        return [normalize_header(h) for h in names]

    @property
    def sql_type(self) -> str:
        return {
            "text": "text",
            "code": "text",
            "month": "date",
            "money": "numeric(18,4)",
            "rate": "numeric(10,6)",
            "integer": "bigint",
        }[self.type]


class Discovery(_Model):
    base: str
    patterns: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    recursive: bool = False
    version_folders: bool = True

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if "{YYYYMM}" not in value:
            raise ValueError("base must contain {YYYYMM}")
        if _CONTROL.search(value) or len(value) > 400:
            raise ValueError(f"base {value!r} must be a plain folder path (no control characters)")
        path = PurePosixPath(value.replace("\\", "/"))
        escapes = path.is_absolute() or ".." in path.parts or value.startswith("~")
        # a drive (C:) or a share (//server) leaves the data directory on Windows
        if escapes or re.match(r"[A-Za-z]:", value) or value.replace("\\", "/").startswith("//"):
            raise ValueError(f"base {value!r} must stay inside the data directory")
        return value

    @field_validator("patterns", "exclude")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for pattern in values:
            if not _SAFE_PATTERN.match(pattern) or pattern.count("*") > 8:
                raise ValueError(
                    f"pattern {pattern!r} must be a file-name glob (no path separators, "
                    "at most 8 wildcards, 200 characters)"
                )
        return values


def _check_rule(column: str, rule: str, reads: list[str], known: set[str], derive: bool) -> None:
    """`rule` applied to the columns `reads` (a column's own value, or a derivation's
    `from`): as many as it takes (a two-column rule in `rules` raised a TypeError), and
    every other column it reads by name the domain's (plan_code_default reads plan_type:
    one the domain lacks failed every load with polars' ColumnNotFoundError)."""
    import polars as pl

    from workdatahub.cleansing.rules import RULES

    takes = len(inspect.signature(RULES[rule]).parameters)
    if takes != len(reads):
        raise ValueError(
            f"column {column!r}: rule {rule!r} derives from {takes} column(s), `from` names "
            f"{len(reads)}"
            if derive
            else f"column {column!r}: rule {rule!r} reads {takes} columns: name it in a "
            f"`derive: {{rule: {rule}, from: [...]}}`, not in `rules`"
        )
    output = RULES[rule](*map(pl.col, reads))
    lacking = {n for e in (output.value, *output.errors) for n in e.meta.root_names()} - known
    if lacking:
        raise ValueError(
            f"column {column!r}: rule {rule!r} reads column "
            f"{', '.join(map(repr, sorted(lacking)))}, which the domain does not have"
        )


class DomainSpec(_Model):
    name: str
    description: str = ""
    discovery: Discovery
    sheet: str | int = 0
    table: str
    schema_name: str = Field(default="raw", alias="schema")
    partition_column: str
    key: list[str] = Field(default_factory=list)
    refresh: RefreshMode = "delete_insert"
    max_reject_rate: float = Field(default=0.05, ge=0, le=1)
    # the month's data is due by this day of the following month (freshness checks, UI)
    due_day: int = Field(default=15, ge=1, le=28)
    null_values: list[str] = Field(default_factory=list)
    columns: list[ColumnSpec] = Field(min_length=1)

    @field_validator("name", "table", "schema_name")
    @classmethod
    def _ident(cls, value: str) -> str:
        return _identifier(value, "name")

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        if value in RESERVED_SCHEMAS or value.startswith("pg_"):
            raise ValueError(f"schema {value!r} belongs to the warehouse itself; load into raw")
        return value

    @field_validator("sheet", mode="before")
    @classmethod
    def _sheet(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"sheet must be a sheet name or a number from 0, not {value!r}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"sheet {value} must be 0 or more (0 is the first visible sheet)")
        if isinstance(value, str) and not _SHEET_NAME.match(value):
            raise ValueError(
                f"sheet {value!r} is not a sheet name Excel allows (1-31 characters, "
                "none of : \\ / ? * [ ] or control characters)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DomainSpec:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns repeat: {', '.join(dupes)}")
        known = set(names)
        by_name = {c.name: c for c in self.columns}
        if self.partition_column not in known:
            raise ValueError(f"partition_column {self.partition_column!r} is not a column")
        if by_name[self.partition_column].type != "month":
            raise ValueError(f"partition_column {self.partition_column!r} must have type month")
        if not by_name[self.partition_column].load:
            # (each load deletes the month by it: unloaded, the rows would pile up)
            raise ValueError(f"partition_column {self.partition_column!r} must be loaded")
        for key in self.key:
            if key not in known or not by_name[key].load:
                raise ValueError(f"key column {key!r} is not a loaded column")
        if self.refresh == "upsert" and not self.key:
            raise ValueError("refresh `upsert` needs a `key`")
        headers: dict[str, str] = {}
        for column in self.columns:
            for source in column.derive.from_ if column.derive else []:
                if source not in known:
                    raise ValueError(f"column {column.name!r} derives from unknown {source!r}")
                if by_name[source].derive is not None:  # (derived columns come from the sheet's)
                    raise ValueError(
                        f"column {column.name!r} derives from {source!r}, itself derived: "
                        "derive it from the columns that one reads"
                    )
            for header in column.headers:
                if header in headers:
                    raise ValueError(
                        f"header {header!r} is claimed by {headers[header]!r} and {column.name!r}"
                    )
                headers[header] = column.name
        from workdatahub.cleansing.rules import RULES

        for column in self.columns:
            wanted = list(column.rules) + ([column.derive.rule] if column.derive else [])
            for rule in wanted:
                if rule not in RULES:
                    raise ValueError(
                        f"column {column.name!r} names unknown rule {rule!r} "
                        f"(known: {', '.join(sorted(RULES))})"
                    )
            if column.derive is not None:
                derived = list(column.derive.from_)
                _check_rule(column.name, column.derive.rule, derived, known, derive=True)
            for rule in column.rules:
                _check_rule(column.name, rule, [column.name], known, derive=False)
        return self

    @property
    def qualified_table(self) -> str:
        """`schema.table`, as messages and the load log name it (not quoted: SQL takes
        `sql.Identifier(schema_name, table)`)."""
        return f"{self.schema_name}.{self.table}"

    @cached_property
    def source_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.header is not None]

    @cached_property
    def loaded_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.load]

    @cached_property
    def required_headers(self) -> list[ColumnSpec]:
        """Source columns that must be present to recognise the header row."""
        return [c for c in self.source_columns if not c.optional_header]

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


class Defaults(_Model):
    """What every domain gets unless it says otherwise (a key not listed here is a mistake,
    not a setting quietly ignored: `null_value:` for `null_values:`)."""

    null_values: list[str] = Field(default_factory=list)
    max_reject_rate: float = Field(default=0.05, ge=0, le=1)


class SourcesFile(_Model):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    domains: dict[str, DomainSpec]

    def domain(self, name: str) -> DomainSpec:
        try:
            return self.domains[name]
        except KeyError:
            known = ", ".join(sorted(self.domains)) or "none"
            raise ConfigError(f"unknown domain {name!r} (known: {known})") from None


def _format_validation_error(path: Path, error: ValidationError, *prefix: str) -> str:
    first = error.errors()[0]
    loc = [*prefix, *first["loc"]]
    where = ""
    if len(loc) >= 2 and loc[0] == "domains":
        where = f"domain {str(loc[1])!r}: "
        loc = loc[2:]
    field = ".".join(printable(part) for part in loc) if loc else "(top level)"
    message = " ".join(first["msg"].removeprefix("Value error, ").split())
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path.name}: {where}{field}: {message}{more}"


def parse_sources(raw: dict[str, Any], path: Path = Path("data_sources.yml")) -> SourcesFile:
    if not isinstance(raw, dict) or not isinstance(raw.get("domains"), dict):
        raise ConfigError(f"{path.name}: expected a mapping with `domains:`")
    try:  # checked on their own first: a wrong default is the defaults' error, not a domain's
        defaults = Defaults.model_validate(raw.get("defaults") or {})
    except ValidationError as error:
        raise ConfigError(_format_validation_error(path, error, "defaults")) from None
    domains = {}
    for name, body in raw["domains"].items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path.name}: domain {name!r}: expected a mapping")
        domains[name] = {**defaults.model_dump(), **body, "name": name}
    try:
        sources = SourcesFile.model_validate({**raw, "defaults": defaults, "domains": domains})
    except ValidationError as error:
        raise ConfigError(_format_validation_error(path, error)) from None
    loaded_by: dict[tuple[str, str], str] = {}
    for name, spec in sources.domains.items():
        target = (spec.schema_name, spec.table)
        if target in loaded_by:
            # each load deletes the month first: two domains would erase each other's rows
            raise ConfigError(
                f"{path.name}: domain {name!r}: table: {spec.qualified_table} is "
                f"already loaded by domain {loaded_by[target]!r}"
            )
        loaded_by[target] = name
    return sources


def load_sources(path: Path | None = None) -> SourcesFile:
    if path is None:
        from workdatahub.settings import get_settings

        path = get_settings().sources_file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    return parse_sources(parse_yaml(text, path), path)


class _StrictLoader(yaml.SafeLoader):
    """YAML as `safe_load` reads it, except that a key given twice in one mapping is an
    error: plain YAML loading keeps the last, so a domain copied and not renamed would
    silently replace the first (its asset loading the copy's folder and table)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: overriding a
                continue  # merged key is what merging is for
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                first = seen[key].start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is given twice in one mapping (first at line {first}); the second "
                    "would silently replace the first",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, path: Path) -> Any:
    """The YAML document in `text`; a mistake is one line naming the file, line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # (a SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(str(error.problem or error.context or "unreadable").split())
        raise ConfigError(f"{path.name}: {where}not valid YAML: {what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path.name}: not valid YAML: {error}".splitlines()[0]) from None


_Built = TypeVar("_Built")


def per_spec(build: Callable[[DomainSpec], _Built]) -> Callable[[DomainSpec], _Built]:
    """`build(spec)` once per spec object (a spec is frozen): what follows from a spec alone
    (its Pandera schema, cleansing's expressions) is not built again for every part of a
    sheet. Keyed by identity; each entry holds its spec, so no other object can take that id
    while the entry lives."""
    cache: dict[int, tuple[DomainSpec, _Built]] = {}

    def cached(spec: DomainSpec) -> _Built:
        hit = cache.get(id(spec))
        if hit is None:
            if len(cache) >= 64:
                cache.clear()
            hit = cache[id(spec)] = (spec, build(spec))
        return hit[1]

    return cached
