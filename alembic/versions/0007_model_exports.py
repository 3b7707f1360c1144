"""model exports

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 06:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_exports",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("format", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("filename", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Integer(), nullable=True),
        sa.Column("finished_at", sa.Integer(), nullable=True),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_id", "model", "format", name="uq_model_exports_model"),
    )
    with op.batch_alter_table("model_exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_exports_id"), ["id"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_model_exports_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index("ix_model_exports_status", ["status"], unique=False)

    op.create_table(
        "model_export_events",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("export_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=True),
        sa.ForeignKeyConstraint(["export_id"], ["model_exports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("model_export_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_export_events_export_id"), ["export_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_model_export_events_id"), ["id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("model_export_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_export_events_id"))
        batch_op.drop_index(batch_op.f("ix_model_export_events_export_id"))

    op.drop_table("model_export_events")
    with op.batch_alter_table("model_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_model_exports_status")
        batch_op.drop_index(batch_op.f("ix_model_exports_project_id"))
        batch_op.drop_index(batch_op.f("ix_model_exports_id"))

    op.drop_table("model_exports")
