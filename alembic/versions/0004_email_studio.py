"""email studio: settings, datasets, history, feedback, retrainings, evaluations; model
aliases; files with personal data; project budgets and job costs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:01:59
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
        "model_alias_changes",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("alias", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("previous_model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("evaluation_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("model_alias_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_model_alias_changes_alias", ["project_id", "alias", "pk"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_model_alias_changes_id"), ["id"], unique=True)

    op.create_table(
        "model_aliases",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("alias", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_id", "alias", name="uq_model_aliases_alias"),
    )
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_aliases_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "alias_completions",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("messages", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("answer", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("alias_completions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alias_completions_id"), ["id"], unique=True)

    op.create_table(
        "studio_emails",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("email_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("department", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("context", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("body", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_id", "email_id", name="uq_studio_emails_id"),
    )
    op.create_table(
        "studio_evaluations",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("request", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("results", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("studio_evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studio_evaluations_id"), ["id"], unique=True)
        batch_op.create_index(
            "ix_studio_evaluations_project_pk", ["project_id", "pk"], unique=False
        )

    op.create_table(
        "studio_feedback",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("email_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("completion_id", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("improvements", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("retraining_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("studio_feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studio_feedback_id"), ["id"], unique=True)
        batch_op.create_index(
            "ix_studio_feedback_scope", ["project_id", "scope", "retraining_id"], unique=False
        )

    op.create_table(
        "studio_retrainings",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("base_model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("dataset_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("evaluation_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("n_feedback", sa.Integer(), nullable=False),
        sa.Column("n_pairs", sa.Integer(), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_id", "scope", "generation", name="uq_retrainings_generation"),
    )
    with op.batch_alter_table("studio_retrainings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studio_retrainings_id"), ["id"], unique=True)
        batch_op.create_index("ix_studio_retrainings_status", ["status"], unique=False)

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
        sa.Column("feedback_thresholds", sa.JSON(none_as_null=True), nullable=False),
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

    with op.batch_alter_table("files", schema=None) as batch_op:
        # Files so far were uploaded or made by the service: none holds unredacted personal data.
        batch_op.add_column(
            sa.Column("personal_data", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimate", sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("budget_usd")

    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.drop_column("cost_usd")
        batch_op.drop_column("estimate")

    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("personal_data")

    with op.batch_alter_table("email_datasets", schema=None) as batch_op:
        batch_op.drop_index("ix_email_datasets_project_pk")
        batch_op.drop_index(batch_op.f("ix_email_datasets_id"))

    op.drop_table("email_datasets")
    op.drop_table("studio_settings")
    with op.batch_alter_table("studio_retrainings", schema=None) as batch_op:
        batch_op.drop_index("ix_studio_retrainings_status")
        batch_op.drop_index(batch_op.f("ix_studio_retrainings_id"))

    op.drop_table("studio_retrainings")
    with op.batch_alter_table("studio_feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_studio_feedback_scope")
        batch_op.drop_index(batch_op.f("ix_studio_feedback_id"))

    op.drop_table("studio_feedback")
    with op.batch_alter_table("studio_evaluations", schema=None) as batch_op:
        batch_op.drop_index("ix_studio_evaluations_project_pk")
        batch_op.drop_index(batch_op.f("ix_studio_evaluations_id"))

    op.drop_table("studio_evaluations")
    op.drop_table("studio_emails")
    with op.batch_alter_table("alias_completions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alias_completions_id"))

    op.drop_table("alias_completions")
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_aliases_project_id"))

    op.drop_table("model_aliases")
    with op.batch_alter_table("model_alias_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_alias_changes_id"))
        batch_op.drop_index("ix_model_alias_changes_alias")

    op.drop_table("model_alias_changes")
