"""upstream engine: job links, files sent or fetched, webhook deliveries, model records;
event source ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 08:49:07
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("webhook_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("received_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("provider", "webhook_id", name="uq_webhook_deliveries_id"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "model_records",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("file_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("prompts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["fine_tuning_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("provider", "model", name="uq_model_records_model"),
    )
    with op.batch_alter_table("model_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_records_job_id"), ["job_id"], unique=False)

    op.create_table(
        "upstream_files",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("file_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("upstream_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("provider", "file_id", name="uq_upstream_files_provider_file"),
        sa.UniqueConstraint("provider", "upstream_id", name="uq_upstream_files_provider_upstream"),
    )
    with op.batch_alter_table("upstream_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upstream_files_file_id"), ["file_id"], unique=False)

    op.create_table(
        "upstream_jobs",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("upstream_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("upstream_status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("next_sync_at", sa.Float(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("checkpoints_due", sa.Boolean(), nullable=False),
        sa.Column("retirement_warned", sa.Boolean(), nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["fine_tuning_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("job_id"),
        sa.UniqueConstraint("provider", "upstream_id", name="uq_upstream_jobs_provider_upstream"),
    )
    with op.batch_alter_table("upstream_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_upstream_jobs_next_sync_at"), ["next_sync_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_upstream_jobs_provider"), ["provider"], unique=False)

    with op.batch_alter_table("fine_tuning_job_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch_op.create_unique_constraint("uq_job_events_job_source", ["job_id", "source_id"])


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_job_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_job_events_job_source", type_="unique")
        batch_op.drop_column("source_id")

    with op.batch_alter_table("upstream_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upstream_jobs_provider"))
        batch_op.drop_index(batch_op.f("ix_upstream_jobs_next_sync_at"))

    op.drop_table("upstream_jobs")
    with op.batch_alter_table("upstream_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upstream_files_file_id"))

    op.drop_table("upstream_files")
    with op.batch_alter_table("model_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_records_job_id"))

    op.drop_table("model_records")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_received_at"))

    op.drop_table("webhook_deliveries")
