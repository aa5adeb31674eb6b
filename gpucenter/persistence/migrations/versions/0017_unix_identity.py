"""users: the Unix account (uid, gid) gpucenter provisioned for each user

Set by the scheduler leader's account sync on a multi-tenant local site and carried in each
launch request as the owner's identity; empty where no account was made (single-user sites,
Slurm-only centres).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-20 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("unix_uid", sa.Integer(), nullable=True))
    op.add_column("users", sa.Column("unix_gid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("unix_gid")
        batch_op.drop_column("unix_uid")
