"""Schemas raw and wdh; load log, quarantine; raw.trustee_performance.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LINEAGE = """
    load_id uuid not null,
    source_file text not null,
    source_sheet text not null,
    source_row integer not null,
    loaded_at timestamptz not null default now()
"""


def upgrade() -> None:
    op.execute("create schema if not exists raw")
    op.execute("create schema if not exists wdh")
    op.execute(
        """
        create table wdh.load_log (
            load_id uuid primary key,
            domain text not null,
            period date not null,
            target_table text not null,
            mode text not null check (mode in ('delete_insert', 'append', 'upsert')),
            status text not null
                check (status in ('running', 'succeeded', 'failed', 'refused', 'abandoned')),
            files jsonb not null default '[]'::jsonb,
            sheet text,
            rows_read integer,
            rows_loaded integer,
            rows_rejected integer,
            rows_deleted integer,
            reject_rate numeric(7,6),
            message text,
            started_at timestamptz not null default clock_timestamp(),
            finished_at timestamptz
        )
        """
    )
    op.execute(
        "create index load_log_domain_period on wdh.load_log (domain, period, started_at desc)"
    )
    op.execute(
        """
        create table wdh.rejected_rows (
            id bigserial primary key,
            load_id uuid not null references wdh.load_log (load_id) on delete cascade,
            domain text not null,
            period date not null,
            source_file text not null,
            source_sheet text not null,
            source_row integer not null,
            column_name text not null,
            value text,
            reason text not null,
            raw_row jsonb not null,
            recorded_at timestamptz not null default now()
        )
        """
    )
    op.execute("create index rejected_rows_domain_period on wdh.rejected_rows (domain, period)")
    op.execute("create index rejected_rows_load on wdh.rejected_rows (load_id)")
    op.execute(
        f"""
        create table raw.trustee_performance (
            report_date date not null,
            plan_code text not null,
            company_code text not null,
            return_rate numeric(10,6),
            net_value numeric(18,4),
            fund_scale numeric(18,4),
            {LINEAGE},
            constraint trustee_performance_key unique (report_date, plan_code, company_code)
        )
        """
    )


def downgrade() -> None:
    op.execute("drop table if exists raw.trustee_performance")
    op.execute("drop table if exists wdh.rejected_rows")
    op.execute("drop table if exists wdh.load_log")
