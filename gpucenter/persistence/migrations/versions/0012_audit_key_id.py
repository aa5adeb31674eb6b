"""audit log: the id of the key each entry's HMAC was made with

Entries written before this have no key id: they are plain SHA-256 links, accepted by
`audit verify` only up to the prefix the server's key ring sealed when it was created.
A plain ADD COLUMN (not a batch table copy), so that SQLite keeps the append-only triggers.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("key_id")
