"""Fair-share input from the database: decayed usage kept per charge, shares from allocations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpucenter.config import Settings
from gpucenter.core import decay
from gpucenter.services.fairshare import HALF_LIFE_S, add_decayed_usage, load_fair_share
from tests.factories import make_context, seed_centre

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_decayed_usage_equals_the_sum_of_decayed_charges(settings: Settings) -> None:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    project = next(iter(centre.alice.project_ids))
    charges = [(T0, 3600.0), (T0 + timedelta(days=3), 7200.0), (T0 + timedelta(days=1), 100.0)]
    with ctx.sessions.begin() as s:
        for at, seconds in charges:
            add_decayed_usage(s, project, centre.alice.user_id, seconds, at)
    now = T0 + timedelta(days=10)
    expected = sum(decay(sec, (now - at).total_seconds(), HALF_LIFE_S) for at, sec in charges)
    with ctx.sessions.begin() as s:
        share = load_fair_share(s, now)
    assert share.usage[project] == pytest.approx(expected, rel=1e-9)
    assert share.user_usage[(project, centre.alice.user_id)] == pytest.approx(expected, rel=1e-9)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_the_share_tree_follows_organisations_projects_and_members(settings: Settings) -> None:
    ctx = make_context(settings)
    centre = seed_centre(ctx, gpu_hours=50)
    with ctx.sessions.begin() as s:
        tree = load_fair_share(s, datetime.now(tz=UTC)).root
    (programme,) = tree.children
    orgs = {o.name: o for o in programme.children}
    assert set(orgs) == {"Alpha University", "Beta Startup"}
    (alpha,) = orgs["Alpha University"].children
    assert alpha.name == "alpha" and alpha.shares == pytest.approx(50)
    assert [u.user_id for u in alpha.children] == [centre.alice.user_id]
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
