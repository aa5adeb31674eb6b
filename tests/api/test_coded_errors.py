"""Refusals of a job submission carry a message code, so a Korean reader gets Korean.

Why: the portal and the CLI render a problem's `code`/`params` in the reader's language
(`gpucenter.locale.render`, what `cli.common.say` calls); a refusal raised as a plain
English string reaches a Korean CLI user in English (issue 22, item 5). The table sends a
bad request for each refusal of the submission path and checks the answer renders in
Korean; the scan checks that no refusal in those modules is raised without a code, so a
new one cannot slip back to English."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gpucenter import locale
from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.messages import ENGLISH, Message
from tests.factories import Centre, make_context, seed_centre

PATH = "/api/v1/jobs"
HANGUL = re.compile("[\uac00-\ud7a3]")
GOOD: dict[str, Any] = {"project": "alpha", "command": "true", "gpus_per_node": 1}

# (label, body or body change, extra headers, the code of the problem inside error.field)
CASES: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    ("not a member", {"project": "beta"}, {}, "error.unknown_project"),
    ("no project", {"project": None}, {}, "error.project_missing"),
    ("empty command", {"command": " "}, {}, "error.command_empty"),
    ("too many GPUs", {"gpus_per_node": 999}, {}, "error.too_many_gpus"),
    ("too many nodes", {"nodes": 999}, {}, "error.too_many_nodes"),
    ("unknown GPU type", {"gpu_type": "z9"}, {}, "error.unknown_gpu_type"),
    ("time limit", {"time_limit_s": 10**8}, {}, "error.time_limit_long"),
    ("relative workdir", {"workdir": "rel/dir"}, {}, "error.workdir_relative"),
    ("missing workdir", {"workdir": "/nonexistent/dir"}, {}, "error.workdir_missing"),
    ("unknown QoS", {"qos": "turbo"}, {}, "error.unknown_qos"),
    ("bad env name", {"env": {"A=B": "x"}}, {}, "error.env_name"),
    ("script and command", {"script": "#!/bin/sh\ntrue\n"}, {}, "error.script_and_command"),
    (
        "bad directive",
        {"command": None, "script": "#!/bin/sh\n#GPUCENTER --wings 2\ntrue\n"},
        {},
        "error.directive_unknown",
    ),
    ("bad array", {"array": "9-1"}, {}, "error.array_range"),
    ("missing dependency", {"after_ok": [987654]}, {}, "error.dependency_missing"),
    ("unknown template", {"command": None, "template": "nope"}, {}, "error.unknown_template"),
    ("fields without template", {"fields": {"a": "b"}}, {}, "error.fields_need_template"),
    ("long key", {}, {"Idempotency-Key": "k" * 201}, "error.key_length"),
]


@pytest.fixture
def env(settings: Settings) -> Iterator[tuple[Centre, TestClient]]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with TestClient(create_app(ctx, run_scheduler=False)) as client:
        yield centre, client
    ctx.engine.dispose()


@pytest.mark.parametrize(("label", "change", "headers", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_refusal_reads_in_korean(
    env: tuple[Centre, TestClient],
    label: str,
    change: dict[str, Any],
    headers: dict[str, str],
    code: str,
) -> None:
    centre, client = env
    body = {k: v for k, v in (GOOD | change).items() if v is not None}
    auth = {"Authorization": f"Bearer {centre.alice_token}"} | headers
    resp = client.post(PATH, json=body, headers=auth)
    assert 400 <= resp.status_code < 500, resp.text
    problem = resp.json()
    message = Message.from_json(problem)
    assert message is not None, f"{label}: no message code in {problem}"
    assert message.code == "error.field"
    inner = message.values["problem"]
    assert isinstance(inner, Message) and inner.code == code, problem
    english = locale.render(message, "en")
    korean = locale.render(message, "ko")
    assert english == problem["detail"]  # the English detail is the same text
    assert HANGUL.search(korean), korean
    assert locale.gettext("ko", ENGLISH[code]) != ENGLISH[code]  # translated, not echoed


# Every refusal anywhere in the package carries a message code (issue 22, item 5).
# A refusal no person can cause through the API, the portal, the CLI or the settings (a
# caller's programming error) may stay in English: its `raise` line, or the line above it,
# says so with a comment starting `# English on purpose:` and why.
ON_PURPOSE = "# English on purpose:"
ERRORS = {"ValidationError", "Conflict", "PermissionDenied", "Unauthenticated", "TooManyRequests"}


def _uncoded_raises(path: Path) -> list[str]:
    """`raise X(...)` of a domain error called directly (not `.about`/`.of`)."""
    found = []
    source = path.read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            said = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
            first = node.exc.args[0] if node.exc.args else None
            given_code = (
                isinstance(first, ast.Call)
                and isinstance(first.func, ast.Name)
                and first.func.id == "msg"
            )  # TooManyRequests(msg(...), ...): its message is a code
            if (
                isinstance(func, ast.Name)
                and func.id in ERRORS
                and not given_code
                and ON_PURPOSE not in said
            ):
                found.append(f"{path}:{node.lineno}")
    return found


def test_no_refusal_is_raised_without_a_code() -> None:
    root = Path(__file__).resolve().parents[2]
    uncoded = [
        line.removeprefix(f"{root}/")
        for path in sorted((root / "gpucenter").rglob("*.py"))
        for line in _uncoded_raises(path)
    ]
    assert uncoded == []


def test_the_scan_finds_an_uncoded_raise(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'def f():\n    raise ValidationError("x", "in English only")\n'
        "def g():\n    # English on purpose: a caller's bug\n    raise Conflict('x')\n"
    )
    assert _uncoded_raises(sample) == [f"{sample}:2"]
