"""The walking skeleton as a person uses it: the CLI against a live server process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import wait_until
from tests.live import server_env, serving


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "gpucenter.cli", *args],
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    env = server_env(db_url, tmp_path / "var")
    with serving(env) as base:
        yield Cli(env), base


def test_admin_sets_up_a_project_and_a_member_runs_a_job(live) -> None:
    cli, _ = live
    cli("admin", "org", "create", "KAIST", "--kind", "university")
    out = cli("admin", "user", "create", "minji", "--org", "KAIST").stdout
    token = re.search(r"(gpc_\S+)", out)
    assert token, out
    cli("admin", "project", "create", "llm-ko", "--org", "KAIST", "--member", "minji")
    cli("admin", "alloc", "create", "llm-ko", "--gpu-hours", "10")

    user = {"GPUCENTER_TOKEN": token.group(1)}
    submitted = cli(
        "job",
        "submit",
        "-p",
        "llm-ko",
        "-g",
        "2",
        "--json",
        "--",
        "echo gpus=$CUDA_VISIBLE_DEVICES; sleep 1; echo done",
        **user,
    )
    job_id = json.loads(submitted.stdout)["id"]
    followed = cli("job", "logs", str(job_id), "--follow", **user)
    lines = followed.stdout.splitlines()
    assert re.fullmatch(r"gpus=\d,\d", lines[0]), followed.stdout
    assert lines[-1] == "done"

    shown = json.loads(cli("job", "show", str(job_id), "--json", **user).stdout)
    assert shown["state"] == "COMPLETED"
    allocs = json.loads(cli("alloc", "show", "--json", **user).stdout)
    used = allocs[0]["allocations"][0]["used_gpu_hours"]
    assert used > 0 and used < 10

    listed = cli("job", "list", **user).stdout
    assert str(job_id) in listed and "COMPLETED" in listed


def test_cli_bad_input_is_a_clear_message_and_a_nonzero_exit(live) -> None:
    cli, _ = live
    cli("admin", "org", "create", "Acme", "--kind", "startup")
    token = re.search(r"(gpc_\S+)", cli("admin", "user", "create", "kim", "--org", "Acme").stdout)
    assert token
    cli("admin", "project", "create", "acme", "--org", "Acme", "--member", "kim")
    cli("admin", "alloc", "create", "acme", "--gpu-hours", "1")
    user = {"GPUCENTER_TOKEN": token.group(1)}

    result = cli("job", "submit", "-p", "acme", "-g", "0", "--", "echo", ok=False, **user)
    assert result.returncode == 2 and "gpus_per_node" in result.stderr
    result = cli("job", "submit", "-p", "acme", "-t", "tpu", "--", "echo", ok=False, **user)
    assert result.returncode == 2 and "gpu_type" in result.stderr
    result = cli("job", "submit", "-p", "ghost", "--", "echo", ok=False, **user)
    assert result.returncode == 2 and "project" in result.stderr
    result = cli("admin", "org", "create", "X", "--kind", "pirate", ok=False)
    assert result.returncode == 2 and "kind" in result.stderr
    result = cli("job", "list", ok=False, GPUCENTER_TOKEN="gpc_wrong")
    assert result.returncode != 0 and "token" in result.stderr
    assert "Traceback" not in result.stderr

    # The same refusals under a Korean locale: the server's message codes, said in Korean.
    korean = {"LANG": "ko_KR.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""} | user
    said = {
        ("-p", "ghost", "--", "echo"): "알 수 없는 프로젝트 'ghost'",
        ("-p", "acme", "-g", "99", "--", "echo"): "노드당 GPU 99개를 요청했지만",
        ("-p", "acme", "-t", "tpu", "--", "echo"): "알 수 없는 GPU 종류 'tpu'",
        ("-p", "acme", "-g", "0", "--", "echo"): "gpus_per_node: 1 이상이어야 합니다",
    }
    for args, words in said.items():
        result = cli("job", "submit", *args, ok=False, **korean)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert "requested" not in result.stderr and "unknown" not in result.stderr


def test_time_limit_and_cancel_from_the_cli(live) -> None:
    cli, _ = live
    cli("admin", "org", "create", "Inst", "--kind", "public_research_institute")
    token = re.search(r"(gpc_\S+)", cli("admin", "user", "create", "lee", "--org", "Inst").stdout)
    assert token
    cli("admin", "project", "create", "inst", "--org", "Inst", "--member", "lee")
    cli("admin", "alloc", "create", "inst", "--gpu-hours", "5")
    user = {"GPUCENTER_TOKEN": token.group(1)}
    slow = json.loads(
        cli("job", "submit", "-p", "inst", "--time", "1", "--json", "--", "sleep 30", **user).stdout
    )["id"]
    long = json.loads(
        cli("job", "submit", "-p", "inst", "--json", "--", "sleep 30", **user).stdout
    )["id"]

    def state(job_id: int) -> str:
        return json.loads(cli("job", "show", str(job_id), "--json", **user).stdout)["state"]

    wait_until(lambda: state(long) == "RUNNING", timeout=60, step=0.3)
    cli("job", "cancel", str(long), **user)
    wait_until(lambda: state(long) == "CANCELLED", timeout=60, step=0.3)
    wait_until(lambda: state(slow) == "TIMEOUT", timeout=60, step=0.3)


def test_member_logs_in_submits_a_script_follows_it_and_sees_the_charge(
    live, tmp_path: Path
) -> None:
    cli, _ = live
    cli("admin", "org", "create", "SNU", "--kind", "university")
    cli("admin", "user", "create", "jiwoo", "--org", "SNU", "--password", "correct-horse")
    cli("admin", "project", "create", "vision", "--org", "SNU", "--member", "jiwoo")
    cli("admin", "alloc", "create", "vision", "--gpu-hours", "20")
    denied = cli("login", "--username", "jiwoo", "--password", "wrong-horse", ok=False)
    assert denied.returncode != 0 and "wrong username or password" in denied.stderr
    cli("login", "--username", "jiwoo", "--password", "correct-horse")

    script = tmp_path / "train.sh"
    script.write_text(
        "#!/bin/bash\n#GPUCENTER -p vision -g 2 --time 5m --name train\n"
        "for i in 1 2 3; do echo step $i; sleep 0.3; done\n"
    )
    job = json.loads(cli("job", "submit", str(script), "--json").stdout)
    assert job["name"] == "train" and job["gpus_per_node"] == 2
    followed = cli("job", "logs", str(job["id"]), "--follow").stdout
    assert followed.splitlines() == ["step 1", "step 2", "step 3"]
    usage = json.loads(cli("usage", "--json").stdout)
    assert usage[0]["project"] == "vision" and usage[0]["gpu_hours"] > 0
    assert "vision" in cli("usage").stdout


def test_job_show_of_a_waiting_job_names_the_reason_and_priority_factors(live) -> None:
    cli, _ = live
    cli("admin", "org", "create", "Lab", "--kind", "public_research_institute")
    token = re.search(r"(gpc_\S+)", cli("admin", "user", "create", "park", "--org", "Lab").stdout)
    assert token
    cli("admin", "project", "create", "lab", "--org", "Lab", "--member", "park")
    cli("admin", "alloc", "create", "lab", "--gpu-hours", "5")
    user = {"GPUCENTER_TOKEN": token.group(1)}
    big = json.loads(
        cli("job", "submit", "-p", "lab", "-g", "4", "--json", "--", "sleep 30", **user).stdout
    )["id"]
    small = json.loads(
        cli("job", "submit", "-p", "lab", "-g", "1", "--json", "--", "echo hi", **user).stdout
    )["id"]

    def shown() -> dict[str, object]:
        result: dict[str, object] = json.loads(
            cli("job", "show", str(small), "--json", **user).stdout
        )
        return result

    wait_until(lambda: shown()["reason"] == "Resources", timeout=60, step=0.3)
    text = cli("job", "show", str(small), **user).stdout
    assert "Resources" in text
    for factor in ("priority", "fairshare", "age", "jobsize", "qos"):
        assert factor in text, text
    cli("job", "cancel", str(big), **user)
