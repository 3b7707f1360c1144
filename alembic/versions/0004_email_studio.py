"""email studio: settings, datasets; files with personal data; budgets and job costs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 11:37:26
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studio_settings",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("system_prompts", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("user_templates", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("redact", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_id"),
    )
    op.create_table(
        "email_datasets",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("training_file", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("validation_file", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("department", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        sa.Column("options", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("report", sa.JSON(none_as_null=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_file"], ["files.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["validation_file"], ["files.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("email_datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_email_datasets_id"), ["id"], unique=True)
        batch_op.create_index("ix_email_datasets_project_pk", ["project_id", "pk"], unique=False)

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))

    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimate", sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))

    with op.batch_alter_table("files", schema=None) as batch_op:
        # Files so far were uploaded or made by the service: none holds unredacted personal data.
        batch_op.add_column(
            sa.Column("personal_data", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.drop_column("cost_usd")
        batch_op.drop_column("estimate")

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("budget_usd")

    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("personal_data")

    with op.batch_alter_table("email_datasets", schema=None) as batch_op:
        batch_op.drop_index("ix_email_datasets_project_pk")
        batch_op.drop_index(batch_op.f("ix_email_datasets_id"))

    op.drop_table("email_datasets")
    op.drop_table("studio_settings")
