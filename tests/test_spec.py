"""data_sources.yml: the shipped file parses; mistakes name the domain and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from workdatahub.errors import ConfigError
from workdatahub.sources.spec import SourcesFile, parse_sources

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "data_sources.yml").read_text(encoding="utf-8"))


def test_shipped_file_declares_the_three_domains(sources: SourcesFile) -> None:
    assert set(sources.domains) == {"trustee_performance", "annuity_performance", "annuity_income"}
    trustee = sources.domain("trustee_performance")
    assert trustee.key == ["report_date", "plan_code", "company_code"]
    assert [c.name for c in trustee.loaded_columns] == [
        "report_date", "plan_code", "company_code", "return_rate", "net_value", "fund_scale",
    ]  # fmt: skip


def test_unknown_domain_names_the_known_ones(sources: SourcesFile) -> None:
    with pytest.raises(ConfigError, match=r"unknown domain 'nope'.*trustee_performance"):
        sources.domain("nope")


def _mutated(raw: dict[str, Any], change: Any) -> str:
    data = copy.deepcopy(raw)
    change(data["domains"]["trustee_performance"])
    with pytest.raises(ConfigError) as error:
        parse_sources(data)
    return str(error.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(table='x"; drop table raw.t; --'), "'trustee_performance': table"),
        (lambda d: d["columns"][2].update(name="Plan Code"), "columns.2.name"),
        (lambda d: d["columns"][3].update(rules=["no_such_rule"]), "unknown rule 'no_such_rule'"),
        (lambda d: d["discovery"].update(base="../../etc/{YYYYMM}"), "discovery.base"),
        (lambda d: d["discovery"].update(base="/etc/{YYYYMM}"), "discovery.base"),
        (lambda d: d["discovery"].update(patterns=["../*.xlsx"]), "discovery.patterns"),
        (lambda d: d["discovery"].update(patterns=["*" * 40]), "discovery.patterns"),
        (lambda d: d.update(key=["missing"]), "key column 'missing'"),
        (lambda d: d.update(partition_column="plan_code"), "must have type month"),
        # unloaded, each load's delete of its month misses the rows it wrote
        (
            lambda d: d["columns"][2].update(load=False),
            "partition_column 'report_date' must be loaded",
        ),
        # derived columns are computed from the sheet's columns, all at once
        (
            lambda d: d["columns"].append(
                {
                    "name": "report_date2",
                    "type": "month",
                    "derive": {"rule": "copy", "from": ["report_date"]},
                }
            ),
            "column 'report_date2' derives from 'report_date', itself derived",
        ),
        (lambda d: d["columns"][3].update(type="float"), "columns.3.type"),
        # a derivation's rule in `rules` (it reads two columns): a TypeError's traceback
        (
            lambda d: d["columns"][3].update(rules=["month_from_year_and_month"]),
            "column 'plan_code': rule 'month_from_year_and_month' reads 2 columns: name it in "
            "a `derive: {rule: month_from_year_and_month, from: [...]}`, not in `rules`",
        ),
        (  # a derivation's rule that reads another column by name: trustee has no plan_type
            lambda d: d["columns"].append(
                {
                    "name": "pc",
                    "type": "code",
                    "derive": {"rule": "plan_code_default", "from": ["plan_code"]},
                }
            ),
            "column 'pc': rule 'plan_code_default' reads column 'plan_type', which the domain "
            "does not have",
        ),
        (
            lambda d: d["columns"][2]["derive"].update(**{"from": ["report_year"]}),
            "column 'report_date': rule 'month_from_year_and_month' derives from 2 column(s), "
            "`from` names 1",
        ),
        (lambda d: d.update(colums=[]), "colums"),
        (lambda d: d.update(max_reject_rate=2), "max_reject_rate"),
        (lambda d: d["columns"][3].update(name="load_id"), "reserved"),
    ],
)
def test_mistakes_name_domain_and_field(raw: dict[str, Any], change: Any, expected: str) -> None:
    message = _mutated(raw, change)
    assert expected in message
    assert "\n" not in message


def test_a_column_a_rule_reads_must_be_the_domains(raw: dict[str, Any]) -> None:
    """plan_code_default reads plan_type by name: with plan_type renamed, every load of the
    domain failed with polars' ColumnNotFoundError and its traceback."""
    data = copy.deepcopy(raw)
    for column in data["domains"]["annuity_income"]["columns"]:
        if column["name"] == "plan_type":
            column["name"] = "plan_kind"
    with pytest.raises(ConfigError) as error:
        parse_sources(data)
    assert str(error.value).endswith(
        "column 'plan_code': rule 'plan_code_default' reads column 'plan_type', which the "
        "domain does not have"
    )


# -- config safety: hostile names, paths that leave the data directory, runaway patterns ------


def _set(domain: dict[str, Any], where: str, value: Any) -> None:
    """`where` is a dotted path into the domain's mapping: "discovery.base", "columns.2.name"."""
    *parents, last = where.split(".")
    target: Any = domain
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value


NOT_IDENTIFIER = NOT_ID = "is not a safe SQL identifier"
OUTSIDE = "must stay inside the data directory"
NOT_GLOB = "must be a file-name glob"
RESERVED = "belongs to the warehouse itself; load into raw"
NOT_SHEET = "is not a sheet name Excel allows"


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        # `$` would have let a trailing newline through
        ("table", "trustee\n", f"table: name 'trustee\\n' {NOT_IDENTIFIER}"),
        ("table", "ｔｒｕｓｔｅｅ", f"table: name 'ｔｒｕｓｔｅｅ' {NOT_IDENTIFIER}"),
        ("table", "Trustee", f"table: name 'Trustee' {NOT_IDENTIFIER}"),
        ("table", "t" * 64, f"table: name '{'t' * 64}' {NOT_IDENTIFIER}"),
        ("table", "raw.t", f"table: name 'raw.t' {NOT_IDENTIFIER}"),
        ("schema", "wdh", f"schema: schema 'wdh' {RESERVED}"),
        ("schema", "marts", f"schema: schema 'marts' {RESERVED}"),
        ("schema", "pg_catalog", f"schema: schema 'pg_catalog' {RESERVED}"),
        ("schema", "information_schema", f"schema: schema 'information_schema' {RESERVED}"),
        ("schema", "staging", f"schema: schema 'staging' {RESERVED}"),
        ("schema", "reference", f"schema: schema 'reference' {RESERVED}"),
        ("schema", "public", f"schema: schema 'public' {RESERVED}"),
        ("schema", "audit", f"schema: schema 'audit' {RESERVED}"),
        ("columns.2.name", "plan_code\n", f"columns.2.name: column name 'plan_code\\n' {NOT_ID}"),
        ("columns.2.name", 'plan"code', f"columns.2.name: column name 'plan\"code' {NOT_ID}"),
        ("columns.2.name", "计划代码", f"columns.2.name: column name '计划代码' {NOT_IDENTIFIER}"),
        ("discovery.base", "{YYYYMM}/../../../etc", f"base '{{YYYYMM}}/../../../etc' {OUTSIDE}"),
        ("discovery.base", "~/{YYYYMM}", f"discovery.base: base '~/{{YYYYMM}}' {OUTSIDE}"),
        ("discovery.base", "C:\\data\\{YYYYMM}", f"base 'C:\\\\data\\\\{{YYYYMM}}' {OUTSIDE}"),
        ("discovery.base", "\\\\server\\share\\{YYYYMM}", OUTSIDE),
        ("discovery.base", "{YYYYMM}/a\x00b", "base '{YYYYMM}/a\\x00b' must be a plain folder"),
        ("discovery.base", "{YYYYMM}/a\nb", "base '{YYYYMM}/a\\nb' must be a plain folder path"),
        ("discovery.patterns", ["*受托业绩*\n.xlsx"], f"pattern '*受托业绩*\\n.xlsx' {NOT_GLOB}"),
        ("discovery.exclude", ["..\\*.xlsx"], f"exclude: pattern '..\\\\*.xlsx' {NOT_GLOB}"),
        ("discovery.patterns", ["*a" * 9 + "*"], "at most 8 wildcards"),
        # the spec takes globs only: a `regex` is an unknown field, refused by name
        ("discovery.regex", "^(a+)+$", "discovery.regex: Extra inputs are not permitted"),
        ("discovery.x\ny", 1, "discovery.'x\\ny': Extra inputs are not permitted"),
        ("sheet", -1, "sheet: sheet -1 must be 0 or more"),
        ("sheet", True, "sheet: sheet must be a sheet name or a number from 0, not True"),
        ("sheet", "规模/明细", f"sheet: sheet '规模/明细' {NOT_SHEET}"),
        ("sheet", "", f"sheet: sheet '' {NOT_SHEET}"),
        ("max_reject_rate", float("nan"), "max_reject_rate: Input should be"),
    ],
)
def test_hostile_config_is_refused_naming_the_field(
    raw: dict[str, Any], where: str, value: Any, expected: str
) -> None:
    message = _mutated(raw, lambda domain: _set(domain, where, value))
    assert message.startswith("data_sources.yml: domain 'trustee_performance': ")
    assert expected in message
    assert message.isprintable()  # one line, whatever the config holds


def test_two_domains_loading_one_table_is_refused(raw: dict[str, Any]) -> None:
    """Each load deletes its month first: the two would erase each other's rows."""
    raw["domains"]["annuity_income"]["table"] = "annuity_performance"
    with pytest.raises(ConfigError) as error:
        parse_sources(raw)
    assert str(error.value) == (
        "data_sources.yml: domain 'annuity_income': table: raw.annuity_performance is already "
        "loaded by domain 'annuity_performance'"
    )


def test_backtracking_shaped_glob_is_harmless(raw: dict[str, Any]) -> None:
    """Discovery matches globs with fnmatch, which compiles `*` to atomic groups: a pattern
    shaped for catastrophic backtracking (`(a*)*b` in regex terms) still runs in linear
    time, through the matcher discovery really uses."""
    import time

    from workdatahub.sources.discovery import _matches

    pattern = "*a" * 8 + "b"  # the most wildcards allowed
    raw["domains"]["trustee_performance"]["discovery"]["patterns"] = [pattern]
    patterns = parse_sources(raw).domain("trustee_performance").discovery.patterns
    assert _matches("a" * 8 + "b", patterns) == pattern
    start = time.perf_counter()
    for length in (50, 100, 250):
        assert _matches("a" * length + ".xlsx", patterns) is None
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("domains: !!python/object/apply:os.system ['echo pwned']", "not valid YAML"),
        (
            'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
            "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
            "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
            "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
            "domains: *h\n",
            "expected a mapping with `domains:`",
        ),
    ],
)
def test_hostile_yaml_is_refused_quickly(tmp_path: Path, text: str, expected: str) -> None:
    import time

    from workdatahub.sources.spec import load_sources

    path = tmp_path / "data_sources.yml"
    path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=expected):
        load_sources(path)
    assert time.perf_counter() - start < 1


def _load_text(tmp_path: Path, text: str) -> str:
    from workdatahub.sources.spec import load_sources

    path = tmp_path / "data_sources.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_sources(path)
    return str(error.value)


def test_a_domain_given_twice_is_refused_not_replaced(tmp_path: Path) -> None:
    """A domain block copied and not renamed: plain YAML keeps the second, so the first
    domain's asset would load the copy's folder into the copy's table. Refused, naming both
    lines; so is a key given twice inside a domain."""
    text = (ROOT / "data_sources.yml").read_text(encoding="utf-8")
    lines = text.splitlines()
    copied = text.replace("domains:\n", "domains:\n  annuity_income:\n    table: copied\n", 1)
    message = _load_text(tmp_path, copied)
    inserted = lines.index("domains:") + 2  # the copy, right below `domains:`
    shipped = lines.index("  annuity_income:") + 1 + 2  # two lines were added above it
    assert message == (
        f"data_sources.yml: line {shipped}, column 3: not valid YAML: 'annuity_income' is given "
        f"twice in one mapping (first at line {inserted}); the second would silently replace "
        "the first"
    )
    twice = text.replace("    sheet: 0\n", "    sheet: 0\n    sheet: 1\n", 1)
    assert "'sheet' is given twice in one mapping" in _load_text(tmp_path, twice)


def test_merge_keys_still_override(tmp_path: Path) -> None:
    """`<<: *anchor` then a key of its own is YAML's way to share a block: no duplicate."""
    from workdatahub.sources.spec import parse_yaml

    text = "base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\n"
    assert parse_yaml(text, tmp_path / "t.yml")["x"] == {"a": 1, "b": 3}
    twice = "x:\n  <<: {a: 1}\n  b: 3\n  b: 4\n"
    with pytest.raises(ConfigError, match="'b' is given twice"):
        parse_yaml(twice, tmp_path / "t.yml")


def test_yaml_mistakes_name_the_line(tmp_path: Path) -> None:
    text = (ROOT / "data_sources.yml").read_text(encoding="utf-8")
    tabbed = text.replace("version: 1\n", "version: 1\n\tdefaults: {}\n", 1)
    line = text.splitlines().index("version: 1") + 2
    assert _load_text(tmp_path, tabbed) == (
        f"data_sources.yml: line {line}, column 1: not valid YAML: found character '\\t' that "
        "cannot start any token"
    )


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        # a misspelt default was ignored: the placeholders were then rejected as values
        ({"null_value": ["-"]}, "data_sources.yml: defaults.null_value: Extra inputs are not"),
        # blamed on the first domain before
        ({"max_reject_rate": 5}, "data_sources.yml: defaults.max_reject_rate: Input should be"),
    ],
)
def test_a_wrong_default_is_the_defaults_mistake(
    raw: dict[str, Any], defaults: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_sources({**raw, "defaults": defaults})
    assert str(error.value).startswith(expected)


def test_defaults_apply_unless_a_domain_says_otherwise(raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(raw)
    raw["defaults"] = {"null_values": ["--"], "max_reject_rate": 0.2}
    raw["domains"]["annuity_income"]["max_reject_rate"] = 0.01
    sources = parse_sources(raw)
    assert sources.domain("trustee_performance").null_values == ["--"]
    assert sources.domain("trustee_performance").max_reject_rate == 0.2
    assert sources.domain("annuity_income").max_reject_rate == 0.01
