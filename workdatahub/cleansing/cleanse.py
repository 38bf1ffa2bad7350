"""Apply a domain's column spec to the raw text cells of a sheet, vectorised.

Phases, in order:
1. parse: null placeholders -> null, then the column type's parser (money, month …);
2. derive: columns built from others by a registered rule (seeing parsed values);
3. rules: each column's registered rules, chained in order;
4. the partition column must equal the month being loaded ("period mismatch").
Every failure becomes an error column `__err__<name>` holding the reason; the raw text
stays in `__raw__<name>` so a reject can show the value the operator typed. An error
column that would be null on every row is left out.

Why it is fast. The parsers and rules are elementwise polars expressions, but several are
costly per cell (NFKC, a dozen regex extracts for a month, the company-name replaces), and
a month of 500,000 rows repeats the same few values: one 月度 spelling, a few thousand
customer names. So an expression that reads a single column is evaluated once per distinct
value of that column and joined back (`_Distinct`); only expressions that combine columns
(plan code defaults by plan type) run on every row, and those are cheap. Amount columns are
the exception, nearly every value distinct: there a fast path parses the plain numbers
Excel stores (values.FAST_PATHS, exact on those cells) and only the remaining spellings
(`1,234.50`, `(12)`, `abc`) go through the full parser, per distinct value. Independent
columns are collected together, so polars spreads them over the cores.

A sheet is cleansed in parts (see pipeline.check_file), so what a part costs whatever its
size counts too: the expressions, which follow from the spec alone, are built once per spec
(`_recipe`); a column is one query (its distinct values, parsed and joined back), an amount
with a fast path three (the fast path, the rest, the two merged): ~45 queries a part for
annuity_performance, collected in 5 batches (6 with the period check).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from workdatahub.cleansing.rules import RULES
from workdatahub.cleansing.values import DTYPES, FAST_PATHS, PARSERS, Parsed, blank_to_null
from workdatahub.excel.reader import CELL_ISSUE
from workdatahub.sources.spec import ColumnSpec, DomainSpec, per_spec

RAW = "__raw__"
ERR = "__err__"
_RULE_ERR = "__rule_err__"  # a column's rule errors, before earlier errors are put first
_KEY = "__key__"  # the distinct value a lookup table is keyed by
_FAST = "__fast__"  # whether a fast path parsed the cell
_QUICK = "__quick__"  # the value the fast path gave


@dataclass
class Cleansed:
    frame: pl.DataFrame  # ROW, typed columns, __raw__*, __err__* (only where some row has one)

    def error_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c.startswith(ERR)]


def _first_error(errors: list[pl.Expr]) -> pl.Expr:
    if not errors:
        return pl.lit(None, dtype=pl.String)
    return pl.coalesce(errors) if len(errors) > 1 else errors[0]


def _single_root(exprs: list[pl.Expr]) -> str | None:
    """The one column all `exprs` read, or None when they read several (or none)."""
    roots = {root for expr in exprs for root in expr.meta.root_names()}
    return roots.pop() if len(roots) == 1 else None


def _is_error(name: str) -> bool:
    return name.startswith((ERR, _RULE_ERR))


def _collect(parts: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    # Together, so that independent columns run in parallel. The in-memory engine: these are
    # small per-column queries over a frame already in memory, where the streaming engine
    # (polars' default) kept several times more memory (+800 MB at 500,000 rows, not +230).
    return pl.collect_all(parts, engine="in-memory") if parts else []


class _Distinct:
    """`outputs` (elementwise expressions over `column` alone, each aliased to its output's
    name) evaluated once per distinct value of the column and joined back to the rows:
    `rows`, one query.

    `key` narrows the work: rows where it is null share one evaluation (of a null cell),
    which is how a fast path hands over only the cells it does not parse itself. `parsed`, when
    given, has its intermediate columns (`Parsed.steps`) computed on the distinct values
    before the outputs.
    """

    def __init__(
        self,
        frame: pl.LazyFrame,
        column: str,
        outputs: list[pl.Expr],
        key: pl.Expr | None = None,
        parsed: Parsed | None = None,
    ) -> None:
        keys = frame.select((pl.col(column) if key is None else key).alias(column))
        self.keys = keys.select(pl.col(column).alias(_KEY))
        distinct = keys.unique() if parsed is None else parsed.prepare(keys.unique())
        table = distinct.select(pl.col(column).alias(_KEY), *outputs)
        self.rows = self.keys.join(
            table, on=_KEY, how="left", nulls_equal=True, maintain_order="left"
        ).drop(_KEY)


class _EveryRow:
    """Outputs that combine columns: evaluated on every row (they are cheap ones)."""

    def __init__(self, frame: pl.LazyFrame, outputs: list[pl.Expr]) -> None:
        self.rows = frame.select(outputs)


@dataclass(frozen=True)
class _Outputs:
    """Expressions computed together (aliased), and how: per distinct value of `root`, the
    one column they all read, or on every row (`root` None)."""

    exprs: list[pl.Expr]
    root: str | None

    @staticmethod
    def of(outputs: dict[str, pl.Expr]) -> _Outputs:
        exprs = list(outputs.values())
        root = _single_root(exprs)
        if all(expr.meta.is_column() for expr in exprs):
            root = None  # a plain copy of columns: nothing to evaluate per value
        return _Outputs([expr.alias(name) for name, expr in outputs.items()], root)

    def plan(self, frame: pl.LazyFrame) -> _Distinct | _EveryRow:
        if self.root is None:
            return _EveryRow(frame, self.exprs)
        return _Distinct(frame, self.root, self.exprs)


def _run(steps: list[_Distinct | _EveryRow]) -> list[pl.DataFrame]:
    """Every step's rows, collected in parallel, without the error columns in which no cell
    failed."""
    return [_without_null_errors(part) for part in _collect([step.rows for step in steps])]


def _without_null_errors(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` without the error columns in which no cell failed."""
    return frame.drop(
        c for c in frame.columns if _is_error(c) and frame[c].null_count() == frame.height
    )


@dataclass(frozen=True)
class _Source:
    """What cleansing computes for one source column."""

    name: str
    parsed: Parsed
    outputs: list[pl.Expr]  # the parsed value and its error (aliased)
    fast: list[pl.Expr]  # a fast path's steps: the cells it parses (_FAST), their value (_QUICK)
    rest: pl.Expr | None  # with a fast path: the cells it leaves to the full parser
    zero: pl.Expr | None  # a null placeholder counts as 0 (null_as_zero)


@dataclass(frozen=True)
class _Recipe:
    """A spec's cleansing as polars expressions. They depend on the spec alone, so they are
    built once per spec (`_recipe`) rather than for every part of a sheet (~6 ms of Python
    a part, a quarter of a small part's cleansing)."""

    sources: list[_Source]
    derived: list[tuple[_Outputs, pl.Expr]]  # a derived column, and the cells a reject shows
    ruled: list[_Outputs]  # a column's rules, chained; _RULE_ERR + name for their errors


def _source(column: ColumnSpec, null_values: list[str]) -> _Source:
    raw = pl.col(column.name)
    parsed = PARSERS[column.type](blank_to_null(raw, null_values))
    error = parsed.error if parsed.error is not None else pl.lit(None, dtype=pl.String)
    outputs = [parsed.value.alias(column.name), error.alias(ERR + column.name)]
    fast: list[pl.Expr] = []
    rest = None
    if column.type in FAST_PATHS:
        path = FAST_PATHS[column.type]
        fast = [
            # in steps: as one expression, `handles` (a regex) and the value were evaluated
            # twice; other cells never reach the cast
            path.handles(raw, null_values).alias(_FAST),
            path.value(pl.when(_FAST).then(raw)).alias(_QUICK),
            (pl.col(_FAST) & pl.col(_QUICK).is_not_null()).alias(_FAST),
        ]
        rest = pl.when(~pl.col(_FAST)).then(raw)
    zero = None
    if column.null_as_zero:
        # a null placeholder counts as 0 for required amounts; text like `abc` still rejects
        zero = raw.fill_null(pl.lit(0).cast(DTYPES[column.type]))
    return _Source(column.name, parsed, outputs, fast, rest, zero)


@per_spec
def _recipe(spec: DomainSpec) -> _Recipe:
    sources = [_source(column, spec.null_values) for column in spec.source_columns]
    derived = []
    for column in spec.columns:
        if column.derive is None:
            continue
        output = RULES[column.derive.rule](*[pl.col(name) for name in column.derive.from_])
        outputs = {
            column.name: output.value.cast(DTYPES[column.type], strict=False),
            ERR + column.name: _first_error(list(output.errors)),
        }
        # a reject on a derived column shows the cells it came from: "2024 / 13"
        cells = [pl.col(RAW + name).fill_null("") for name in column.derive.from_]
        shown = cells[0] if len(cells) == 1 else pl.concat_str(cells, separator=" / ")
        derived.append((_Outputs.of(outputs), shown.alias(RAW + column.name)))
    ruled = []
    for column in spec.columns:
        if not column.rules:
            continue
        value = pl.col(column.name)
        errors: list[pl.Expr] = []
        for name in column.rules:
            output = RULES[name](value)
            value = output.value
            errors += list(output.errors)
        chained = {column.name: value.cast(DTYPES[column.type], strict=False)}
        if errors:
            chained[_RULE_ERR + column.name] = _first_error(errors)
        ruled.append(_Outputs.of(chained))
    return _Recipe(sources, derived, ruled)


def _parse(source: pl.DataFrame, recipe: _Recipe) -> list[pl.DataFrame]:
    """Per source column: its parsed value and, if any cell failed, its parse error."""
    lazy = source.lazy()
    fast = [column for column in recipe.sources if column.fast]
    queries = []
    for column in fast:
        query = lazy.select(column.name)
        for step in column.fast:
            query = query.with_columns(step)
        queries.append(query)
    quick = {column.name: part for column, part in zip(fast, _collect(queries), strict=True)}

    steps: list[_Distinct | _EveryRow] = []
    for column in recipe.sources:
        if column.name in quick:
            frame = quick[column.name].lazy()
            steps.append(
                _Distinct(frame, column.name, column.outputs, key=column.rest, parsed=column.parsed)
            )
        else:
            steps.append(_Distinct(lazy, column.name, column.outputs, parsed=column.parsed))
    parts = _run(steps)

    # a last step only where one is needed: the fast path's cells merged in, nulls as 0
    finals: dict[str, pl.LazyFrame] = {}
    for column, part in zip(recipe.sources, parts, strict=True):
        if column.name not in quick and column.zero is None:
            continue
        result = part.lazy()
        if column.name in quick:
            result = pl.concat(
                [quick[column.name].lazy().select(_FAST, _QUICK), result], how="horizontal"
            ).select(
                pl.when(_FAST).then(_QUICK).otherwise(column.name).alias(column.name),
                *[pl.when(~pl.col(_FAST)).then(c).alias(c) for c in part.columns if _is_error(c)],
            )
        if column.zero is not None:
            result = result.with_columns(column.zero)
        finals[column.name] = result
    done = dict(zip(finals, _collect(list(finals.values())), strict=True))
    return [done.get(c.name, part) for c, part in zip(recipe.sources, parts, strict=True)]


def cleanse(raw: pl.DataFrame, spec: DomainSpec, period: date | None) -> Cleansed:
    """`raw` holds ROW and one text column per source column present in the sheet."""
    missing = [c.name for c in spec.source_columns if c.name not in raw.columns]
    source = raw.with_columns(
        *[pl.lit(None, dtype=pl.String).alias(name) for name in missing],
        *[pl.col(c.name).cast(pl.String) for c in spec.source_columns if c.name not in missing],
    )

    recipe = _recipe(spec)

    # 1. parse
    parsed = _parse(source, recipe)
    source_names = {c.name for c in spec.source_columns}
    frame = pl.concat(
        [
            # ROW and anything else the reader passed along (kept as it came)
            source.select(c for c in source.columns if c not in source_names),
            *parsed,
            source.select(pl.col(c.name).alias(RAW + c.name) for c in spec.source_columns),
        ],
        how="horizontal",
    )
    # a cell the reader cannot vouch for (an Excel error, part of a merged range, a formula
    # with no saved value) is rejected with the reader's reason, whatever it parsed to
    flagged = [c.name for c in spec.source_columns if CELL_ISSUE + c.name in frame.columns]
    if flagged:
        frame = frame.with_columns(
            (
                pl.coalesce(pl.col(CELL_ISSUE + name), pl.col(ERR + name))
                if ERR + name in frame.columns  # parsers that cannot fail add no error column
                else pl.col(CELL_ISSUE + name)
            ).alias(ERR + name)
            for name in flagged
        ).drop(CELL_ISSUE + name for name in flagged)

    # 2. derive (sees parsed values of the source columns, before their own rules)
    if recipe.derived:
        lazy = frame.lazy()
        derived = _run([outputs.plan(lazy) for outputs, _ in recipe.derived])
        frame = pl.concat([frame, *derived], how="horizontal").with_columns(
            shown for _, shown in recipe.derived
        )

    # 3. rules, chained per column; errors of earlier phases win
    if recipe.ruled:
        lazy = frame.lazy()
        ruled = _run([o.plan(lazy) for o in recipe.ruled])
        new = {name for part in ruled for name in part.columns}
        merged_errors: list[pl.Expr] = []
        for name in (n for n in new if n.startswith(_RULE_ERR)):
            target = ERR + name.removeprefix(_RULE_ERR)
            earlier = [target] if target in frame.columns else []
            merged_errors.append(pl.coalesce([*earlier, name]).alias(target))
        frame = (
            pl.concat([frame.drop(new, strict=False), *ruled], how="horizontal")
            .with_columns(merged_errors)
            .drop([n for n in new if n.startswith(_RULE_ERR)])
        )

    # 4. rows of another month do not belong in this partition
    if period is not None:
        part = spec.partition_column
        mismatch = pl.col(part).is_not_null() & (pl.col(part) != pl.lit(period))
        if frame.select(mismatch.any()).item():
            reason = pl.concat_str(
                [
                    pl.lit("period mismatch: row is for "),
                    pl.col(part).dt.strftime("%Y-%m"),
                    pl.lit(f", loading {period:%Y-%m}"),
                ]
            )
            found = [pl.col(ERR + part)] if ERR + part in frame.columns else []
            frame = frame.with_columns(
                pl.coalesce([*found, pl.when(mismatch).then(reason)]).alias(ERR + part)
            )
    return Cleansed(frame)
