"""message codes: a job's reason and a notification as a code with parameters

`jobs.reason_message` holds the wait reason (or end reason) that `reason_detail` says in
English, as {"code", "params"}, so that the portal and the CLI can say it in the reader's
language and time zone; `notifications.message` does the same for a notification's subject
and body (e-mail goes out in Korean and English). Both nullable: rows written before, or by
code that writes only the English detail, are shown in English as before.

Plain ADD COLUMNs (no batch table copy).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("reason_message", sa.JSON(), nullable=True))
    op.add_column("notifications", sa.Column("message", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("message")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("reason_message")
