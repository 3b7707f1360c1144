"""stream tickets, and the index a project's event stream replays by

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 07:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stream_tickets",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ticket_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("ticket_hash"),
    )
    with op.batch_alter_table("stream_tickets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stream_tickets_api_key_id"), ["api_key_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stream_tickets_expires_at"), ["expires_at"], unique=False
        )
    with op.batch_alter_table("fine_tuning_job_events", schema=None) as batch_op:
        batch_op.create_index("ix_job_events_project_pk", ["project_id", "pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_job_events_project_pk")
    with op.batch_alter_table("stream_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stream_tickets_expires_at"))
        batch_op.drop_index(batch_op.f("ix_stream_tickets_api_key_id"))
    op.drop_table("stream_tickets")
