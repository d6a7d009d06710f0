"""video: per-frame signals of banked videos

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "video_signals",
        sa.Column("entry_id", _BIGID, autoincrement=False, nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"],
                                name=op.f("fk_video_signals_entry_id_entries"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_video_signals")),
    )
    op.create_table(
        "video_bank_settings",
        sa.Column("bank_id", _BIGID, autoincrement=False, nullable=False),
        sa.Column("min_seconds", sa.Float(), nullable=False),
        sa.Column("min_share", sa.Float(), nullable=True),
        sa.Column("frame_threshold", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["bank_id"], ["banks.id"],
                                name=op.f("fk_video_bank_settings_bank_id_banks"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("bank_id", name=op.f("pk_video_bank_settings")),
    )
    op.create_table(
        "video_segments",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("match_id", _BIGID, nullable=False),
        sa.Column("query_start", sa.Float(), nullable=False),
        sa.Column("query_end", sa.Float(), nullable=False),
        sa.Column("ref_start", sa.Float(), nullable=False),
        sa.Column("ref_end", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["match_id"], ["matches.id"],
                                name=op.f("fk_video_segments_match_id_matches"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_segments")),
    )
    with op.batch_alter_table("video_segments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_video_segments_match_id"), ["match_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("video_segments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_video_segments_match_id"))
    op.drop_table("video_segments")
    op.drop_table("video_bank_settings")
    op.drop_table("video_signals")
