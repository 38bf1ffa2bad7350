"""`wdh`: the operator's command line. Every command calls the same pipeline functions
the Dagster assets call. Expected failures print one line and exit with:
0 done (rejects allowed), 1 reject threshold exceeded, 2 bad input or usage,
3 warehouse failure (the table was left as it was).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from workdatahub.errors import Terminated, WdhError, loaded_note, shares
from workdatahub.settings import get_settings, mask_url

if TYPE_CHECKING:
    from workdatahub.pipeline import CheckResult


class _Rate(click.FloatRange):
    """A share from 0 to 1 (FloatRange lets `nan` through: every comparison with it fails,
    and JSON has no NaN)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        rate = super().convert(value, param, ctx)
        if rate != rate:
            self.fail(f"{value!r} is not a number from 0 to 1", param, ctx)
        return rate


_RATE = _Rate(0, 1)


def _fail(message: str, code: int = 2) -> NoReturn:
    """The one-line reason, and the exit code: a line of text, or with JSON logs (as in
    production) a JSON line like the others, at level error, that a log collector reads."""
    message = mask_url(message)
    if _json_logs():
        from datetime import UTC, datetime

        line = {"event": message, "exit_code": code, "level": "error", "logger": "wdh",
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}  # fmt: skip
        click.echo(json.dumps(line, ensure_ascii=False), err=True)
    else:
        click.echo(f"wdh: error: {message}", err=True)
    sys.exit(code)


def _json_logs() -> bool:
    try:
        return get_settings().json_logs
    except Exception:
        # a wrong setting: the line that says so follows the two variables themselves, as
        # far as they can be read (production's wrong WDH_LOG_LEVEL is still a JSON line)
        shown = os.environ.get("WDH_LOG_FORMAT", "auto").strip().lower()
        if shown in ("json", "console"):
            return shown == "json"
        return os.environ.get("WDH_ENVIRONMENT", "").strip() == "prod"


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Writing the file `out` (its folder made first): a failure is the one-line error."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        yield
    except OSError as error:
        _fail(f"{out}: cannot write it ({error.strerror or error})")


_PIECE = 16384


def _echo_long(text: str) -> None:
    """click.echo of a long text in pieces. Written at once, a text a pipe's reader stops
    reading midway (`wdh rejects … --json | head -1`) was cut short without an error (the
    pipe took the first 64 KB and Python's buffered writer dropped the rest), and the command
    ended 0; in pieces the next write fails, and the command ends as for a closed pipe."""
    for start in range(0, len(text), _PIECE):
        click.echo(text[start : start + _PIECE], nl=False)
    click.echo()


def _emit_json(payload: Any) -> None:
    _echo_long(json.dumps(payload, ensure_ascii=False, indent=2, default=str))


def _data_dir(value: Path | None) -> Path:
    return (value or get_settings().data_dir).resolve()


def _spec(domain: str) -> Any:
    from workdatahub.sources.spec import load_sources

    return load_sources().domain(domain)


# a cell of a text table: control characters shown escaped (a line break would split the
# row, an ESC sequence would reach the terminal), long text cut (`--json` has it whole)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CELL_COLUMNS = 60


def _column(name: str, header: str | None) -> str:
    """A reject's column as the operator finds it in the workbook: its header beside the
    target name (derived columns have none)."""
    return f"{name} ({header})" if header and header != name else name


def _cell(value: Any) -> str:
    text = _CONTROL.sub(lambda m: repr(m[0])[1:-1], "" if value is None else str(value))
    if _width(text) <= _CELL_COLUMNS:
        return text
    kept, used = [], 0
    for ch in text:
        used += _width(ch)
        if used > _CELL_COLUMNS - 1:
            break
        kept.append(ch)
    return "".join(kept) + "…"


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(_pad(v, widths[i]) for i, v in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _width(text: str) -> int:
    # CJK characters take two terminal columns
    return sum(2 if "\u2e80" <= ch <= "\uffef" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


period_option = click.option("--period", "-p", required=True, help="reporting month, e.g. 2024-11")
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="root of the monthly folders (default: WDH_DATA_DIR)",
)

# `wdh sample` and `wdh demo` write the same workbooks
sample_months = click.option(
    "--months", default="2024-01..2024-03", show_default=True, help="YYYY-MM..YYYY-MM"
)
sample_rows = click.option(
    "--rows",
    default=200,
    show_default=True,
    type=click.IntRange(1, 2_000_000),
    help="data rows per sheet",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """WorkDataHub: monthly Excel workbooks into a trustworthy Postgres warehouse."""
    from workdatahub.logs import configure_logging

    configure_logging()


@cli.command()
@click.argument("domain")
@period_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def discover(domain: str, period: str, data_dir: Path | None, as_json: bool) -> None:
    """Show which workbook a month of DOMAIN would load, and what was ignored."""
    from workdatahub.periods import parse_period
    from workdatahub.sources.discovery import discover as find

    root = _data_dir(data_dir)
    result = find(_spec(domain), parse_period(period), root)
    if as_json:
        _emit_json(result.to_json(root))
        return
    payload: dict[str, Any] = result.to_json(root)
    click.echo(f"{domain} {payload['period']}: {result.base}")
    for item in payload["files"]:
        click.echo(
            f"  use     {item['path']}  version={item['version'] or 'base'}  "
            f"sha256={item['sha256'][:16]}…"
        )
    for item in payload["ignored"]:
        click.echo(f"  ignore  {item['path']}  ({item['reason']})")


@cli.command()
@click.argument("domain")
@period_option
@data_dir_option
@click.option(
    "--mode",
    type=click.Choice(["delete_insert", "append", "upsert"]),
    help="refresh mode (default: the domain's `refresh`)",
)
@click.option("--plan-only", is_flag=True, help="print the SQL and counts; touch nothing")
@click.option("--max-reject-rate", type=_RATE, help="override the domain's threshold")
@click.option("--json", "as_json", is_flag=True, help="machine-readable summary")
def load(
    domain: str,
    period: str,
    data_dir: Path | None,
    mode: str | None,
    plan_only: bool,
    max_reject_rate: float | None,
    as_json: bool,
) -> None:
    """Load one month of DOMAIN into its raw table (or show the plan)."""
    from workdatahub.periods import parse_period

    spec, month = _spec(domain), parse_period(period)  # fail fast, before heavy imports
    from workdatahub.errors import RejectThresholdExceeded
    from workdatahub.pipeline import run_partition

    try:
        result = run_partition(
            spec,
            month,
            data_dir=_data_dir(data_dir),
            mode=mode,  # type: ignore[arg-type]
            plan_only=plan_only,
            max_reject_rate=max_reject_rate,
        )
    except RejectThresholdExceeded as refused:
        if as_json and refused.summary is not None:
            _emit_json(refused.summary)  # status "refused"; the reason goes to stderr
        raise
    summary = result.summary()
    if plan_only:
        summary["statements"] = [
            {"purpose": s.purpose, "sql": s.display(), "rows": s.rows} for s in result.plan.shown
        ]
    if as_json:
        _emit_json(summary)
    elif plan_only:
        _echo_long(result.plan.render())
        why = result.check.refused_by(result.max_reject_rate)
        if why:
            click.echo(f"-- NOTE: {why}: a real load would be refused")
    else:
        done = {
            "delete_insert": f"the month's {summary['rows_deleted']} old rows replaced",
            "append": "appended",
            "upsert": "inserted or updated by key",
        }[result.plan.mode]
        click.echo(
            f"{domain} {summary['period']}: loaded {summary['rows_loaded']} rows into "
            f"{result.plan.table} ({done}), rejected {summary['rows_rejected']} "
            f"({shares(summary['reject_rate'], result.max_reject_rate)[0]}); "
            f"load {summary['load_id']}"
        )


@cli.command()
@click.argument("domain")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--period", "-p", help="also reject rows of another month")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="write valid rows as CSV"
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(0), help="rejects shown (text)"
)
@click.option("--max-reject-rate", type=_RATE, help="override the domain's threshold")
def check(
    domain: str,
    file: Path,
    period: str | None,
    as_json: bool,
    out: Path | None,
    limit: int,
    max_reject_rate: float | None,
) -> None:
    """Read, cleanse and validate one workbook; no database needed. Exits 1 when more of
    its rows are rejected than the domain's `max_reject_rate` allows, as a load would be
    refused; with --period as a load judges it (rows of another month rejected too)."""
    from workdatahub.periods import parse_period

    spec = _spec(domain)  # fail fast on bad input, before the heavy imports
    month = parse_period(period) if period is not None else None
    if file.is_dir():
        _fail(f"{file}: a folder, not a workbook")
    if not file.is_file():
        _fail(f"{file}: no such file")
    from workdatahub.pipeline import check_file, cleaned_frame

    result = check_file(spec, file, month)
    if out is not None:
        with _writing(out):
            cleaned_frame(result, spec).write_csv(
                out, null_value="", date_format="%Y-%m-%d", include_bom=True
            )
    threshold = spec.max_reject_rate if max_reject_rate is None else max_reject_rate
    why = result.refused_by(threshold)
    if as_json:
        _emit_json(
            {
                **result.to_json(),
                "reject_rate": round(result.reject_rate, 6),
                "max_reject_rate": threshold,
                "threshold_exceeded": why is not None,
            }
        )
    else:
        _show_check(result, file, limit, out)
    if why:
        _fail(f"{file} [{result.sheet.sheet}]: {why}; a load of it would be refused", 1)


def _show_check(result: CheckResult, file: Path, limit: int, out: Path | None) -> None:
    click.echo(
        f"{file} [{result.sheet.sheet}] header row {result.sheet.header_row}: "
        f"{result.rows_read} rows read, {result.validated.rows_valid} valid, "
        f"{result.validated.rows_rejected} rejected"
        f" (skipped {result.sheet.skipped_blank} blank, {result.sheet.skipped_totals} totals"
        + (f", {result.sheet.skipped_footer} footer" if result.sheet.skipped_footer else "")
        + ")"
    )
    from workdatahub.reconcile import differences, unchecked

    for off in differences(result.totals):
        click.echo(f"the sheet's totals row does not add up: {off}")
    for why in unchecked(result.totals):
        click.echo(f"the sheet's totals row is not checked: {why}")
    rejects = result.validated.rejects
    if rejects.height:
        headers = result.sheet.columns
        shown = [
            [row, _column(column, headers.get(column)), value, reason]
            for row, column, value, reason in rejects.head(limit).iter_rows()
        ]
        _echo_long(_table(shown, ["row", "column", "value", "reason"]))
        if rejects.height > limit:
            click.echo(f"… {rejects.height - limit} more (use --json for all)")
    if out is not None:
        click.echo(f"wrote {result.validated.rows_valid} valid rows to {out}")


@cli.command()
@click.argument("domain", required=False)
@click.option("--period", "-p", help="only this month")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="loads shown"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def history(domain: str | None, period: str | None, limit: int, as_json: bool) -> None:
    """Loads from the audit log: files, sha256, rows, rejects, status, duration."""
    from workdatahub.periods import parse_period
    from workdatahub.warehouse.db import connect

    if domain:
        _spec(domain)
    month = parse_period(period) if period is not None else None
    with connect() as conn:
        rows = conn.execute(
            """
            select load_id::text, domain, to_char(period, 'YYYY-MM'), mode, status, files,
                   rows_read, rows_loaded, rows_rejected, rows_deleted, reject_rate,
                   round(extract(epoch from (finished_at - started_at))::numeric, 3),
                   started_at, message
            from wdh.load_log
            where (%(domain)s::text is null or domain = %(domain)s)
              and (%(period)s::date is null or period = %(period)s)
            order by started_at desc
            limit %(limit)s
            """,
            {"domain": domain, "period": month, "limit": limit},
        ).fetchall()
    loads = [
        {
            "load_id": r[0], "domain": r[1], "period": r[2], "mode": r[3], "status": r[4],
            "files": r[5], "rows_read": r[6], "rows_loaded": r[7], "rows_rejected": r[8],
            "rows_deleted": r[9], "reject_rate": float(r[10]) if r[10] is not None else None,
            "duration_s": float(r[11]) if r[11] is not None else None,
            "started_at": r[12].isoformat(), "message": r[13],
        }
        for r in rows
    ]  # fmt: skip
    if as_json:
        _emit_json(loads)
        return
    table = [
        [
            load["started_at"][:19].replace("T", " "), load["domain"], load["period"],
            load["status"], (load["files"][0]["version"] or "base") if load["files"] else "",
            (load["files"][0]["sha256"][:12]) if load["files"] else "", load["rows_read"],
            load["rows_loaded"], load["rows_rejected"], load["duration_s"],
            _short_message(load["message"] or ""),
        ]
        for load in loads
    ]  # fmt: skip
    header = ["started", "domain", "month", "status", "version", "sha256", "read", "loaded",
              "rejected", "seconds", "message"]  # fmt: skip
    _echo_long(_table(table, header) if table else "no loads recorded")


# the workbook's folders a reason begins with (`/data/202411/收集数据/…/x.xlsx: sheet …`): the
# table shows the file's name, so that the reason fits beside it (--json: the whole message)
_WORKBOOK_FOLDERS = re.compile(r"^/.*?/(?=[^/]+?\.xls[xm]?: )")
MESSAGE_SHOWN = 120


def _short_message(message: str) -> str:
    short = _WORKBOOK_FOLDERS.sub("", message)
    return short if len(short) <= MESSAGE_SHOWN else short[: MESSAGE_SHOWN - 1] + "…"


def _replaced(conn: Any, spec: Any, month: Any, load: tuple[Any, ...]) -> bool:
    """Whether a later load replaced this succeeded one (load id, status, rows loaded,
    finished at, …): the domain's table holds none of its rows, or, for a load of no rows,
    a later load of the month replaced the month (not an append)."""
    from psycopg import sql

    load_id, _, rows_loaded, finished_at = load[:4]
    if not rows_loaded:
        later = conn.execute(
            "select exists (select 1 from wdh.load_log where domain = %s and period = %s "
            "and status = 'succeeded' and mode <> 'append' and finished_at > %s)",
            [spec.name, month, finished_at],
        )
        return bool(later.fetchone()[0])
    query = sql.SQL("select exists (select 1 from {} where {} = %s and load_id = %s)").format(
        sql.Identifier(spec.schema_name, spec.table), sql.Identifier(spec.partition_column)
    )
    return not conn.execute(query, [month, load_id]).fetchone()[0]


@cli.command()
@click.argument("domain")
@period_option
@click.option(
    "--load-id",
    help="a specific load, as `wdh history --json` shows it (default: the month's latest)",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write CSV")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(0), help="rows shown (text)"
)
def rejects(
    domain: str, period: str, load_id: str | None, out: Path | None, as_json: bool, limit: int
) -> None:
    """Quarantined rows of a month, with their reasons."""
    import csv

    from workdatahub.periods import parse_period
    from workdatahub.warehouse.db import connect

    spec = _spec(domain)
    month = parse_period(period)
    if load_id is not None:
        try:
            load_id = str(uuid.UUID(load_id))
        except ValueError:
            _fail(f"--load-id {load_id!r} is not a load id (a UUID, as `wdh history --json` shows)")
    with connect() as conn:
        latest = conn.execute(
            """
            select load_id::text, status, rows_loaded, finished_at, headers from wdh.load_log
            where domain = %s and period = %s and (%s::uuid is null or load_id = %s::uuid)
              and status in ('succeeded', 'refused')
            order by finished_at desc limit 1
            """,
            [domain, month, load_id, load_id],
        ).fetchone()
        if latest is None and load_id is not None:
            other = conn.execute(
                "select domain, to_char(period, 'YYYY-MM'), status from wdh.load_log "
                "where load_id = %s",
                [load_id],
            ).fetchone()
            if other is None:
                _fail(f"load {load_id} is not recorded (`wdh history --json` lists the loads)")
            if (other[0], other[1]) != (domain, f"{month:%Y-%m}"):
                _fail(
                    f"load {load_id} is a load of {other[0]} {other[1]}, not of {domain} "
                    f"{month:%Y-%m}"
                )
            _fail(f"load {load_id} is {other[2]}: only a finished load has rejects to show")
        if latest is None:
            _fail(f"{domain} {month:%Y-%m}: no finished load recorded")
        status = latest[1]
        if status == "succeeded" and load_id is not None and _replaced(conn, spec, month, latest):
            status = "succeeded; replaced since by a later load"
        rows = conn.execute(
            """
            select source_file, source_sheet, source_row, column_name, value, reason, raw_row
            from wdh.rejected_rows where load_id = %s order by source_row, column_name
            """,
            [latest[0]],
        ).fetchall()
    headers = latest[4] or {}  # (loads before migration 0005 did not record them)
    records = [
        {"file": r[0], "sheet": r[1], "row": r[2], "column": r[3], "value": r[4], "reason": r[5],
         "raw_row": r[6], "header": headers.get(r[3])}
        for r in rows
    ]  # fmt: skip
    if out is not None:
        # with a byte-order mark, as `wdh check --out`: Excel then opens it as UTF-8
        with _writing(out), out.open("w", newline="", encoding="utf-8-sig") as handle:
            writer = csv.writer(handle)
            # (the header last: the columns before it kept their places)
            columns = ["file", "sheet", "row", "column", "value", "reason", "raw_row", "header"]
            writer.writerow(columns)
            for record in records:
                raw_row = json.dumps(record["raw_row"], ensure_ascii=False)
                writer.writerow([*list(record.values())[:6], raw_row, record["header"]])
    if as_json:
        _emit_json({"domain": domain, "period": f"{month:%Y-%m}", "load_id": latest[0],
                    "status": latest[1], "replaced": status != latest[1],
                    "rejects": records})  # fmt: skip
        return
    in_rows = len({r["row"] for r in records})  # `wdh load` counts rows; a row may fail twice
    click.echo(
        f"{domain} {month:%Y-%m}: load {latest[0]} ({status}), {len(records)} rejects "
        f"in {in_rows} rows"
    )
    if records[:limit]:
        shown = [
            [r["row"], _column(r["column"], r["header"]), r["value"], r["reason"]]
            for r in records[:limit]
        ]
        _echo_long(_table(shown, ["row", "column", "value", "reason"]))
    if len(records) > limit:
        click.echo(f"… {len(records) - limit} more (--limit N, or --out FILE / --json for all)")
    if out is not None:
        click.echo(f"wrote {len(records)} rejects to {out}")


@cli.group()
def db() -> None:
    """The warehouse database."""


@db.command()
def upgrade() -> None:
    """Create or migrate the warehouse schemas and tables (Alembic)."""
    from workdatahub.warehouse.db import masked_url
    from workdatahub.warehouse.migrate import upgrade as migrate

    revision = migrate()
    click.echo(f"warehouse {masked_url()} at revision {revision}")


@db.command(name="check")
@click.argument("domains", nargs=-1)
def check_warehouse(domains: tuple[str, ...]) -> None:
    """Does the warehouse hold what data_sources.yml loads? Each domain's table, checked as
    its loads check it (the migration, each column of its type; an upsert's key, and for a
    domain with a key loaded otherwise, whether --mode upsert could run), nothing written:
    after a deploy or a change to data_sources.yml, before the month's loads."""
    from workdatahub.sources.spec import load_sources
    from workdatahub.warehouse import contract
    from workdatahub.warehouse.db import connect, masked_url

    sources = load_sources()
    specs = [sources.domain(d) for d in domains] or list(sources.domains.values())
    wrong = 0
    with connect(autocommit=True) as conn:
        for spec in specs:
            try:
                contract.check(conn, spec, spec.refresh)
            except contract.ContractError as error:
                if not error.recordable:  # the warehouse's migration: every domain's
                    raise
                wrong += 1
                click.echo(f"{spec.name}: {error.message}")
            else:
                said = f"{spec.name}: ok ({spec.qualified_table}, {spec.refresh})"
                if spec.key and spec.refresh != "upsert":  # (`wdh load --mode upsert` may)
                    upsert = contract.upsert_problem(conn, spec)
                    said += f"; a load with --mode upsert would stop: {upsert}" if upsert else ""
                click.echo(said)
    if wrong:
        _fail(f"{wrong} of {len(specs)} domains do not match the warehouse {masked_url()}", 3)


@db.command()
@click.argument("message")
def revision(message: str) -> None:
    """A new migration file, numbered after the newest, from the project's template (what a
    column or a domain added to data_sources.yml needs: README, Changing the contract)."""
    from workdatahub.warehouse.migrate import new_revision

    click.echo(f"wrote {new_revision(message)}: fill in upgrade() and downgrade()")


@db.command()
@click.option("-c", "commands", multiple=True, help="run this SQL command (repeatable) and exit")
@click.option(
    "--as", "role", metavar="ROLE",
    help="connect as ROLE (wdh_reader: what analysts see), with its password from "
    "PGPASSWORD or ~/.pgpass, not the warehouse URL's",
)  # fmt: skip
def shell(commands: tuple[str, ...], role: str | None) -> None:
    """psql on the warehouse."""
    import shutil

    from workdatahub.warehouse.db import psql_env

    own = psql_env()
    if role:
        own.pop("PGPASSWORD", None)  # the URL's password is its user's, not the role's
        own["PGUSER"] = role
    env = {**os.environ, **own}
    psql = shutil.which("psql") or _bundled_psql()
    if psql is None:
        _fail("psql not found (install the postgresql-client package)")
    args = [psql, "-v", "ON_ERROR_STOP=1", *[a for c in commands for a in ("-c", c)]]
    code = subprocess.call(args, env=env)
    # psql: 2 the connection failed or broke (the warehouse's, exit 3); 1 or 3 a command
    # failed (the input's, exit 2; psql printed why); killed by a signal (SIGPIPE: output
    # cut short by `| head`, 141), as a shell says it
    sys.exit(128 - code if code < 0 else {0: 0, 2: 3}.get(code, 2))


def _bundled_psql() -> str | None:
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    candidate = Path(POSTGRES_BIN_PATH) / "psql"
    return str(candidate) if candidate.exists() else None


@db.command()
def url() -> None:
    """Print the warehouse URL (password masked)."""
    from workdatahub.warehouse.db import masked_url

    click.echo(masked_url())


@db.command()
def stop() -> None:
    """Stop the embedded Postgres (no effect on an external WDH_DATABASE_URL)."""
    from workdatahub.warehouse.db import stop_embedded

    click.echo("embedded Postgres stopped" if stop_embedded() else "embedded Postgres not running")


@cli.command(name="dbt-parse")
def dbt_parse() -> None:
    """Parse the dbt project as Dagster's dbt steps run it (their connection), so that they
    reuse the parse; a stopped embedded Postgres stays stopped."""
    from workdatahub.settings import PROJECT_ROOT
    from workdatahub.warehouse.db import parse_dbt_project

    parse_dbt_project(PROJECT_ROOT / "dbt_project")


@cli.command()
def env() -> None:
    """Print shell exports for dbt and Dagster: eval "$(wdh env)"."""
    import shlex

    from workdatahub.warehouse.db import dbt_env

    settings = get_settings()
    # (dbt_env starts the embedded warehouse); a DAGSTER_HOME set already (a production
    # box's instance) stays: the one under WDH_HOME is a local clone's
    dagster_home = os.environ.get("DAGSTER_HOME") or str(settings.dagster_home)
    exports = {**dbt_env(), "DAGSTER_HOME": dagster_home}
    # the data folder only when it is set (the environment, .env): its default exported
    # would win over the one make dev and make demo give (data/sample, `WDH_DATA_DIR ?=`)
    if "data_dir" in settings.model_fields_set:
        exports["WDH_DATA_DIR"] = str(settings.data_dir)
    # for `eval`: on a terminal (shown, not evaluated) the password stays out of sight
    shown = sys.stdout.isatty()
    for key, value in exports.items():
        if shown and key == "WDH_DBT_PASSWORD" and value:
            click.echo(f'# {key} is not shown on a terminal; eval "$(wdh env)" sets it')
            continue
        click.echo(f"export {key}={shlex.quote(value)}")


@cli.command()
@sample_months
@sample_rows
@click.option(
    "--seed", default=7, show_default=True, help="the same seed writes the same workbooks"
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="default: data/sample (never the operators' WDH_DATA_DIR unless named)",
)
@click.option(
    "--domain", "domains", multiple=True, help="only these domains (default: all sample domains)"
)
@click.option("--overwrite", is_flag=True, help="rewrite files that exist")
def sample(
    months: str, rows: int, seed: int, out: Path | None, domains: tuple[str, ...], overwrite: bool
) -> None:
    """Write deterministic synthetic workbooks in the operators' folder layout."""
    from workdatahub.periods import month_range
    from workdatahub.samples import SAMPLE_DIR, write_samples

    target = (out or SAMPLE_DIR).resolve()
    kwargs: dict[str, Any] = {"rows": rows, "seed": seed, "overwrite": overwrite}
    if domains:
        kwargs["domains"] = tuple(domains)
    try:
        written = write_samples(target, month_range(months), **kwargs)
    except ValueError as error:  # an unknown domain: the message lists the known ones
        _fail(str(error))
    except OSError as error:
        _fail(f"{error.filename or target}: cannot write it ({error.strerror or error})")
    for item in written:
        what = "kept (exists; --overwrite rewrites it)" if item.kept else f"{item.rows:>8} rows"
        click.echo(f"{item.domain:22} {item.period:%Y-%m}  {what}  {item.path}")


@cli.command()
@sample_months
@sample_rows
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="default: data/sample"
)
@click.option(
    "--named-warehouse",
    is_flag=True,
    help="run in the warehouse WDH_DATABASE_URL names (its demo months are replaced)",
)
def demo(months: str, rows: int, data_dir: Path | None, named_warehouse: bool) -> None:
    """Sample workbooks → embedded Postgres → Dagster (raw + dbt) → a summary table."""
    from workdatahub.demo import run_demo

    # Dagster runs in this process, and would take a SIGTERM for a step's interruption (a
    # failed run, tracebacks, the summary after all): the demo ends at once instead; each
    # load is one transaction, rolled back by the server
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = run_demo(months=months, rows=rows, data_dir=data_dir, named_warehouse=named_warehouse)
    sys.exit(code)


def _database_failure(error: Exception) -> str | None:
    """The one-line reason for a failure of the warehouse outside a load (`history`,
    `rejects`: a database without the migrations, a role without rights), or None when
    `error` is not the database's."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(error, psycopg.Error):
        return None
    from workdatahub.settings import one_line
    from workdatahub.warehouse.db import unmigrated_hint

    return f"the warehouse failed: {one_line(error)}{unmigrated_hint(error)}"


def _terminate(signum: int, frame: object) -> None:
    # a second SIGTERM (a supervisor that asks twice) must not kill the process by signal
    # while the first is handled: the load rolls back and the exit is 143 either way
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def main() -> None:
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        _main()
    finally:
        # (after a SIGTERM the process is ending: the second one stays ignored)
        if previous is not None and signal.getsignal(signal.SIGTERM) is _terminate:
            signal.signal(signal.SIGTERM, previous)


def _main() -> None:
    stdout = sys.stdout
    try:
        try:
            cli.main(standalone_mode=False)
        except SystemExit as done:
            # click quiets a closed pipe (`wdh rejects … | head -1`) by swapping stdout, then
            # exits 1, which here means "threshold exceeded": exit as SIGPIPE would, 141
            if done.code == 1 and sys.stdout is not stdout:
                sys.exit(141)
            raise
    except WdhError as error:
        _fail(error.message, error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt) as error:
        # click turns Ctrl-C, and the Terminated a SIGTERM raises, into Abort
        aborted = isinstance(error, click.exceptions.Abort)
        terminated = isinstance(error.__cause__ if aborted else error, Terminated)
        what = "terminated" if terminated else "aborted" if aborted else "interrupted"
        loaded = loaded_note(error)  # the stop came once the month was committed
        if loaded:
            what += f" after the load committed: {loaded}; its quality metrics were not recorded"
        _fail(what, 143 if terminated else 130)
    except Exception as error:
        reason = _database_failure(error)
        if reason is None:
            raise
        _fail(reason, 3)


if __name__ == "__main__":
    main()
