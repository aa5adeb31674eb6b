"""Token resolution under load (http/deps.py, services/identity/token_cache.py): an entry
late in its life is answered and resolved again in the background, never answered after its
time; a resolution that began before the cache was emptied does not put back what the
emptying removed; distinct tokens missing together resolve two at a time, not in a thread
each. On both databases."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from gpucenter.auth.credentials import token_digest
from gpucenter.config import Settings
from gpucenter.domain.errors import Unauthenticated
from gpucenter.http import deps
from gpucenter.persistence.tables import ApiTokenRow, UserRow
from gpucenter.services.identity import signin
from gpucenter.services.identity.token_cache import cache_for, clear_all
from gpucenter.services.identity.tokens import issue
from tests.factories import Centre, make_context, seed_centre


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[Any, Centre]]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    clear_all()
    yield ctx, centre
    clear_all()
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _counting(monkeypatch: pytest.MonkeyPatch, pause_s: float = 0.0) -> list[str]:
    """Count (and optionally slow) the database resolutions the request path makes."""
    seen: list[str] = []
    real = deps.resolve_token

    def counted(ctx: Any, token: str) -> Any:
        seen.append(token)
        time.sleep(pause_s)
        return real(ctx, token)

    monkeypatch.setattr(deps, "resolve_token", counted)
    return seen


def _age(ctx: Any, token: str, share_of_ttl: float) -> None:
    """Make the cached entry of `token` look `share_of_ttl` of its time-to-live old."""
    cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
    digest = token_digest(token)
    entry = cache._entries[digest]
    cache._entries[digest] = replace(entry, loaded_at=entry.loaded_at - share_of_ttl * cache.ttl_s)


async def _background_done() -> None:
    while deps._REFRESHING:
        await asyncio.gather(*deps._REFRESHING, return_exceptions=True)


def test_an_entry_late_in_its_life_is_answered_at_once_and_refreshed_behind(
    world: tuple[Any, Centre], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, centre = world
    seen = _counting(monkeypatch, pause_s=0.3)

    async def scenario() -> None:
        first = await deps.caller_for_token(ctx, centre.alice_token)
        assert seen == [centre.alice_token]  # a miss: resolved on the request's path
        young = await deps.caller_for_token(ctx, centre.alice_token)
        assert young == first and len(seen) == 1  # fresh: no resolution at all

        _age(ctx, centre.alice_token, deps.REFRESH_AFTER + 0.1)
        began = time.perf_counter()
        late = await deps.caller_for_token(ctx, centre.alice_token)
        waited = time.perf_counter() - began
        assert late == first
        assert waited < 0.2, f"the request waited {waited:.2f}s for the refresh"
        again = await deps.caller_for_token(ctx, centre.alice_token)  # refresh in flight
        assert again == first
        await _background_done()
        assert len(seen) == 2  # one refresh, however many requests saw the late entry
        cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
        found = cache.lookup(token_digest(centre.alice_token), ctx.now())
        assert found is not None and found[1] < 0.2  # the entry is young again

    asyncio.run(scenario())


def test_a_revocation_seen_by_the_refresh_drops_the_entry(
    world: tuple[Any, Centre], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoked by another server (a bare UPDATE, which empties no cache here): answered
    from the cache within its time-to-live, as before; the refresh finds the revocation
    and the next request is refused, before the entry's time would have run out."""
    ctx, centre = world
    seen = _counting(monkeypatch)

    async def scenario() -> None:
        await deps.caller_for_token(ctx, centre.bob_token)
        with ctx.engine.begin() as conn:
            bob = conn.scalar(select(UserRow.id).where(UserRow.username == "bob"))
            conn.execute(
                update(ApiTokenRow).where(ApiTokenRow.user_id == bob).values(revoked_at=func.now())
            )
        _age(ctx, centre.bob_token, deps.REFRESH_AFTER + 0.1)
        await deps.caller_for_token(ctx, centre.bob_token)  # still inside its ttl
        await _background_done()
        assert len(seen) == 2
        cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
        assert cache.lookup(token_digest(centre.bob_token), ctx.now()) is None
        with pytest.raises(Unauthenticated):
            await deps.caller_for_token(ctx, centre.bob_token)

    asyncio.run(scenario())


def test_an_entry_is_never_answered_after_its_time(
    world: tuple[Any, Centre], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, centre = world
    seen = _counting(monkeypatch)

    async def scenario() -> None:
        await deps.caller_for_token(ctx, centre.alice_token)
        _age(ctx, centre.alice_token, 1.01)
        await deps.caller_for_token(ctx, centre.alice_token)
        assert len(seen) == 2  # lapsed: resolved on the request's own path

    asyncio.run(scenario())


def test_a_resolution_overtaken_by_an_emptying_of_the_cache_is_not_kept(
    world: tuple[Any, Centre], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revocation through this process empties the cache; a resolution that read the
    token before it must not put the old answer back for the rest of a time-to-live."""
    ctx, centre = world
    real = signin._caller

    def emptied_meanwhile(*args: Any, **kwargs: Any) -> Any:
        caller = real(*args, **kwargs)
        clear_all()  # as a revocation committed by another request at this moment would
        return caller

    monkeypatch.setattr(signin, "_caller", emptied_meanwhile)
    signin.resolve_token(ctx, centre.alice_token)
    cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
    assert cache.get(token_digest(centre.alice_token), ctx.now()) is None
    monkeypatch.setattr(signin, "_caller", real)
    signin.resolve_token(ctx, centre.alice_token)
    assert cache.get(token_digest(centre.alice_token), ctx.now()) is not None


def test_distinct_tokens_missing_together_resolve_two_at_a_time(
    world: tuple[Any, Centre], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, _ = world
    with ctx.sessions.begin() as s:
        alice = s.scalar(select(UserRow.id).where(UserRow.username == "alice"))
        tokens = [issue(s, int(alice), datetime.now(tz=UTC))[1] for _ in range(6)]
    clear_all()
    running = 0
    most = 0
    lock = threading.Lock()
    real = deps.resolve_token

    def tracked(ctx: Any, token: str) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return real(ctx, token)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(deps, "resolve_token", tracked)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(deps.caller_for_token(ctx, t) for t in tokens))

    callers = asyncio.run(scenario())
    assert {c.username for c in callers} == {"alice"}
    assert len({c.token_id for c in callers}) == 6
    assert most == deps.RESOLVER_THREADS == 2
