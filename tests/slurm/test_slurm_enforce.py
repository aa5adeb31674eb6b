"""Enforcement at the site, against real slurmdbd/slurmctld: the QOS a project may use, and a
project whose allocation is used up held at Slurm (sbatch -A refused with Slurm's reason)
until a credit tops it up and the next sync releases it."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

from sqlalchemy import select

from gpucenter.persistence.tables import AllocationRow, LedgerEntryRow
from gpucenter.services.programmes.awards import refresh_allocation_states
from tests.slurm.conftest import SlurmWorld, project, slurm


def _sbatch(world: SlurmWorld, account: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A job submitted to Slurm directly, outside gpucenter, as a member would."""
    return subprocess.run(
        [
            *("sbatch", "--parsable", "--wait", f"--account={account}", "--uid=gcalice"),
            *("--gres=gpu:h100:1", "--time=1", "--output=/dev/null"),
            *extra,
            *("--wrap", "true"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _assoc(world: SlurmWorld, account: str) -> list[str]:
    out = slurm(
        *("sacctmgr", "-n", "-P", "show", "assoc", f"cluster={world.cluster}"),
        f"account={account}",
        "format=User,QOS,DefaultQOS,GrpSubmit,GrpJobs",
    )
    return sorted(out.splitlines())


def _ledger(world: SlurmWorld, project_name: str, source: str, gpu_seconds: float) -> None:
    now = datetime.now(tz=UTC)
    with world.ctx.sessions.begin() as s:
        from gpucenter.persistence import repositories as repo

        alloc = s.scalars(
            select(AllocationRow).where(
                AllocationRow.project_id == repo.project_by_name(s, project_name).id
            )
        ).one()
        s.add(
            LedgerEntryRow(
                allocation_id=alloc.id,
                source=source,
                gpu_type="h100",
                gpu_seconds=gpu_seconds,
                created_at=now,
            )
        )
        s.flush()
        refresh_allocation_states(s, now)


def test_exhausted_project_is_held_at_slurm_and_released_by_a_credit(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    name = project(world, "h", 1.0, "gcalice")
    account = world.account(name)
    world.sync()
    # The project may use both QOS, normal by default; its member inherits that.
    assert _assoc(world, account) == [
        "gcalice|normal,opportunistic|normal||",
        "|normal,opportunistic|normal||",
    ]
    ok = _sbatch(world, account, "--qos=opportunistic")
    assert ok.returncode == 0, ok.stderr

    # gpucenter's accounting charges the whole GPU-hour: the allocation is exhausted and its
    # programme (none: the default) holds exhausted projects.
    _ledger(world, name, "test:usage", 3600.0)
    c = f"cluster={world.cluster}"
    assert [str(cmd) for cmd in world.plan()] == [
        f"sacctmgr -i modify account where name={account} {c} set GrpSubmitJobs=0 GrpJobs=0"
    ]
    world.sync()
    refused = _sbatch(world, account)
    assert refused.returncode != 0
    assert "Job violates accounting/QOS policy" in refused.stderr, refused.stderr

    # A credit gives half an hour back: active again, the next sync releases the account.
    _ledger(world, name, "test:credit", -1800.0)
    assert [str(cmd) for cmd in world.plan()] == [
        f"sacctmgr -i modify account where name={account} {c} set GrpSubmitJobs=-1 GrpJobs=-1"
    ]
    world.sync()
    assert world.plan() == []
    again = _sbatch(world, account)
    assert again.returncode == 0, again.stderr
