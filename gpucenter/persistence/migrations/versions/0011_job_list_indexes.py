"""job list indexes: a project's jobs by id, and by state and id

The job list pages newest first by id, usually within one project and often by state. With
(project_id, id) and (project_id, state, id) a page is an index range scan however many
jobs the project has; the single-column project index they supersede is dropped (a prefix of
the new one: keeping it would only slow every submission down).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 20:20:00
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_project_id_id", ["project_id", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_project_id_state_id", ["project_id", "state", "id"], unique=False
        )
        batch_op.drop_index("ix_jobs_project_id")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_project_id", ["project_id"], unique=False)
        batch_op.drop_index("ix_jobs_project_id_state_id")
        batch_op.drop_index("ix_jobs_project_id_id")
