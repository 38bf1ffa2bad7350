"""audit.loads: what analysts may know of each load, and the headers a load read.

wdh.load_log gets `headers` (each loaded column -> the header it was read from, as the
workbook wrote it: a month whose 当期收益率 column was headed 年化收益率 says so) and
`totals` (the sheet's own 合计 row against the rows read, workdatahub/reconcile.py).

Analysts (wdh_reader) have no access to schema wdh, whose quarantine holds raw customer rows
and whose messages may quote cells. The view audit.loads shows them, per load, what a month
in the marts comes from and what it lacks, without any cell's value: the file, its version
and sha256, the sheet and its headers, rows read, loaded and rejected, the rejected cells
counted per column, and when a later load replaced its rows. The view runs with its
owner's rights, so the reader needs only the view.

The loader (wdh_loader) keeps writing the load log and the quarantine but may no longer
delete from them, nor rewrite a quarantined row: the loads never do, and its credential is
on every machine that runs them, where a delete would erase the audit trail.

The summary mart's `outflow` (the sum of 流失(含待遇支付)) is renamed outflow_incl_benefits,
the name the facts give it (their `outflow`, 流失, excludes benefit payments): dbt builds
the mart from then on with the new name, and this renames the column of a mart already
built, so that its next incremental build does not fail on a changed shape.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COMMENTS = {
    "": "One row per load of a month (WorkDataHub's load log), for analysts: what a month "
    "in the marts comes from and what it lacks. No cell values.",
    "load_id": "The load; the marts' load_id.",
    "domain": "The domain loaded (annuity_performance, annuity_income, trustee_performance).",
    "period": "The month loaded (first day).",
    "status": "succeeded, refused (too many rejects: the table kept its rows), failed, "
    "abandoned or running.",
    "mode": "delete_insert (the month replaced), append or upsert.",
    "source_file": "The workbook, relative to the data folder.",
    "file_version": "The version folder it came from (V1, V2…); null for the base folder.",
    "sha256": "The workbook's sha256.",
    "source_sheet": "The sheet read.",
    "headers": "Each loaded column and the header it was read from, as the workbook wrote "
    "it (e.g. period_return: 年化收益率 where the month's column was headed so).",
    "totals": "The sheet's own totals row (合计) checked, per money column: the header, "
    "what the row states, the rows loaded, the rejected rows' amounts (and how many of "
    "their cells were no number), the difference and its tolerance; why a column (or, under "
    "(sheet), the sheet: several totals rows) is not checked; null without a totals row.",
    "rows_read": "Data rows read (blank and 合计/总计 rows not counted).",
    "rows_loaded": "Rows the load wrote.",
    "rows_rejected": "Rows rejected (kept in quarantine with their reasons; not in the "
    "marts): a month's totals are short of the workbook's own 合计 by their amounts.",
    "reject_rate": "rows_rejected / rows_read.",
    "rejected_by_column": "Rejected cells counted per column (a row can have several).",
    "replaced_at": "When a later load that replaces the whole month (delete_insert) "
    "ended, and with it this load's rows; null until one does. An upsert replaces only the "
    "rows of its keys and is not counted here: the marts' load_id says which load each row "
    "is from.",
    "started_at": "When the load began.",
    "finished_at": "When it ended.",
}


def _rename_summary_column(old: str, new: str) -> None:
    op.execute(
        f"""
        do $$ begin
            if exists (
                select 1 from information_schema.columns
                where table_schema = 'marts' and table_name = 'fct_monthly_branch_product_line'
                  and column_name = '{old}'
            ) then
                alter table marts.fct_monthly_branch_product_line rename column {old} to {new};
            end if;
        end $$
        """
    )


def upgrade() -> None:
    _rename_summary_column("outflow", "outflow_incl_benefits")
    op.execute("alter table wdh.load_log add column headers jsonb")
    op.execute("alter table wdh.load_log add column totals jsonb")
    op.execute("create schema if not exists audit")
    op.execute(
        """
        create view audit.loads as
        select
            l.load_id,
            l.domain,
            l.period,
            l.status,
            l.mode,
            l.files -> 0 ->> 'path' as source_file,
            l.files -> 0 ->> 'version' as file_version,
            l.files -> 0 ->> 'sha256' as sha256,
            l.sheet as source_sheet,
            l.headers,
            l.totals,
            l.rows_read,
            l.rows_loaded,
            l.rows_rejected,
            l.reject_rate,
            (
                select jsonb_object_agg(c.column_name, c.cells order by c.column_name)
                from (
                    select r.column_name, count(*) as cells
                    from wdh.rejected_rows r
                    where r.load_id = l.load_id
                    group by r.column_name
                ) c
            ) as rejected_by_column,
            case when l.status = 'succeeded' then (
                select min(n.finished_at)
                from wdh.load_log n
                where n.domain = l.domain and n.period = l.period
                  and n.status = 'succeeded' and n.mode = 'delete_insert'
                  and n.finished_at > l.finished_at
            ) end as replaced_at,
            l.started_at,
            l.finished_at
        from wdh.load_log l
        """
    )
    for column, comment in COMMENTS.items():
        target = "view audit.loads" if not column else f"column audit.loads.{column}"
        quoted = comment.replace("'", "''")
        op.execute(f"comment on {target} is '{quoted}'")
    op.execute(
        """
        do $$ begin
            if exists (select 1 from pg_roles where rolname = 'wdh_reader') then
                grant usage on schema audit to wdh_reader;
                grant select on audit.loads to wdh_reader;
            end if;
            if exists (select 1 from pg_roles where rolname = 'wdh_loader') then
                revoke delete on all tables in schema wdh from wdh_loader;
                revoke update on wdh.rejected_rows from wdh_loader;
                alter default privileges in schema wdh revoke delete on tables from wdh_loader;
            end if;
        end $$
        """
    )


def downgrade() -> None:
    _rename_summary_column("outflow_incl_benefits", "outflow")
    op.execute(
        """
        do $$ begin
            if exists (select 1 from pg_roles where rolname = 'wdh_loader') then
                grant delete on all tables in schema wdh to wdh_loader;
                grant update on wdh.rejected_rows to wdh_loader;
                alter default privileges in schema wdh grant delete on tables to wdh_loader;
            end if;
        end $$
        """
    )
    op.execute("drop view if exists audit.loads")
    op.execute("drop schema if exists audit")
    op.execute("alter table wdh.load_log drop column if exists headers")
    op.execute("alter table wdh.load_log drop column if exists totals")
