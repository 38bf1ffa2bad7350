"""Apply a domain's column spec to the raw text cells of a sheet, vectorised.

Phases, each one `with_columns` batch so polars runs the columns in parallel:
1. parse: null placeholders -> null, then the column type's parser (money, month …);
2. derive: columns built from others by a registered rule (seeing parsed values);
3. rules: each column's registered rules, chained in order;
4. the partition column must equal the month being loaded ("period mismatch").
Every failure becomes an error column `__err__<name>` holding the reason; the raw text
stays in `__raw__<name>` so a reject can show the value the operator typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from workdatahub.cleansing.rules import RULES
from workdatahub.cleansing.values import DTYPES, PARSERS, blank_to_null
from workdatahub.excel.reader import ROW
from workdatahub.sources.spec import DomainSpec

RAW = "__raw__"
ERR = "__err__"


@dataclass
class Cleansed:
    frame: pl.DataFrame  # ROW, typed columns, __raw__*, __err__*

    def error_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c.startswith(ERR)]


def _first_error(errors: list[pl.Expr]) -> pl.Expr:
    if not errors:
        return pl.lit(None, dtype=pl.String)
    return pl.coalesce(errors) if len(errors) > 1 else errors[0]


def cleanse(raw: pl.DataFrame, spec: DomainSpec, period: date | None) -> Cleansed:
    """`raw` holds ROW and one text column per source column present in the sheet."""
    missing = [c.name for c in spec.source_columns if c.name not in raw.columns]
    frame = raw.with_columns(pl.lit(None, dtype=pl.String).alias(name) for name in missing)

    # 1. parse
    parse_exprs: list[pl.Expr] = []
    for column in spec.source_columns:
        text = blank_to_null(pl.col(column.name).cast(pl.String), spec.null_values)
        parsed = PARSERS[column.type](text)
        value = parsed.value
        if column.null_as_zero:
            # a null placeholder counts as 0 for required amounts; text like `abc` still rejects
            value = value.fill_null(pl.lit(0).cast(DTYPES[column.type]))
        parse_exprs += [
            pl.col(column.name).alias(RAW + column.name),
            value.alias(column.name),
            _first_error([parsed.error] if parsed.error is not None else []).alias(
                ERR + column.name
            ),
        ]
    frame = frame.with_columns(parse_exprs)

    # 2. derive (sees parsed values of the source columns, before their own rules)
    derive_exprs: list[pl.Expr] = []
    for column in spec.columns:
        if column.derive is None:
            continue
        output = RULES[column.derive.rule](*[pl.col(name) for name in column.derive.from_])
        derive_exprs += [
            output.value.cast(DTYPES[column.type], strict=False).alias(column.name),
            _first_error(list(output.errors)).alias(ERR + column.name),
            # a reject on a derived column shows the cells it came from: "2024 / 13"
            pl.concat_str(
                [pl.col(RAW + name).fill_null("") for name in column.derive.from_],
                separator=" / ",
            ).alias(RAW + column.name),
        ]
    if derive_exprs:
        frame = frame.with_columns(derive_exprs)

    # 3. rules, chained per column; errors of earlier phases win
    rule_exprs: list[pl.Expr] = []
    for column in spec.columns:
        if not column.rules:
            continue
        value = pl.col(column.name)
        errors = [pl.col(ERR + column.name)]
        for name in column.rules:
            output = RULES[name](value)
            value = output.value
            errors += list(output.errors)
        rule_exprs += [
            value.cast(DTYPES[column.type], strict=False).alias(column.name),
            _first_error(errors).alias(ERR + column.name),
        ]
    if rule_exprs:
        frame = frame.with_columns(rule_exprs)

    # 4. rows of another month do not belong in this partition
    if period is not None:
        part = spec.partition_column
        mismatch = pl.col(part).is_not_null() & (pl.col(part) != pl.lit(period))
        reason = pl.concat_str(
            [
                pl.lit(f"period mismatch: row is for "),
                pl.col(part).dt.strftime("%Y-%m"),
                pl.lit(f", loading {period:%Y-%m}"),
            ]
        )
        frame = frame.with_columns(
            pl.coalesce(pl.col(ERR + part), pl.when(mismatch).then(reason)).alias(ERR + part)
        )
    return Cleansed(frame)
