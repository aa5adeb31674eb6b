"""projects.share_outputs: a project's jobs' outputs readable by its group (issue 17)

Off for every project: outputs stay their owner's alone until the PI turns it on.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "projects",
        sa.Column("share_outputs", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("share_outputs")
