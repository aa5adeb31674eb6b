"""Break the isolation code on purpose and check that its tests notice (mutation check).

Each mutation replaces one exact piece of source (a flag, a check, a mount) with a weaker
one, runs the tests that should catch it, and restores the file. A mutation the tests do not
catch is reported as SURVIVED and the script exits 1. Run as root with bubblewrap, from the
repository root, with a clean checkout of gpucenter/dispatch/isolation/:

    .venv/bin/python scripts/sandbox/check_mutations.py [NAME ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = "gpucenter/dispatch/isolation/"
SAFE, SANDBOX, STATUS = PKG + "safe_files.py", PKG + "sandbox.py", PKG + "status.py"
ACCOUNTS, MODE = PKG + "unix_accounts.py", PKG + "mode.py"
T_SAFE = "tests/security/test_safe_files.py"
T_ATTACK = "tests/security/hostile_local/test_tenant_attacks.py"
T_LIFE = "tests/security/hostile_local/test_sandbox_lifecycle.py"
T_ROOT_ACCOUNTS = "tests/security/hostile_local/test_unix_accounts_root.py"
T_ACCOUNTS = "tests/dispatch/test_isolation_accounts.py"
T_MODE = "tests/dispatch/test_isolation_mode.py"
T_UNIT = "tests/dispatch/test_isolation_sandbox.py"
# The wiring: the local dispatcher, the services around it, and the real-path acceptance.
LOCAL = "gpucenter/dispatch/local/"
DISPATCHER, STARTING = LOCAL + "dispatcher.py", LOCAL + "starting.py"
WIRING, CYCLE = "gpucenter/services/sites/isolation.py", "gpucenter/services/scheduling/cycle.py"
MANAGE, READY = "gpucenter/services/jobs/manage.py", "gpucenter/services/ops/readiness.py"
T_HOSTILE = "tests/security/hostile_local/test_hostile_tenant.py"
T_WIRING = "tests/services/test_isolation_wiring.py"
T_LAUNCH = "tests/services/test_launch_failures.py"
T_ADOPT = "tests/dispatch/test_adopt.py"
T_READY = "tests/resilience/test_readiness.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("read: no O_NOFOLLOW", SAFE,
             "_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW |", "_READ_FLAGS = os.O_RDONLY |",
             (T_SAFE,)),
    Mutation("read: follow links everywhere", SAFE,
             "first = os.stat(path.name, dir_fd=parent, follow_symlinks=False)",
             "first = os.stat(path.name, dir_fd=parent, follow_symlinks=True); "
             "flags &= ~os.O_NOFOLLOW",
             (T_SAFE,)),
    Mutation("read: blocking open", SAFE,
             "os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY", "os.O_NOFOLLOW | os.O_NOCTTY",
             (T_SAFE,)),
    Mutation("read: no type check before open", SAFE,
             "        if not stat.S_ISREG(first.st_mode):\n"
             "            raise UnsafeFile(path, f\"is",
             "        if False:\n            raise UnsafeFile(path, f\"is", (T_SAFE,)),
    Mutation("read: no owner check", SAFE,
             "if expected_uid is not None and st.st_uid != expected_uid:",
             "if False:", (T_SAFE,)),
    Mutation("read: no size cap", SAFE,
             "start = max(0, st.st_size - max_bytes)", "start = 0; max_bytes = 1 << 40",
             (T_SAFE,)),
    Mutation("create: 1777 parent accepted", SAFE,
             "    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):\n        raise UnsafeFile(\n",
             "    if False:\n        raise UnsafeFile(\n", (T_SAFE,)),
    Mutation("create: existing dir reused", SAFE,
             "            if not exist_ok:\n", "            if False:\n", (T_SAFE,)),
    Mutation("create: file opened without O_EXCL/O_NOFOLLOW", SAFE,
             "flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND",
             "flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND", (T_SAFE,)),
    Mutation("sandbox: system mounted read-write", SANDBOX,
             '        return ["--ro-bind", step.src, dest]',
             '        return ["--bind", step.src, dest]', (T_ATTACK,)),
    Mutation("sandbox: the whole host visible", SANDBOX,
             "    for tree in _SYSTEM:\n",
             '    steps.append(Step(StepKind.RO_BIND, "/", src="/"))\n    for tree in ():\n',
             (T_ATTACK,)),
    Mutation("sandbox: no PID namespace", SANDBOX,
             'options = ["--unshare-pid", "--unshare-ipc"', 'options = ["--unshare-ipc"',
             (T_ATTACK,)),
    Mutation("sandbox: runs as root (no setpriv)", SANDBOX,
             "    if job.run_as is None:\n        return list(job.argv)",
             "    if True:\n        return list(job.argv)", (T_ATTACK,)),
    Mutation("sandbox: every group of the user", SANDBOX,
             'f"--groups={groups}" if groups else "--clear-groups"', '"--init-groups"',
             (T_ROOT_ACCOUNTS,)),
    Mutation("sandbox: no masks", SANDBOX,
             "        fds.append(_memfd(\"masked\", b\"\"))\n"
             "        return [*perms, \"--ro-bind-data\", str(fds[-1]), dest]",
             "        return []", (T_ATTACK,)),
    Mutation("sandbox: all of /dev", SANDBOX,
             'names = [f"nvidia{minor}" for minor in sorted(set(job.gpu_minors))]',
             "names = sorted(os.listdir(policy.device_dir))", (T_ATTACK,)),
    Mutation("sandbox: the server's environment inherited", SANDBOX,
             '    env = {\n        "PATH": policy.path,',
             '    env = {\n        **os.environ,\n        "PATH": policy.path,',
             (T_ATTACK,)),
    Mutation("sandbox: tied to the server's life", SANDBOX,
             'options += ["--hostname", policy.hostname or os.uname().nodename]',
             'options += ["--die-with-parent", "--hostname", '
             "policy.hostname or os.uname().nodename]",
             (T_LIFE,)),
    Mutation("sandbox: other tenants in /etc/passwd", SANDBOX,
             "        if number in ids and number not in keep:\n            continue",
             "        pass", (T_ATTACK,)),
    Mutation("status: pid alone taken as proof", STATUS,
             'return owner == os.geteuid() and namespace == f"pid:[{status.pid_namespace}]"',
             "return True", (T_LIFE,)),
    Mutation("accounts: foreign members removed", ACCOUNTS,
             "            if name not in ours:", "            if False:", (T_ACCOUNTS,)),
    Mutation("accounts: names, not tags, bind accounts", ACCOUNTS,
             "tagged = [u for u in self.actual.users if u.gecos == tag and self.ours_user(u)]",
             "tagged = [u for u in self.actual.users if u.name == unix_name("
             "self.policy.user_prefix, user.username, user.user_id)]", (T_ACCOUNTS,)),
    Mutation("mode: single-user with several organisations", MODE,
             "    if organisations > 1:", "    if False:", (T_MODE,)),
    Mutation("wiring: jobs run as the server, never switching user", STARTING,
             "    if not decision.switch_user:\n        return None",
             "    if True:\n        return None", (T_HOSTILE,)),
    Mutation("wiring: multi-tenant jobs unsandboxed", DISPATCHER,
             "        if decision.sandboxed:\n            status_path = ",
             "        decision = replace(decision, sandboxed=False)\n"
             "        if decision.sandboxed:\n            status_path = ", (T_HOSTILE,)),
    Mutation("accounts: a recorded uid trusted without its name and tag", ACCOUNTS,
             "    if entry.name not in names or entry.gid != gid:", "    if False:",
             (T_ACCOUNTS,)),
    Mutation("wiring: the server's environment inherited", DISPATCHER,
             "        env = job_environment(job, self._isolation.sandbox)",
             "        env = {**os.environ, **job_environment(job, self._isolation.sandbox)}",
             ("tests/dispatch/test_local.py",)),
    Mutation("wiring: the org count never read again", WIRING,
             "            if self._decision is None or now - self._counted_at >= COUNT_TTL_S:",
             "            if self._decision is None:", (T_WIRING,)),
    Mutation("wiring: the state directory left as it is", WIRING,
             "    changes = ensure_private_dir(settings.var_dir.resolve())",
             "    changes: list[str] = []", (T_WIRING,)),
    Mutation("wiring: the state directory not hidden", WIRING,
             "    hidden = [str(settings.var_dir.resolve())]", "    hidden: list[str] = []",
             (T_WIRING,)),
    Mutation("wiring: adoption by the environment marker", DISPATCHER,
             "            trusted = not self._isolation.mode().sandboxed",
             "            trusted = True", (T_ADOPT,)),
    Mutation("wiring: the end note written through links", DISPATCHER,
             "            append_to_owned_file(\n                job.stderr_path, note,",
             "            (lambda p, d, **_: open(p, 'ab').write(d))(\n"
             "                job.stderr_path, note,", (T_HOSTILE,)),
    Mutation("wiring: the end note without the owner check (a hard link)", DISPATCHER,
             "job.stderr_path, note, expected_uid=job.owner_uid, root=self._jobs_root",
             "job.stderr_path, note, expected_uid=None, root=self._jobs_root", (T_HOSTILE,)),
    Mutation("logs: read with open() as before", MANAGE,
             "        chunk = read_job_file(ctx, Path(path), offset, MAX_LOG_CHUNK)",
             "        chunk = open(path, 'rb').read()[offset : offset + MAX_LOG_CHUNK]",
             (T_HOSTILE,)),
    Mutation("logs: no owner check below the job directories", MANAGE,
             "max_bytes=max_bytes, expected_uid=owner, root=jobs)",
             "max_bytes=max_bytes, expected_uid=None, root=jobs)", (T_HOSTILE,)),
    Mutation("cycle: a launch error stops the pass", CYCLE,
             "    except Exception as exc:\n        # Defence in depth",
             "    except KeyboardInterrupt as exc:\n        # Defence in depth", (T_LAUNCH,)),
    Mutation("readyz: failing passes ignored", READY,
             "    if failing >= FAILING_PASSES_NOT_READY:", "    if False:", (T_READY,)),
]  # fmt: skip


def run(mutation: Mutation) -> tuple[bool, float, str]:
    path = ROOT / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return False, 0.0, "the text to mutate is not there exactly once"
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             "--timeout", "120", *mutation.tests],
            cwd=ROOT, capture_output=True, text=True, check=False,
            env={**os.environ, "CI": "true"},  # a skip is a failure here, as in CI
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        path.write_text(original)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
    return done.returncode != 0, elapsed, (failed[0] if failed else summary)


def main(names: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    survived = 0
    for mutation in chosen:
        caught, elapsed, detail = run(mutation)
        survived += not caught
        print(f"{'caught  ' if caught else 'SURVIVED'} {elapsed:5.1f}s  {mutation.name}: {detail}")
    print(f"{len(chosen) - survived} of {len(chosen)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
