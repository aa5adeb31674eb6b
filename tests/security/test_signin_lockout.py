"""Sign-in limits that an attacker cannot turn against the owner (issue 17 item 7).

Each test runs on SQLite and PostgreSQL. Requests come from chosen client addresses (one
TestClient per address over the same app); a manual clock moves the locks' time on.
"""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter import locale
from gpucenter.auth import totp
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.messages import Message
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.persistence.tables_security import SignInLimitRow
from gpucenter.services.identity import ratelimit
from gpucenter.services.identity.ratelimit import SignInGuard
from tests.security.conftest import Env, auth
from tests.security.web import csrf_of

ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"
ROOT = {"username": "root", "password": "root-password"}
WRONG = {"username": "root", "password": "not-the-password"}


def at(env: Env, address: str, cookies: dict[str, str] | None = None) -> TestClient:
    """A client of the same server whose requests come from `address`."""
    return TestClient(
        env.client.app, base_url="https://testserver", client=(address, 50000), cookies=cookies
    )


def guard(env: Env) -> SignInGuard:
    found: SignInGuard = env.client.app.state.guard  # type: ignore[attr-defined]
    return found


def manual_clock(env: Env) -> ManualClock:
    clock = ManualClock(time.time())
    env.ctx.clock = clock
    return clock


def sign_in(client: TestClient, body: dict[str, str]) -> int:
    return client.post("/api/v1/auth/token", json=body).status_code


def fail_five(client: TestClient) -> list[int]:
    return [sign_in(client, WRONG) for _ in range(5)]


def test_five_failures_lock_the_attackers_address_not_the_owner(env: Env) -> None:
    attacker, owner = at(env, ATTACKER), at(env, OWNER)
    assert fail_five(attacker) == [401] * 5
    locked = attacker.post("/api/v1/auth/token", json=ROOT)  # even the right password
    assert locked.status_code == 429 and 290 <= int(locked.headers["Retry-After"]) <= 300
    assert "this address" in locked.json()["detail"]
    # Said as a message code too, so a Korean CLI user reads it in Korean.
    said = Message.from_json(locked.json())
    assert said is not None and said.code == "error.rate_pair"
    assert "로그인" in locale.render(said, "ko")
    # The owner, elsewhere, signs in as if nothing happened.
    assert sign_in(owner, ROOT) == 200
    with env.ctx.sessions.begin() as s:
        failed = s.scalars(
            select(AuditEntryRow.details).where(AuditEntryRow.action == "auth.sign_in_failed")
        ).all()
    assert [d["locked"] for d in failed] == [False] * 4 + [True]
    assert {d["address"] for d in failed} == {ATTACKER}


def test_repeated_locks_grow_up_to_the_cap(env: Env) -> None:
    clock = manual_clock(env)
    attacker = at(env, ATTACKER)
    guard(env).lockout_max_s = 1000
    waits = []
    for _ in range(4):
        assert fail_five(attacker) == [401] * 5
        refused = attacker.post("/api/v1/auth/token", json=WRONG)
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
        clock.advance(waits[-1] + 1)
    assert waits == [300, 600, 1000, 1000]
    # The owner's right password from their own address was never in question.
    assert sign_in(at(env, OWNER), ROOT) == 200


def test_a_success_clears_the_pair_and_a_quiet_day_forgets_it(env: Env) -> None:
    clock = manual_clock(env)
    owner = at(env, OWNER)
    for _ in range(4):
        assert sign_in(owner, WRONG) == 401
    assert sign_in(owner, ROOT) == 200  # typos, then the right one: the count starts afresh
    assert [sign_in(owner, WRONG) for _ in range(4)] == [401] * 4
    assert sign_in(owner, ROOT) == 200
    # Old rows go: a day later the next request prunes what nobody touched.
    attacker = at(env, ATTACKER)
    assert fail_five(attacker) == [401] * 5
    clock.advance(2 * 86400)
    assert sign_in(attacker, WRONG) == 401  # not locked, and its old state pruned
    with env.ctx.sessions.begin() as s:
        stale = s.scalar(
            select(func.count())
            .select_from(SignInLimitRow)
            .where(SignInLimitRow.updated_at < clock.now() - 86400)
        )
    assert stale == 0


def _throttle(env: Env, username: str = "root") -> None:
    """Distributed guessing: one failure each from many addresses throttles the username."""
    guard(env).user_max_failures = 6
    guess = {"username": username, "password": "guess-from-far-away"}
    codes = [sign_in(at(env, f"192.0.2.{i + 1}"), guess) for i in range(7)]
    # 401 until the failures (these and any before) reach 6; after that 429, throttled.
    assert codes[0] == 401 and codes[-1] == 429 and codes == sorted(codes)
    with env.ctx.sessions.begin() as s:
        row = s.get(SignInLimitRow, ("user", username, ""))
        assert row is not None and row.locked_until > env.ctx.clock.now()


def test_the_username_throttle_stops_unknown_devices_only(env: Env) -> None:
    assert sign_in(at(env, OWNER), ROOT) == 200  # the owner's address becomes known
    _throttle(env)
    unknown = at(env, "192.0.2.200").post("/api/v1/auth/token", json=ROOT)
    assert unknown.status_code == 429 and int(unknown.headers["Retry-After"]) > 0
    assert "second-factor" in unknown.json()["detail"]
    # Nothing is learnt from the answer: a wrong password gets the same refusal.
    assert sign_in(at(env, "192.0.2.201"), WRONG) == 429
    assert sign_in(at(env, OWNER), ROOT) == 200  # a known address passes
    assert sign_in(at(env, OWNER), WRONG) == 401  # and is told the truth


def test_a_second_factor_passes_the_throttle_and_the_attackers_lock(env: Env) -> None:
    c, root = env.client, env.centre.admin_token
    clock = manual_clock(env)
    secret = c.post("/api/v1/auth/totp", headers=auth(root)).json()["secret"]
    code = totp.code_at(secret, clock.now())
    assert (
        c.post("/api/v1/auth/totp/enable", json={"code": code}, headers=auth(root)).status_code
        == 204
    )
    # Five wrong passwords from one address; the owner at another gets in with the code.
    assert fail_five(at(env, ATTACKER)) == [401] * 5
    clock.advance(30)
    assert sign_in(at(env, OWNER), ROOT | {"code": totp.code_at(secret, clock.now())}) == 200
    # Throttled from many addresses: an address never used before, with password and code.
    _throttle(env)
    clock.advance(30)
    new_place = at(env, "192.0.2.250")
    assert sign_in(new_place, ROOT) == 429  # the right password alone is not enough
    assert sign_in(new_place, ROOT | {"code": totp.code_at(secret, clock.now())}) == 200


def test_a_known_browser_passes_the_throttle_and_the_address_rate(env: Env) -> None:
    env.ctx.settings.signin_known_addresses = False  # only the browser's cookie counts here
    browser = at(env, OWNER)
    form = {"username": "root", "password": "root-password"}
    page = browser.get("/login")
    signed = browser.post(
        "/login", data=form | {"csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert signed.status_code == 303
    device = signed.cookies.get("gpc_device")
    assert device and len(device) >= 40
    set_cookie = [v for k, v in signed.headers.multi_items() if k == "set-cookie"]
    assert any(v.startswith("gpc_device=") and "HttpOnly" in v for v in set_cookie)
    _throttle(env)

    def portal_sign_in(address: str, cookie: str | None) -> int:
        client = at(env, address, {"gpc_device": cookie} if cookie else None)
        token = csrf_of(client.get("/login").text)
        answer = client.post("/login", data=form | {"csrf": token}, follow_redirects=False)
        return answer.status_code

    # The browser travelled: another address, the same browser, still gets in.
    assert portal_sign_in("192.0.2.77", device) == 303
    # Without it, or with a value it never was given, the throttle holds.
    assert portal_sign_in("192.0.2.78", None) == 429
    assert portal_sign_in("192.0.2.79", "x" * 43) == 429
    # The known browser is not held up by the rate of its (shared, busy) address either.
    guard(env).rate_per_minute = 1
    busy = at(env, "192.0.2.77")
    assert sign_in(busy, WRONG) == 429  # the throttle
    slow_down = busy.post("/api/v1/auth/token", json=WRONG)
    assert slow_down.status_code == 429 and "slow down" in slow_down.json()["detail"]
    assert portal_sign_in("192.0.2.77", device) == 303


def test_the_limits_are_shared_by_every_server_process(env: Env) -> None:
    """Two apps over one database, as two worker processes are: their counts add up."""
    from gpucenter.app import create_app
    from tests.factories import make_context

    other_ctx = make_context(env.ctx.settings)
    other = TestClient(
        create_app(other_ctx, run_scheduler=False),
        base_url="https://testserver",
        client=(ATTACKER, 50000),
    )
    try:
        mine = at(env, ATTACKER)
        codes = [sign_in(c, WRONG) for c in (mine, other, mine, other, mine)]
        assert codes == [401] * 5
        assert sign_in(other, ROOT) == 429 and sign_in(mine, ROOT) == 429
    finally:
        other_ctx.dispatcher.shutdown()
        other_ctx.engine.dispose()


def test_unlock_clears_a_users_limits(env: Env) -> None:
    attacker = at(env, ATTACKER)
    assert fail_five(attacker) == [401] * 5
    assert sign_in(attacker, ROOT) == 429
    with env.ctx.sessions.begin() as s:
        assert ratelimit.unlock(s, "root") == 2  # the pair and the username's count
    assert sign_in(attacker, ROOT) == 200
