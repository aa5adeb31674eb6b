"""The README's operator walkthrough (issue 22 item 9), replayed as written against the real
Slurm daemons (scripts/slurm/setup.sh): Unix group and user, directories, the settings file,
migrations, the site read from sinfo, tenants, the account sync, the server; then the user
signs in and runs a first job, which must run on the Slurm node as its owner.

Each command of the `<!-- walkthrough: ... -->` blocks runs one by one in one bash (as in a
terminal) and its output is checked; a command without a check, or a check without a command,
fails the test, so the README and this test cannot drift apart. What the test changes, and
why: the paths under /srv (a directory of its own under /tmp), the Slurm top account and the
project's name (Slurm account names are global to the cluster: a unique suffix keeps runs
apart), and the port (a free one). The user's commands run as root with a configuration
directory of their own (the interpreter of this checkout is not readable by other users
here); the job itself runs as `minji` through Slurm, which is what the test checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gpucenter.dispatch.slurm.accounts import SiteState, apply_sync, plan_sync, read_actual
from gpucenter.dispatch.slurm.cli import SlurmCli
from tests.factories import wait_until
from tests.live import free_port
from tests.test_readme_tour import Step, commands, run_steps

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"<!-- walkthrough: (\w+) -->\n```sh\n(.*?)```", re.S)

pytestmark = pytest.mark.slurm


def walkthrough() -> dict[str, str]:
    return {name: text for name, text in BLOCK.findall((ROOT / "README.md").read_text())}


@dataclass
class Run:
    suffix: str
    port: int
    base: Path
    top: str
    project: str
    operator_env: dict[str, str]
    user_env: dict[str, str]

    def adapt(self, command: str) -> str:
        return (
            command.replace("/srv/gpucenter-jobs", str(self.base / "jobs"))
            .replace("/srv/gpucenter", str(self.base / "state"))
            .replace(
                "GPUCENTER_SLURM_TOP_ACCOUNT=gpucenter", f"GPUCENTER_SLURM_TOP_ACCOUNT={self.top}"
            )
            .replace("account=gpucenter_", f"account={self.top}_")
            .replace("llm-ko", self.project)
            .replace(":8000", f":{self.port}")
            .replace("GPUCENTER_PORT=8000", f"GPUCENTER_PORT={self.port}")
        )


@pytest.fixture
def run(slurm_cluster: str, tmp_path: Path) -> Iterator[Run]:
    suffix = uuid.uuid4().hex[:8]
    base = Path(f"/tmp/gpucenter-walkthrough-{suffix}")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUCENTER_")}
    clean |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "COLUMNS": "200",
    }
    for name in ("LC_ALL", "LC_MESSAGES"):
        clean.pop(name, None)
    found = Run(
        suffix,
        free_port(),
        base,
        f"gcw_{suffix}",
        f"llm-{suffix}",
        clean | {"HOME": str(tmp_path / "root"), "XDG_CONFIG_HOME": str(tmp_path / "root-cfg")},
        clean | {"HOME": str(tmp_path / "minji"), "XDG_CONFIG_HOME": str(tmp_path / "minji-cfg")},
    )
    try:
        yield found
    finally:
        pid = base / "server.pid"
        if pid.exists() and pid.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
        subprocess.run(["scancel", "-A", found.project], capture_output=True, check=False)
        cli = SlurmCli()
        apply_sync(
            cli,
            plan_sync(
                SiteState(), read_actual(cli, slurm_cluster, found.top), slurm_cluster, found.top
            ),
        )
        subprocess.run(
            ["sacctmgr", "-i", "delete", "account", f"name={found.top}"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


Check = Callable[[Step], None]


def _ok(*needles: str) -> Check:
    def check(step: Step) -> None:
        assert step.rc == 0, f"{step.command}\n{step.out}\n{step.err}"
        for needle in needles:
            assert re.search(needle, step.out, re.M), (
                f"{step.command}: {needle!r} not in\n{step.out}\n--- stderr:\n{step.err}"
            )

    return check


def _silent(step: Step) -> None:
    assert step.rc == 0 and step.err.strip() == "", f"{step.command}\n{step.err}"


def _checks(cmds: list[str], table: dict[str, Check]) -> list[Check]:
    out = []
    for cmd in cmds:
        matches = [check for start, check in table.items() if cmd.startswith(start)]
        assert len(matches) == 1, f"the README's walkthrough has a command without a check: {cmd}"
        out.append(matches[0])
    assert len(out) == len(table), "a check here has no command in the README's walkthrough"
    return out


def operator_checks(run: Run) -> dict[str, Check]:
    return {
        "sinfo -N -h": _ok(r"gpu:\w+:\d+"),
        "groupadd -f gpcusers": _silent,
        "id minji": _silent,
        "install -d -m 0700": _silent,
        "install -d -m 0711": _silent,
        "cat > ": _silent,
        ". ": _silent,
        "gpucenter db upgrade": _ok(),
        "gpucenter slurm site": _ok(r"gpus: \d+", r"gpu_type: \w+"),
        'gpucenter admin org create "KAIST"': _ok(r"KAIST"),
        "gpucenter admin user create minji": _ok(r"'minji' created", r"API token"),
        "gpucenter admin project create llm-ko": _ok(run.project),
        "gpucenter admin alloc create llm-ko": _ok(r"500"),
        "gpucenter slurm sync  ": _ok(r"sacctmgr", rf"{run.project}", r"run with --apply"),
        "gpucenter slurm sync --apply": _ok(r"applied \d+ change"),
        "sacctmgr -n -P show assoc": _ok(rf"^{run.top}_{run.project}\|minji$"),
        "nohup gpucenter serve": _silent,
    }


def user_checks(run: Run) -> dict[str, Check]:
    return {
        "gpucenter login": _ok(rf"signed in to http://127.0.0.1:{run.port} as minji"),
        "job=$(gpucenter job submit": _silent,
        "gpucenter job logs $job --follow": _ok(r"^minji on GPUs \d"),
        "gpucenter job show $job": _ok(r"COMPLETED"),
    }


def test_the_operator_walkthrough_runs_as_written(run: Run) -> None:
    blocks = walkthrough()
    assert set(blocks) == {"operator", "user"}

    cmds = commands(blocks["operator"])
    checks = _checks(cmds, operator_checks(run))
    cmds = [run.adapt(c) for c in cmds]
    # One step more than the README: note the server's process id, to stop it afterwards.
    steps = run_steps(
        [*cmds, f"echo $! > {run.base}/server.pid"], run.operator_env, run.base.parent, 300
    )
    for step, check in zip(steps, checks, strict=False):
        check(step)
    assert (run.base / "state").stat().st_mode & 0o777 == 0o700
    assert (run.base / "jobs").stat().st_mode & 0o7777 == 0o711

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{run.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=120, step=0.3)
    except AssertionError:
        log = run.base / "state" / "server.log"
        raise AssertionError(log.read_text()[-3000:] if log.exists() else "no server log") from None

    cmds = commands(blocks["user"])
    checks = _checks(cmds, user_checks(run))
    steps = run_steps([run.adapt(c) for c in cmds], run.user_env, run.base.parent, 300)
    for step, check in zip(steps, checks, strict=True):
        check(step)
    # The job went through Slurm: its output file belongs to minji.
    outputs = [p for p in (run.base / "jobs").rglob("*") if p.is_file()]
    assert outputs and all(p.owner() == "minji" for p in outputs if p.suffix == ".out"), outputs
    # In minji's own directory, made by the server: hers, 0700.
    home = run.base / "jobs" / "minji"
    assert (home.owner(), home.stat().st_mode & 0o777) == ("minji", 0o700)
