"""robust tier: orb payloads and the per-bank robust mode

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "robust_payloads",
        sa.Column("digest", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_robust_payloads"),
    )
    # always | on-miss | off; NULL means the default for the bank's kind
    op.add_column("banks", sa.Column("robust_mode", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("banks") as batch:
        batch.drop_column("robust_mode")
    op.drop_table("robust_payloads")
