"""raw.annuity_performance (规模明细) and raw.annuity_income (收入明细).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LINEAGE = """
    load_id uuid not null,
    source_file text not null,
    source_sheet text not null,
    source_row integer not null,
    loaded_at timestamptz not null default now()
"""

IDENTITY = """
    period date not null,
    business_type text,
    plan_type text,
    plan_code text not null,
    plan_name text,
    portfolio_type text,
    portfolio_code text,
    portfolio_name text,
    annuity_account_name text,
    customer_name text,
"""


def upgrade() -> None:
    op.execute(
        f"""
        create table raw.annuity_performance (
            {IDENTITY}
            group_customer_no text,
            annuity_account_no text,
            group_customer_name text,
            sub_enterprise_no text,
            sub_enterprise_name text,
            opening_assets numeric(18,4),
            closing_assets numeric(18,4),
            contributions numeric(18,4),
            outflow_incl_benefits numeric(18,4),
            outflow numeric(18,4),
            benefit_payments numeric(18,4),
            investment_income numeric(18,4),
            period_return numeric(10,6),
            branch_name text,
            branch_code text,
            {LINEAGE}
        )
        """
    )
    op.execute("create index annuity_performance_period on raw.annuity_performance (period)")
    op.execute(
        f"""
        create table raw.annuity_income (
            {IDENTITY}
            branch_name text,
            branch_code text,
            fixed_fee numeric(18,4) not null,
            variable_fee numeric(18,4) not null,
            rebate numeric(18,4) not null,
            tax numeric(18,4) not null,
            {LINEAGE}
        )
        """
    )
    op.execute("create index annuity_income_period on raw.annuity_income (period)")


def downgrade() -> None:
    op.execute("drop table if exists raw.annuity_income")
    op.execute("drop table if exists raw.annuity_performance")
