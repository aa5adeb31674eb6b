"""leader epoch and lease, periodic runs, usage cursors and flags, site health, reserved time

`scheduler_leader` holds one row: the epoch each new scheduler leader takes (every write the
scheduler makes checks it in the same transaction) and the leader's lease. `periodic_runs`
remembers when the leader's periodic tasks last ran; `usage_cursors` how far each usage
source has been read; `usage_flags` usage at a site that is reported, not charged;
`site_health` what the leader last saw of each site. `jobs.reserved_s` is the time a run
reserved at its site (whole minutes and grace on Slurm).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leader = op.create_table(
        "scheduler_leader",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_leader")),
    )
    op.bulk_insert(leader, [{"id": 1, "epoch": 0, "holder": ""}])
    op.create_table(
        "periodic_runs",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ok_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_periodic_runs")),
    )
    op.create_table(
        "usage_cursors",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("position", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_usage_cursors")),
    )
    op.create_table(
        "usage_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("gpu_type", sa.String(length=40), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_usage_flags_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_flags")),
        sa.UniqueConstraint("source", name=op.f("uq_usage_flags_source")),
    )
    op.create_table(
        "site_health",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_site_health_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_site_health")),
    )
    op.add_column("jobs", sa.Column("reserved_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("reserved_s")
    op.drop_table("site_health")
    op.drop_table("usage_flags")
    op.drop_table("usage_cursors")
    op.drop_table("periodic_runs")
    op.drop_table("scheduler_leader")
