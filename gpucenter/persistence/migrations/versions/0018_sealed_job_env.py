"""jobs.env: values sealed at rest (issue 17), a data migration

Every job's env values are sealed under the server's environment key ring
(`<var>/secrets/env-keys.json`, made here if it is not there yet; see
`gpucenter.persistence.sealed_env`); names stay readable. The Idempotency-Key digest of a
job with an env (`request_hash`, a plain SHA-256 over the form, its secrets included) is
cleared: a weak secret could be found from it by guessing. A retry of such an old job with
its old key is answered with a Conflict instead of the job.

The ring is the one under `config.attributes["var_dir"]` (set by `db.migrate`), else the
configured state directory: the server that will open these rows must hold it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 12:30:00
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

from gpucenter.persistence.sealed_env import EnvKeys, is_sealed, open_env, seal_env

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("env", sa.JSON),
    sa.column("request_hash", sa.String),
)
_BATCH = 1000


def _keys() -> EnvKeys:
    var_dir = context.config.attributes.get("var_dir")
    if var_dir is None:
        from gpucenter.config import get_settings

        var_dir = get_settings().var_dir
    return EnvKeys.under(Path(var_dir))


def _rewrite(seal: bool) -> None:
    keys = _keys()
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(_jobs.c.id, _jobs.c.user_id, _jobs.c.env)
            .where(_jobs.c.id > last)
            .order_by(_jobs.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        for job_id, user_id, env in rows:
            if not env or is_sealed(env) == seal:
                continue
            if seal:
                values = {"env": seal_env(keys, user_id, env), "request_hash": None}
            else:
                values = {"env": open_env(keys, user_id, env)}
            conn.execute(sa.update(_jobs).where(_jobs.c.id == job_id).values(**values))


def upgrade() -> None:
    _rewrite(seal=True)


def downgrade() -> None:
    _rewrite(seal=False)
