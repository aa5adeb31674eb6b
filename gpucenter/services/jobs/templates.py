"""Publishing and listing job templates (the admin publishes, members use them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller, require_admin
from gpucenter.domain.templates import JobTemplate, parse_template
from gpucenter.persistence.tables import JobTemplateRow
from gpucenter.services.context import AppContext


def publish(s: Session, body: Any, now: datetime, user_id: int | None) -> JobTemplate:
    """Validate and store a template, replacing one of the same name."""
    template = parse_template(body)
    row = s.scalar(select(JobTemplateRow).where(JobTemplateRow.name == template.name))
    if row is None:
        row = JobTemplateRow(
            name=template.name,
            title=template.title,
            body=body,
            published_by=user_id,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
    else:
        row.title = template.title
        row.body = body
        row.published_by = user_id
        row.updated_at = now
    s.flush()
    return template


def publish_as(ctx: AppContext, caller: Caller, body: Any) -> JobTemplate:
    require_admin(caller)
    with ctx.sessions.begin() as s:
        return publish(s, body, ctx.now(), caller.user_id)


def list_templates(ctx: AppContext) -> list[JobTemplate]:
    with ctx.sessions.begin() as s:
        rows = s.scalars(select(JobTemplateRow).order_by(JobTemplateRow.name)).all()
        return [parse_template(r.body) for r in rows]


__all__ = [
    "list_templates",
    "publish",
    "publish_as",
]
