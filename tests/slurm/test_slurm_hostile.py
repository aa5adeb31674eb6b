"""Issue 17 on a real Slurm site: a hostile tenant's jobs against another tenant and the server.

Two tenants, gcalice (project ``pa``) and gcbob (``pb``), each a real Unix user; their jobs go
through gpucenter to the real daemons (scripts/slurm/setup.sh) and run as their owners. Bob's
jobs try to read Alice's outputs and the server's database, put a symlink to a root-only file
and a FIFO in place of their own logs and Alice's output in place of one (a hard link), and
Bob submits a Slurm job of his own carrying the marker of Alice's job (``--comment``). Each is
refused: by the file modes gpucenter gives (0700 per-owner log directories, a 0600 database),
or by the log API (409 at once, never a hang), or by the adoption check (the Slurm job's
owner and account must be the job's, and its marker valid: tests/slurm/test_slurm_outside.py).

The server's state lives in a directory every user can reach (the test's own `tmp_path`,
below), so that only the modes gpucenter sets keep Bob out of the database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.domain.errors import Conflict, NotFound
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.services.identity import accounts
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.sites.isolation import secure_state
from tests.slurm.conftest import SHARED, SlurmWorld, job_row, project, run_until, slurm, wait_for

pytestmark = pytest.mark.slurm

ROOT_ONLY_SECRET = "root-only-" + uuid.uuid4().hex


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """The server's state (database, var dir) in a directory any user can enter: only the
    modes gpucenter gives its files stand between a job and them."""
    SHARED.mkdir(mode=0o1777, exist_ok=True)
    path = SHARED / f"state-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root_only_file() -> Iterator[Path]:
    """A file only root may read (like slurmdbd.conf or the munge key), with a known secret."""
    path = SHARED / f"root-only-{uuid.uuid4().hex[:8]}"
    path.write_text(ROOT_ONLY_SECRET + "\n")
    path.chmod(0o600)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _tenants(world: SlurmWorld) -> tuple[str, str]:
    pa = project(world, "pa", 100.0, "gcalice")
    pb = project(world, "pb", 100.0, "gcbob")
    world.sync()
    secure_state(world.ctx.settings)  # what `gpucenter serve` does first (build_context)
    return pa, pb


def _run(world: SlurmWorld, user: str, proj: str, command: str) -> int:
    form = JobForm(
        project=proj, command=command, gpus_per_node=1, gpu_type="h100", time_limit_s=120
    )
    job_id = jobs.submit(world.ctx, world.caller(user), form).id
    row = run_until(world, job_id, lambda r: JobState(r.state).is_terminal)
    assert row.state == JobState.COMPLETED.value, row.reason_detail
    return job_id


def _log(world: SlurmWorld, user: str, job_id: int, stream: str = "stdout") -> str:
    chunk, _, _ = jobs.read_log(world.ctx, world.caller(user), job_id, stream)
    return chunk.decode()


def _within(seconds: float, call: Callable[[], object], fifo: str | None = None) -> object:
    """`call`'s result (or the exception it raised) if it returns within `seconds`; fails
    the test otherwise (a read that blocks on a FIFO never returns: the test then opens the
    `fifo` for writing, and closes it, so that the blocked reader gets an end of file)."""
    box: list[object] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed back to the test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if not box and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the reader go
        thread.join(seconds)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s, until the test let it go")
    assert box, f"still blocked after {seconds} s"
    return box[0]


def test_another_tenants_job_cannot_read_outputs_or_the_database(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    pa, pb = _tenants(world)
    secret = "alice-secret-" + uuid.uuid4().hex
    alice_job = _run(world, "gcalice", pa, f"echo {secret}; echo {secret} >&2")
    a = job_row(world, alice_job)
    assert a.stdout_path and a.stderr_path and secret in _log(world, "gcalice", alice_job)
    home = Path(a.stdout_path).parent
    database = Path(str(world.ctx.settings.database_url).removeprefix("sqlite:///"))
    assert database.is_file() and Path(database.parent).stat().st_mode & 0o005 == 0o005

    targets = [a.stdout_path, a.stderr_path, str(database)]
    probe = " ".join(
        f'if cat {t} >/dev/null 2>&1; then echo "READ {t}"; else echo "DENIED {t}"; fi;'
        for t in targets
    )
    probe += f' if ls {home} >/dev/null 2>&1; then echo "LISTED"; else echo "NOLIST"; fi;'
    probe += f' if echo x >> {database} 2>/dev/null; then echo "WROTE"; else echo "NOWRITE"; fi'
    bob_job = _run(world, "gcbob", pb, probe)

    said = _log(world, "gcbob", bob_job)
    assert [line for line in said.splitlines() if line.startswith("READ")] == [], said
    assert all(f"DENIED {t}" in said for t in targets), said
    assert "NOLIST" in said and "NOWRITE" in said, said
    assert secret not in said
    with pytest.raises(NotFound):  # nor through gpucenter
        _log(world, "gcbob", alice_job)
    assert _log(world, "gcalice", alice_job).strip() == secret  # untouched
    st = home.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (_uid("gcalice"), 0o700), "the owner's, private"


def test_links_and_fifos_in_place_of_logs_are_refused_at_once(
    slurm_world: SlurmWorld, root_only_file: Path
) -> None:
    world = slurm_world
    pa, pb = _tenants(world)
    secret = "alice-output-" + uuid.uuid4().hex
    alice_job = _run(world, "gcalice", pa, f"echo {secret}")
    a_out = job_row(world, alice_job).stdout_path
    assert a_out

    # Bob's job replaces its own logs (it runs in its log directory): the stdout with a
    # symlink to a file only root may read, the stderr with a FIFO.
    swap = (
        'out="job-$GPUCENTER_JOB_ID.out"; err="job-$GPUCENTER_JOB_ID.err"; '
        f'rm -f "$out" "$err"; ln -s {root_only_file} "$out"; mkfifo "$err"'
    )
    bob_job = _run(world, "gcbob", pb, swap)
    b = job_row(world, bob_job)
    assert b.stdout_path and b.stderr_path
    assert Path(b.stdout_path).is_symlink() and Path(b.stderr_path).is_fifo()

    with world.ctx.sessions.begin() as s:
        token = accounts.issue_token(s, repo.user_by_name(s, "gcbob").id, world.ctx.now())
    with TestClient(create_app(world.ctx, run_scheduler=False)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for stream in ("stdout", "stderr"):
            url = f"/api/v1/jobs/{bob_job}/logs?stream={stream}"
            began = time.monotonic()
            resp = _within(20, lambda url=url: client.get(url, headers=headers), b.stderr_path)
            assert time.monotonic() - began < 10
            assert getattr(resp, "status_code", None) == 409, (stream, resp)
            assert ROOT_ONLY_SECRET not in resp.text  # type: ignore[attr-defined]
        assert client.get("/healthz").status_code == 200  # the server still answers
    why = _within(20, lambda: _log(world, "gcbob", bob_job, "stderr"), b.stderr_path)
    assert isinstance(why, Conflict) and "FIFO" in str(why), why

    # Alice's output hard-linked in place of Bob's log. Bob's own job cannot make the link
    # (Alice's directory is 0700, and the kernel's protected_hardlinks); the test makes it as
    # root, as on a host where both of those were missing: the log API still refuses it.
    link = f'out="job-$GPUCENTER_JOB_ID.out"; rm -f "$out"; ln {a_out} "$out" 2>&1 || echo NOLINK'
    bob_link_job = _run(world, "gcbob", pb, link)
    c = job_row(world, bob_link_job)
    assert c.stdout_path and not Path(c.stdout_path).exists()  # his ln failed
    os.link(a_out, c.stdout_path)
    why = _log_error(world, "gcbob", bob_link_job)
    assert isinstance(why, Conflict) and f"owned by uid {_uid('gcalice')}" in str(why), why
    assert _log(world, "gcalice", alice_job).strip() == secret


def _log_error(world: SlurmWorld, user: str, job_id: int) -> object:
    try:
        return _log(world, user, job_id)
    except Conflict as exc:
        return exc


def test_a_forged_marker_on_another_users_slurm_job_is_never_adopted(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    pa, pb = _tenants(world)
    form = JobForm(
        project=pa,
        command="echo ran-as-$(id -un)",
        gpus_per_node=1,
        gpu_type="h100",
        time_limit_s=120,
    )
    alice_job = jobs.submit(world.ctx, world.caller("gcalice"), form).id  # pending: not started
    # Bob submits his own Slurm job, on his own account, with the marker of Alice's job.
    forged = (
        subprocess.run(
            [
                *("runuser", "-u", "gcbob", "--", "sbatch", "--parsable"),
                f"--account={world.account(pb)}",
                f"--comment=gpucenter:{alice_job}",
                *("--gres=gpu:h100:1", "--time=2", "--chdir=/tmp", "--output=/dev/null"),
                *("--wrap", "sleep 300"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    assert forged.isdigit()
    wait_for(
        "Slurm lists the forged job", lambda: slurm("squeue", "-h", "-j", forged).strip() != ""
    )

    row = run_until(world, alice_job, lambda r: JobState(r.state).is_terminal)

    assert row.state == JobState.COMPLETED.value, row.reason_detail
    assert row.external_id and row.external_id != forged  # her own Slurm job, not Bob's
    user = slurm("sacct", "-X", "-n", "-P", "-j", row.external_id, "--format=User,Account")
    assert user.strip() == f"gcalice|{world.account(pa)}"
    assert _log(world, "gcalice", alice_job).strip() == "ran-as-gcalice"  # her command ran
    assert forged in world.dispatcher.refused_adoptions  # flagged for the operator
    assert "not adopted" in world.dispatcher.refused_adoptions[forged]
    state = slurm("squeue", "-h", "-j", forged, "-o", "%T").strip()
    assert state in ("RUNNING", "PENDING")  # Bob's job is his business: left alone
