"""Single sign-on against a real OpenID Connect provider started in the test, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import oidc
from tests.factories import make_context, seed_centre
from tests.security.oidc_provider import Provider, RunningProvider


@pytest.fixture
def provider() -> Iterator[Provider]:
    running = RunningProvider()
    yield running.provider
    running.stop()


@pytest.fixture
def sso(settings: Settings, provider: Provider) -> Iterator[tuple[AppContext, TestClient]]:
    configured = settings.model_copy(
        update={
            "oidc_issuer": provider.issuer,
            "oidc_client_id": provider.client_id,
            "oidc_client_secret": provider.client_secret,
        }
    )
    ctx = make_context(configured)
    seed_centre(ctx)
    with TestClient(create_app(ctx, run_scheduler=False), base_url="https://testserver") as c:
        yield ctx, c
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _round_trip(client: TestClient) -> httpx.Response:
    """What a browser does: to the provider, back with a code, to the overview."""
    start = client.get("/auth/sso", follow_redirects=False)
    assert start.status_code == 302, start.text
    to_provider = start.headers["location"]
    query = parse_qs(urlparse(to_provider).query)
    assert query["code_challenge_method"] == ["S256"] and "nonce" in query
    back = httpx.get(to_provider, follow_redirects=False)  # real HTTP to the provider
    assert back.status_code == 302
    return client.get(back.headers["location"], follow_redirects=False)


def test_a_linked_identity_signs_in_through_the_provider(sso, provider: Provider) -> None:
    ctx, client = sso
    with ctx.sessions.begin() as s:
        oidc.link(s, "alice", provider.issuer, provider.subject, ctx.now())
    done = _round_trip(client)
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    assert provider.token_requests == 1
    page = client.get("/")
    assert page.status_code == 200 and "alice" in page.text
    with ctx.sessions.begin() as s:
        last = s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.id.desc())).first()
        assert last is not None and last.action == "auth.sign_in"
        assert last.details["method"] == "oidc" and last.actor == "alice"


def test_an_unknown_identity_is_refused(sso, provider: Provider) -> None:
    _, client = sso
    done = _round_trip(client)
    assert done.status_code == 401 and "not registered" in done.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_token_signed_by_another_key_is_refused(sso, provider: Provider) -> None:
    ctx, client = sso
    with ctx.sessions.begin() as s:
        oidc.link(s, "alice", provider.issuer, provider.subject, ctx.now())
    from joserfc.jwk import RSAKey

    provider.forge_with = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    start = client.get("/auth/sso", follow_redirects=False)
    back = httpx.get(start.headers["location"], follow_redirects=False)
    done = client.get(back.headers["location"], follow_redirects=False)
    assert done.status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.fixture
def sso_one_db(tmp_path: Path, provider: Provider) -> Iterator[tuple[AppContext, TestClient]]:
    """The SSO set-up on SQLite only: the token checks do not touch the database's kind."""
    url = f"sqlite:///{tmp_path / 'sso.db'}"
    migrate(url)
    configured = Settings(
        var_dir=tmp_path / "var",
        database_url=url,
        oidc_issuer=provider.issuer,
        oidc_client_id=provider.client_id,
        oidc_client_secret=provider.client_secret,
    )
    ctx = make_context(configured)
    seed_centre(ctx)
    with ctx.sessions.begin() as s:
        oidc.link(s, "alice", provider.issuer, provider.subject, ctx.now())
    with TestClient(create_app(ctx, run_scheduler=False), base_url="https://testserver") as c:
        yield ctx, c
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _refused(client: TestClient, done: httpx.Response) -> None:
    assert done.status_code == 401, (done.status_code, done.text[:300])
    assert client.get("/", follow_redirects=False).status_code == 303  # not signed in


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"nonce": "not-the-one-sent"}, id="wrong-nonce"),
        pytest.param({"iss": "http://127.0.0.1:1/evil"}, id="wrong-issuer"),
        pytest.param({"aud": "another-client"}, id="wrong-audience"),
        pytest.param({"exp": 1_000_000_000, "iat": 999_999_000}, id="expired"),
    ],
)
def test_an_id_token_with_a_bad_claim_is_refused(
    sso_one_db, provider: Provider, claims: dict[str, object]
) -> None:
    _, client = sso_one_db
    provider.claims = dict(claims)
    _refused(client, _round_trip(client))
    # The same set-up with honest claims signs in: the refusal was the claim's doing.
    provider.claims = {}
    assert _round_trip(client).status_code == 303


def test_an_unsigned_id_token_is_refused(sso_one_db, provider: Provider) -> None:
    _, client = sso_one_db
    provider.unsigned = True
    _refused(client, _round_trip(client))


def test_a_callback_with_a_wrong_state_is_refused(sso_one_db, provider: Provider) -> None:
    _, client = sso_one_db
    start = client.get("/auth/sso", follow_redirects=False)
    back = httpx.get(start.headers["location"], follow_redirects=False)
    url = urlparse(back.headers["location"])
    query = parse_qs(url.query)
    forged = f"{url.path}?code={query['code'][0]}&state=forged-state"
    _refused(client, client.get(forged, follow_redirects=False))
    assert provider.token_requests == 0  # refused before the code was even exchanged
