"""wdh.data_quality_metrics: one row per load with rows, reject rate, null rates, duration.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table wdh.data_quality_metrics (
            load_id uuid primary key references wdh.load_log (load_id) on delete cascade,
            domain text not null,
            period date not null,
            rows_read integer not null,
            rows_loaded integer not null,
            rows_rejected integer not null,
            reject_rate numeric(7,6) not null,
            null_rates jsonb not null default '{}'::jsonb,
            duration_s numeric(10,3) not null,
            stage_seconds jsonb not null default '{}'::jsonb,
            recorded_at timestamptz not null default now()
        )
        """
    )
    op.execute(
        "create index data_quality_metrics_domain_period "
        "on wdh.data_quality_metrics (domain, period)"
    )
    # the loader role (created in 0003) writes the audit tables; analysts (wdh_reader) have no
    # access to schema wdh, whose quarantine holds raw customer rows
    op.execute(
        """
        do $$ begin
            if exists (select 1 from pg_roles where rolname = 'wdh_loader') then
                grant select, insert, update, delete on wdh.data_quality_metrics to wdh_loader;
            end if;
        end $$
        """
    )


def downgrade() -> None:
    op.execute("drop table if exists wdh.data_quality_metrics")
