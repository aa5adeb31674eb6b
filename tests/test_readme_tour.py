"""The README's tour, run as written: each command of its `<!-- tour: ... -->` blocks, one by
one, against a live server, from another directory, with the server on a port that is not
8000, and each command's output checked.

The server is set up the way `make run` does it (`db upgrade`, `demo load`, `serve`, with
only GPUCENTER_PORT set, in a "checkout" directory of its own); the tour then runs in a
different directory with no GPUCENTER_* variable at all: the CLI must find its server and
token in its per-user configuration file. The only changes made to the README's text are the
port in its `curl` line and, run as root (the server is then multi-tenant and a job works
only in its owner's gpucenter home or project space), the scripts block's `cd "$(mktemp -d)"`,
which goes to a directory in the demo user's home instead, as the README says. A command
added to the tour without a check here fails the test,
so the README and this test cannot drift apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.factories import wait_until
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"<!-- tour: (\w+) -->\n```(sh|python)\n(.*?)```", re.S)


def tour() -> dict[str, str]:
    return {name: text for name, _, text in BLOCK.findall((ROOT / "README.md").read_text())}


def commands(text: str) -> list[str]:
    """The block's commands: one a line, a here-document with its body as one command."""
    found: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        heredoc = re.search(r"<<'?(\w+)'?", line)
        if heredoc:
            body = [line]
            while i < len(lines):
                body.append(lines[i])
                i += 1
                if lines[i - 1].strip() == heredoc.group(1):
                    break
            found.append("\n".join(body))
        else:
            found.append(line)
    return found


@dataclass
class Step:
    command: str
    rc: int
    out: str
    err: str


def run_steps(cmds: list[str], env: dict[str, str], cwd: Path, timeout: float) -> list[Step]:
    """Run `cmds` in ONE bash (variables and `cd` carry over, as in a terminal), with
    markers between them so that each command's exit status and output are its own."""
    script = []
    for n, cmd in enumerate(cmds):
        script.append(f"printf '\\n@@STEP {n}@@\\n'; printf '\\n@@STEP {n}@@\\n' >&2")
        script.append(cmd)
        script.append(f"printf '\\n@@RC {n} %s@@\\n' \"$?\"")
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    outs = re.split(r"\n@@STEP \d+@@\n", done.stdout)[1:]
    errs = re.split(r"\n@@STEP \d+@@\n", done.stderr)[1:]
    steps = []
    for n, cmd in enumerate(cmds):
        out = outs[n] if n < len(outs) else ""
        found = re.search(rf"\n@@RC {n} (\d+)@@\n", out)
        rc = int(found.group(1)) if found else -1
        out = out[: found.start()] if found else out
        steps.append(Step(cmd, rc, out, errs[n] if n < len(errs) else ""))
    return steps


@dataclass
class Centre:
    port: int
    env: dict[str, str]  # the user's environment: HOME and XDG only, no GPUCENTER_*
    elsewhere: Path


@pytest.fixture
def centre(tmp_path: Path) -> Iterator[Centre]:
    """`make run` in a checkout directory of its own, on a port that is not 8000."""
    port = free_port()
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    user_env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCENTER_")}
    user_env |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_CONFIG_HOME": str(tmp_path / "home-config"),
        "COLUMNS": "200",
        "LANG": "C.UTF-8",
        "TZ": "Asia/Seoul",
    }
    user_env.pop("LC_ALL", None)
    user_env.pop("LC_MESSAGES", None)
    server_env = user_env | {"GPUCENTER_PORT": str(port), "GPUCENTER_SCHEDULER_INTERVAL_S": "0.3"}
    for step in (["db", "upgrade"], ["demo", "load"]):
        done = subprocess.run(
            [str(BIN / "gpucenter"), *step],
            env=server_env,
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # As root the server is multi-tenant and makes the demo user's account and project group:
    # the ones it makes here go with the test.
    cleanup = [n for n in ("gpc-demo", "gpcp-demo") if os.geteuid() == 0 and not _exists(n)]
    log = open(checkout / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [str(BIN / "gpucenter"), "serve"], env=server_env, cwd=checkout, stdout=log, stderr=log
    )
    log.close()

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert server.poll() is None, (checkout / "server.log").read_text()[-3000:]
            return False

    try:
        wait_until(up, timeout=180, step=0.3)
        banner = (checkout / "server.log").read_text()
        assert f"serving on http://127.0.0.1:{port}/" in banner, banner
        assert "note: the CLI" not in banner, banner  # demo load pointed the CLI here
        elsewhere = _tenant_home(checkout) if os.geteuid() == 0 else None
        if elsewhere is None:
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
        yield Centre(port, user_env, elsewhere)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        for name in cleanup:
            tool = "userdel" if name.startswith("gpc-") else "groupdel"
            subprocess.run([tool, name], capture_output=True, check=False)


def _exists(name: str) -> bool:
    """A user or group of that name on this machine."""
    import grp
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        pass
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _tenant_home(checkout: Path, user: str = "demo") -> Path:
    """Run as root, the server is multi-tenant: a job runs as its owner's own account and may
    work only in that account's home or its project's space. The tour then runs where such a
    centre's user works, a directory in their home (made as the dispatcher makes homes),
    once the leader has provisioned the account."""
    import pwd

    from gpucenter.dispatch.isolation.identity import RunAs
    from gpucenter.dispatch.local.starting import ensure_home

    account = f"gpc-{user}"

    def provisioned() -> bool:
        try:
            pwd.getpwnam(account)
        except KeyError:
            return False
        return True

    wait_until(provisioned, timeout=120, step=0.3)
    entry = pwd.getpwnam(account)
    home = checkout.resolve() / "var" / "tenants" / "homes" / account
    ensure_home(RunAs(account, entry.pw_uid, entry.pw_gid, (), home))
    tour = home / "tour"
    tour.mkdir()
    os.chown(tour, entry.pw_uid, entry.pw_gid)
    return tour


def _id(text: str) -> str:
    found = re.search(r"submitted job (\d+)", text)
    assert found, text
    return found.group(1)


Check = Callable[[Step], None]


def _ok(*needles: str) -> Check:
    def check(step: Step) -> None:
        assert step.rc == 0, f"{step.command}\n{step.out}\n{step.err}"
        for needle in needles:
            assert re.search(needle, step.out), f"{step.command}: {needle!r} not in\n{step.out}"

    return check


def _silent(step: Step) -> None:
    assert step.rc == 0 and step.err.strip() == "", f"{step.command}\n{step.err}"


JOBS: dict[str, Check] = {
    "first=$(gpucenter job submit -p demo -g 2": _silent,
    "second=$(gpucenter job submit -p demo -g 3": _silent,
    "gpucenter job show $second": _ok(
        r"PENDING",
        r"waiting\s+Not enough free vgpu GPUs for this job right now\.",
        r"queue\s+1 of 1 waiting jobs for vgpu GPUs",
        r"start\s+expected to start by \d+ \w+ \d{4}, \d\d:\d\d KST",
        r"sooner\s+with 2 GPU\(s\) per node it could start now",
        r"submitted_at\s+\d+ \w+ \d{4}, \d\d:\d\d KST",
    ),
    "gpucenter job cancel $second": _ok(r"CANCELLED cancelled by demo before it started"),
    "gpucenter job logs $first --follow": _ok(r"my GPUs: \d,\d"),
    "gpucenter job list --limit 3": _ok(r"COMPLETED", r"CANCELLED"),
    "gpucenter alloc show": _ok(r"demo", r"\d{4}, \d\d:\d\d KST"),
    "curl -s http://127.0.0.1:8000/healthz": _ok(r'"status"'),
}


def _failed_logs(step: Step) -> None:
    assert step.rc == 0, step.err
    assert "starting" in step.out
    assert "ended FAILED (exit code 3)" in step.err and "oops" in step.err, step.err


def _missing_script(step: Step) -> None:
    assert step.rc == 2, (step.rc, step.out, step.err)
    assert "no such file: ./no-such-script.sh" in step.err, step.err
    assert "submitted" not in step.out


SCRIPTS: dict[str, Check] = {
    'cd "$(mktemp -d)"': _silent,
    "cat > train.sh": _silent,
    "gpucenter job submit train.sh": _ok(r"submitted job \d+"),
    "echo 'print(\"inferred\")' > infer.py": _silent,
    "gpucenter job templates": _ok(r"batch-inference", r"Batch inference", r"pytorch-ddp"),
    "infer=$(gpucenter job submit -p demo --template batch-inference": _silent,
    "gpucenter job submit -p demo --array 0-3": _ok(r"submitted array job \d+: tasks"),
    "gpucenter job submit -p demo --after-ok $infer": _ok(r"submitted job \d+"),
    "gpucenter job logs $infer --follow": _ok(r"^inferred$"),
    "failed=$(gpucenter job submit -p demo --time 5m --parsable": _silent,
    "gpucenter job logs $failed --follow": _failed_logs,
    "gpucenter job submit ./no-such-script.sh -p demo": _missing_script,
    "gpucenter usage": _ok(r"demo"),
}


def _checks_for(cmds: list[str], table: dict[str, Check]) -> list[Check]:
    """Each command's check; a command the table does not know fails the test."""
    out = []
    for cmd in cmds:
        matches = [check for start, check in table.items() if cmd.startswith(start)]
        assert len(matches) == 1, f"the README's tour has a command this test does not check: {cmd}"
        out.append(matches[0])
    assert len(out) == len(table), "a check here has no command in the README's tour"
    return out


def test_the_readme_tour_runs_as_written(centre: Centre) -> None:
    blocks = tour()
    assert set(blocks) == {"jobs", "scripts", "sdk"}
    port = f":{centre.port}"

    jobs = commands(blocks["jobs"])
    checks = _checks_for(jobs, JOBS)
    jobs = [c.replace(":8000", port) for c in jobs]
    steps = run_steps(jobs, centre.env, centre.elsewhere, timeout=300)
    for step, check in zip(steps, checks, strict=True):
        check(step)

    scripts = commands(blocks["scripts"])
    if os.geteuid() == 0:  # multi-tenant: the user works in their gpucenter home, not /tmp
        assert scripts[0] == 'cd "$(mktemp -d)"', scripts[0]
    checks = _checks_for(scripts, SCRIPTS)
    if os.geteuid() == 0:
        scripts[0] = f'cd "{centre.elsewhere}"'
    steps = run_steps(scripts, centre.env, centre.elsewhere, timeout=300)
    for step, check in zip(steps, checks, strict=True):
        check(step)

    # The SDK example with this server's address and the demo user's token.
    config = (Path(centre.env["XDG_CONFIG_HOME"]) / "gpucenter" / "config.toml").read_text()
    token = re.search(r'token = "(gpc_[^"]+)"', config)
    assert token, config
    code = blocks["sdk"].replace("http://127.0.0.1:8000", f"http://127.0.0.1{port}")
    code = code.replace("gpc_...", token.group(1))
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=centre.env,
        cwd=centre.elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"job \d+ FAILED, exit code 4", done.stdout), done.stdout
    assert "hello" in done.stdout
    _config_is_private_and_korean_works(centre)


def test_the_tour_parser_keeps_here_documents_whole() -> None:
    found = commands("a=1\ncat > x <<'EOF'\nline\nEOF\necho $a\n")
    assert found == ["a=1", "cat > x <<'EOF'\nline\nEOF", "echo $a"]


def _config_is_private_and_korean_works(centre: Centre) -> None:
    path = Path(centre.env["XDG_CONFIG_HOME"]) / "gpucenter" / "config.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    text = path.read_text()
    assert f'url = "http://127.0.0.1:{centre.port}"' in text
    # A Korean reader gets the centre's messages in Korean, times in their own zone.
    env = centre.env | {"LANG": "ko_KR.UTF-8", "TZ": "Europe/London"}
    done = subprocess.run(
        [str(BIN / "gpucenter"), "job", "cancel", "999999"],
        env=env,
        cwd=centre.elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "오류:" in done.stderr and "찾을 수 없습니다" in done.stderr, done.stderr


HANGUL = re.compile(r"[\uac00-\ud7a3]")
MESSAGE_CODE = re.compile(r"\b(?:wait|job|pending|error|health|budget|award|shape)\.[a-z_]+\b")


def english_sentences() -> list[str]:
    """English that must not reach a Korean reader: every phrase of three words or more of
    the service messages, the templates' texts, and the CLI's own words of two or more."""
    from gpucenter.domain.messages import ENGLISH
    from gpucenter.locale.cli_texts import CLI_TEXTS
    from gpucenter.locale.sources import template_texts

    found: set[str] = set()
    for text in [*ENGLISH.values(), *template_texts()]:
        for part in re.split(r"%\(\w+\)s", text):
            part = part.strip(" .,;:()'\"")
            if len(part.split()) >= 3:
                found.add(part)
    found.update(t for t in CLI_TEXTS if len(t.split()) >= 2)
    return sorted(found, key=len, reverse=True)


def test_the_tour_in_korean_has_no_english_sentence(centre: Centre) -> None:
    """The tour's commands with LANG=ko_KR.UTF-8: every label and table header is Korean, and
    no English sentence of the catalogues or message code shows (the job's own command and
    names, the user's words, are left as they are)."""
    env = centre.env | {"LANG": "ko_KR.UTF-8", "TZ": "Asia/Seoul"}
    cmds = [
        "first=$(gpucenter job submit -p demo -g 2 --time 10m --parsable -- 'sleep 20')",
        "second=$(gpucenter job submit -p demo -g 3 --time 10m --parsable -- 'true')",
        "sleep 2",
        "gpucenter job show $second",
        "gpucenter job list --limit 3",
        "gpucenter job templates",
        "gpucenter alloc show",
        "gpucenter usage",
        "gpucenter job cancel $second",
        "gpucenter job cancel $first",
        "gpucenter job show 999999",
        "gpucenter job submit ./no-such-script.sh -p demo",
        "GPUCENTER_API_URL=http://127.0.0.1:9 gpucenter job list",
    ]
    steps = run_steps(cmds, env, centre.elsewhere, timeout=120)
    sentences = english_sentences()
    assert "not enough free now" in sentences and "Reason / detail" in sentences
    problems: list[str] = []
    for step in steps[3:]:
        text = step.out + step.err
        assert text.strip(), step.command
        problems += [f"{step.command}: {s!r}" for s in sentences if s in text]
        problems += [f"{step.command}: code {c}" for c in MESSAGE_CODE.findall(text)]
        for line in text.splitlines():
            if "┃" in line:  # a table's header: every cell in Korean
                cells = [c.strip() for c in line.strip("┃ ").split("┃") if c.strip()]
                problems += [f"{step.command}: header {c!r}" for c in cells if not HANGUL.search(c)]
        if step.command.startswith("gpucenter job show $"):  # every field's label in Korean
            for line in step.out.splitlines():
                label = "" if line[:1] in "┏┃┡│└" else line[:14].strip()
                if label and not HANGUL.search(label):
                    problems.append(f"job show: label {label!r}")
        if step.err:
            assert step.err.startswith("오류:"), step.err
    assert not problems, "\n".join(problems)
