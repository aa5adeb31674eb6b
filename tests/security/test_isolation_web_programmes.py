"""Isolation on the portal's programmes pages that take an id: another tenant, signed in with a
browser session, gets 404 or 403 and never the data."""

from __future__ import annotations

from datetime import UTC, datetime

from gpucenter.persistence import repositories as repo
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards
from gpucenter.web.apply_pages import application_of
from gpucenter.web.render import FormState
from tests.security.conftest import Env
from tests.security.web import csrf_of, web_session
from tests.web.test_programmes_pages import Site, good_form, seed_programme

# (method, path) of every portal route of this area with an id in its path; each is checked
# by a test in this file.
ROUTES: list[tuple[str, str]] = [
    ("GET", "/programmes/calls/{call_id}"),
    ("GET", "/programmes/calls/{call_id}/apply"),
    ("POST", "/programmes/calls/{call_id}/apply"),
    ("GET", "/applications/{app_id}"),
    ("POST", "/applications/{app_id}/submit"),
    ("POST", "/applications/{app_id}/withdraw"),
    ("GET", "/reviews/{app_id}"),
    ("POST", "/reviews/{app_id}"),
    ("POST", "/reviews/{app_id}/conflict"),
    ("GET", "/manage/calls/{call_id}"),
    ("POST", "/manage/calls/{call_id}/assign"),
    ("POST", "/manage/calls/{call_id}/runs"),
    ("GET", "/manage/runs/{run_id}"),
    ("POST", "/manage/runs/{run_id}/decide"),
]
# Calls are public to every signed-in user (applicants must find them), and anyone may
# apply in their own name: these answer 200/303/422, but show nothing of other applicants.
OPEN_TO_ALL = {
    "/programmes/calls/{call_id}",
    "/programmes/calls/{call_id}/apply",
}
SECRET = "Secret plan of Hanbit"


def test_another_tenant_gets_404_or_403_and_no_data_on_every_programme_page(env: Env) -> None:
    programme = seed_programme(env.ctx)
    now = datetime.now(tz=UTC)
    site = Site(env.ctx, programme, env.client.app)
    form = good_form(site, title=SECRET, plan=SECRET)
    with env.ctx.sessions.begin() as s:
        jiwoo = caller_for(s, repo.user_by_name(s, "jiwoo"))
        app = apps.create_application(
            s, jiwoo, programme.call_id, application_of(FormState.of(form)), now
        )
        apps.submit_application(s, jiwoo, app.id, now)
        pm = caller_for(s, repo.user_by_name(s, "pm"))
        apps.assign_reviews(s, pm, programme.call_id, now)
        run = awards.run_round(s, pm, programme.call_id, now)
        ids = {"call_id": programme.call_id, "app_id": app.id, "run_id": run.id}

    c = web_session(env.client, "eve", "a-long-password-1")  # another organisation, no role
    token = csrf_of(c.get("/programmes").text)
    for method, path in ROUTES:
        url = path.format(**ids)
        data = {"csrf": token, "comment": "x", "reason": "x", "score_impact": "5"}
        r = c.request(method, url, data=data if method == "POST" else None, follow_redirects=False)
        if path in OPEN_TO_ALL:
            assert r.status_code in (200, 303, 422), (method, path, r.status_code)
        else:
            assert r.status_code in (403, 404), (method, path, r.status_code)
        assert SECRET not in r.text, (method, path)
    # Listings show eve nothing of it either.
    for page in ("/applications", "/reviews", "/manage", f"/programmes/calls/{ids['call_id']}"):
        assert SECRET not in c.get(page).text, page
    # And nothing changed: the application is still submitted, the run not decided.
    with env.ctx.sessions.begin() as s:
        assert apps.visible_application(s, jiwoo, app.id).state == "submitted"
        assert not awards.get_run(s, pm, run.id).decided
