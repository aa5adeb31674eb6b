"""award aftercare: agreements, reserve list, monthly use notices, reports, outcomes, requests

Awards gain a state (offered -> active ... ; awards decided before this are active), how
they were made (a round, a re-offer, a fast-tier decision) and their period; runs gain a
purpose. Plain ADD COLUMNs and new tables only, so that SQLite keeps every trigger.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 07:45:13.441799
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "use_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_use_checks")),
        sa.UniqueConstraint("month", name=op.f("uq_use_checks_month")),
    )
    op.create_table(
        "reserve_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("award_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_reserve_entries_application_id_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_reserve_entries_call_id_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reserve_entries")),
        sa.UniqueConstraint("application_id", name=op.f("uq_reserve_entries_application_id")),
    )
    with op.batch_alter_table("reserve_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reserve_entries_call_id"), ["call_id"], unique=False)

    op.create_table(
        "award_agreements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("award_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=30), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("countersignature", sa.Boolean(), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("respond_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_by", sa.Integer(), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("countersigned_by", sa.Integer(), nullable=True),
        sa.Column("countersigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_award_agreements_award_id_awards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_award_agreements")),
        sa.UniqueConstraint("award_id", name=op.f("uq_award_agreements_award_id")),
    )
    with op.batch_alter_table("award_agreements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_award_agreements_state"), ["state"], unique=False)

    op.create_table(
        "award_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("award_id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("identifier", sa.String(length=500), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_award_outcomes_award_id_awards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_award_outcomes")),
    )
    with op.batch_alter_table("award_outcomes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_award_outcomes_award_id"), ["award_id"], unique=False)

    op.create_table(
        "award_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("award_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("submitted_by", sa.Integer(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_award_reports_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_award_reports_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_award_reports")),
        sa.UniqueConstraint("award_id", "kind", "seq", name=op.f("uq_award_reports_award_id")),
    )
    with op.batch_alter_table("award_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_award_reports_award_id"), ["award_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_award_reports_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_award_reports_state"), ["state"], unique=False)

    op.create_table(
        "award_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("award_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("recommendation", sa.Text(), nullable=False),
        sa.Column("recommended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_award_requests_award_id_awards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_award_requests")),
    )
    with op.batch_alter_table("award_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_award_requests_award_id"), ["award_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_award_requests_state"), ["state"], unique=False)

    op.create_table(
        "use_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("award_id", sa.Integer(), nullable=False),
        sa.Column("allocation_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("appeal_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("appeal", sa.Text(), nullable=False),
        sa.Column("appealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_use_notices_award_id_awards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_use_notices")),
        sa.UniqueConstraint(
            "award_id", "allocation_id", "kind", "month", name=op.f("uq_use_notices_award_id")
        ),
    )
    with op.batch_alter_table("use_notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_use_notices_award_id"), ["award_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_use_notices_state"), ["state"], unique=False)

    with op.batch_alter_table("award_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=20), server_default="round", nullable=False)
        )

    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=20), server_default="active", nullable=False)
        )
        batch_op.add_column(
            sa.Column("source", sa.String(length=20), server_default="round", nullable=False)
        )
        batch_op.add_column(sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_awards_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_awards_state"))
        batch_op.drop_column("ends_at")
        batch_op.drop_column("starts_at")
        batch_op.drop_column("source")
        batch_op.drop_column("state")

    with op.batch_alter_table("award_runs", schema=None) as batch_op:
        batch_op.drop_column("purpose")

    with op.batch_alter_table("use_notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_use_notices_state"))
        batch_op.drop_index(batch_op.f("ix_use_notices_award_id"))

    op.drop_table("use_notices")
    with op.batch_alter_table("award_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_award_requests_state"))
        batch_op.drop_index(batch_op.f("ix_award_requests_award_id"))

    op.drop_table("award_requests")
    with op.batch_alter_table("award_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_award_reports_state"))
        batch_op.drop_index(batch_op.f("ix_award_reports_project_id"))
        batch_op.drop_index(batch_op.f("ix_award_reports_award_id"))

    op.drop_table("award_reports")
    with op.batch_alter_table("award_outcomes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_award_outcomes_award_id"))

    op.drop_table("award_outcomes")
    with op.batch_alter_table("award_agreements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_award_agreements_state"))

    op.drop_table("award_agreements")
    with op.batch_alter_table("reserve_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reserve_entries_call_id"))

    op.drop_table("reserve_entries")
    op.drop_table("use_checks")
