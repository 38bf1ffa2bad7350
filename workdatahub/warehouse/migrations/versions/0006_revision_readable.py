"""The warehouse's roles may read which migration it is at (public.alembic_version): each
load checks it against the code's newest (workdatahub/warehouse/contract.py) and says
`run wdh db upgrade` instead of failing on a column an older warehouse lacks.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROLES = "wdh_loader, wdh_transformer, wdh_reader"


def upgrade() -> None:
    op.execute(f"grant select on public.alembic_version to {ROLES}")


def downgrade() -> None:
    op.execute(f"revoke select on public.alembic_version from {ROLES}")
