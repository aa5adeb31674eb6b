"""The job model across the REST API: scripts with directives, templates, arrays,
dependencies, QoS and images, pagination, server-sent events and usage."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.tables import JobRow
from gpucenter.services.jobs import templates
from gpucenter.services.ops.demo import builtin_templates
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import make_context, seed_centre, wait_until


@pytest.fixture
def setup(settings: Settings):
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with ctx.sessions.begin() as s:
        for body in builtin_templates():
            templates.publish(s, body, ctx.now(), None)
    app = create_app(ctx, run_scheduler=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {centre.alice_token}"
        yield ctx, centre, client
    ctx.engine.dispose()


def _submit(client: TestClient, **body: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/jobs", json={"project": "alpha"} | body)
    assert resp.status_code == 201, resp.text
    result: dict[str, Any] = resp.json()
    return result


def _job(client: TestClient, job_id: int) -> dict[str, Any]:
    result: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
    return result


def _run_until_ended(ctx, client: TestClient, job_ids: list[int]) -> None:
    ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}

    def done() -> bool:
        run_pass(ctx)
        return all(_job(client, j)["state"] in ended for j in job_ids)

    wait_until(done, timeout=30, step=0.1)


def _count(ctx) -> int:
    with ctx.sessions.begin() as s:
        return int(s.scalar(select(func.count()).select_from(JobRow)) or 0)


def test_a_script_with_directives_sets_the_job_and_flags_override_them(setup) -> None:
    ctx, _, client = setup
    script = "#!/bin/bash\n#GPUCENTER -g 3 --time 20m --name trainer\n#GPUCENTER -e A=1\necho $A\n"
    job = _submit(client, script=script)
    assert (job["gpus_per_node"], job["time_limit_s"], job["name"]) == (3, 1200, "trainer")
    overridden = _submit(client, script=script, gpus_per_node=1)
    assert overridden["gpus_per_node"] == 1
    _run_until_ended(ctx, client, [job["id"]])
    assert client.get(f"/api/v1/jobs/{job['id']}/logs").text == "1\n"


def test_a_template_becomes_a_job(setup) -> None:
    _, _, client = setup
    job = _submit(
        client,
        template="batch-inference",
        fields={"command": "python infer.py --shard 3", "gpus": 2, "hours": 2},
    )
    assert job["template"] == "batch-inference"
    assert job["gpus_per_node"] == 2 and job["time_limit_s"] == 7200
    assert job["command"] == "bash -c 'python infer.py --shard 3'"
    listed = client.get("/api/v1/templates").json()
    assert {t["name"] for t in listed} == {"pytorch-ddp", "batch-inference", "jupyter"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": "no-such-template"}, "template"),
        ({"template": "jupyter", "fields": {"gpus": 99}}, "fields.gpus"),
        ({"template": "jupyter", "fields": {"colour": "red"}}, "fields.colour"),
        ({"command": "x", "fields": {"a": 1}}, "fields"),
        ({"script": "#GPUCENTER --frobnicate\nrun\n"}, "script"),
        ({"script": "#GPUCENTER --gpus lots\nrun\n"}, "script"),
        ({"script": "echo", "command": "echo"}, "script"),
        ({"command": "x", "after_ok": [987654]}, "after_ok"),
        ({"command": "x", "array": "9-1"}, "array"),
        ({"command": "x", "qos": "platinum"}, "qos"),
        ({"command": "x", "image": "nvcr.io/nvidia/pytorch:24.05-py3"}, "image"),
        ({"command": "x", "time": "soon"}, "time"),
    ],
)
def test_bad_submissions_name_the_field_and_submit_nothing(setup, body, field) -> None:
    ctx, _, client = setup
    resp = client.post("/api/v1/jobs", json={"project": "alpha"} | body)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in resp.json()["errors"]] == [field]
    assert _count(ctx) == 0


def test_an_array_job_makes_one_task_per_index(setup) -> None:
    ctx, _, client = setup
    job = _submit(client, command="echo task=$GPUCENTER_ARRAY_TASK_ID", array="0-2")
    tasks = job["array_task_ids"]
    assert len(tasks) == 3 and tasks[0] == job["id"]
    _run_until_ended(ctx, client, tasks)
    outputs = sorted(client.get(f"/api/v1/jobs/{t}/logs").text for t in tasks)
    assert outputs == ["task=0\n", "task=1\n", "task=2\n"]
    page = client.get("/api/v1/jobs", params={"array_job_id": job["id"]}).json()
    assert sorted(j["array_index"] for j in page["items"]) == [0, 1, 2]


def test_after_ok_waits_for_the_dependency_and_is_cancelled_if_it_fails(setup) -> None:
    ctx, _, client = setup
    first = _submit(client, command="sleep 1")
    second = _submit(client, command="echo second", after_ok=[first["id"]])
    run_pass(ctx)
    waiting = _job(client, second["id"])
    assert waiting["state"] == "PENDING" and waiting["reason"] == "Dependency"
    assert str(first["id"]) in waiting["reason_detail"]
    _run_until_ended(ctx, client, [first["id"], second["id"]])
    assert _job(client, second["id"])["state"] == "COMPLETED"

    failing = _submit(client, command="exit 3")
    doomed = _submit(client, command="echo never", after_ok=[failing["id"]])
    _run_until_ended(ctx, client, [failing["id"], doomed["id"]])
    after = _job(client, doomed["id"])
    assert after["state"] == "CANCELLED" and "FAILED" in after["reason_detail"]
    assert after["started_at"] is None


def test_pagination_is_stable_while_jobs_are_submitted(setup) -> None:
    _, _, client = setup
    before = [_submit(client, command=f"echo {i}")["id"] for i in range(7)]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/jobs", params=params).json()
        seen.extend(j["id"] for j in page["items"])
        _submit(client, command="echo concurrent")  # a new job arrives between pages
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(before, reverse=True)
    bad = client.get("/api/v1/jobs", params={"cursor": "garbage!"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_events_stream_state_and_log_until_the_job_ends(setup) -> None:
    ctx, _, client = setup
    job = _submit(client, command="echo one; sleep 0.5; echo two")
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            run_pass(ctx)
            stop.wait(0.1)

    # Passes begin once the stream has said the job is pending (before that, a loaded
    # machine could start the job before the stream opens, and the test would race it).
    driver = threading.Thread(target=drive, daemon=True)
    try:
        events: list[tuple[str, dict[str, Any]]] = []
        with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as resp:
            name = ""
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line.split(":", 1)[1])))
                    if name == "state" and driver.ident is None:
                        driver.start()
    finally:
        stop.set()
        if driver.ident is not None:
            driver.join()
    states = [e["state"] for n, e in events if n == "state"]
    assert states[0] == "PENDING" and states[-1] == "COMPLETED" and "RUNNING" in states
    assert "".join(e["text"] for n, e in events if n == "log") == "one\ntwo\n"
    assert events[-1][0] == "end"


def test_usage_and_burn_rate_reflect_the_charge(setup) -> None:
    ctx, _, client = setup
    job = _submit(client, command="sleep 1", gpus_per_node=2)
    _run_until_ended(ctx, client, [job["id"]])
    rows = client.get("/api/v1/usage").json()
    assert len(rows) == 1
    assert rows[0]["project"] == "alpha" and rows[0]["username"] == "alice"
    assert rows[0]["jobs"] == 1 and rows[0]["gpu_hours"] > 0
    alloc = client.get("/api/v1/projects").json()[0]["allocations"][0]
    assert alloc["burn_rate_gpu_hours_per_day"] == pytest.approx(
        alloc["used_gpu_hours"] / 7, rel=1e-6
    )
    assert alloc["projected_exhaustion"] is None  # 100 GPU-hours last far beyond the year


def test_only_admins_publish_templates(setup) -> None:
    _, centre, client = setup
    body = {"name": "hello", "title": "Hello", "job": {"command": "echo hello"}}
    assert client.put("/api/v1/templates", json=body).status_code == 403
    admin = {"Authorization": f"Bearer {centre.admin_token}"}
    assert client.put("/api/v1/templates", json=body, headers=admin).status_code == 200
    bad = client.put("/api/v1/templates", json={"name": "x"}, headers=admin)
    assert bad.status_code == 422
