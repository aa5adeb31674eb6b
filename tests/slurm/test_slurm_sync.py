"""Account sync by reconciliation against a real slurmdbd: exact commands, idempotence, and
removing a user whose default account goes away."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete

from gpucenter.dispatch.slurm.accounts import org_account
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import MembershipRow, ProjectRow
from gpucenter.services.identity import accounts
from tests.slurm.conftest import SlurmWorld, slurm


def _assocs(world: SlurmWorld) -> set[tuple[str, str, str, str]]:
    out = slurm(
        *("sacctmgr", "-n", "-P", "show", "assoc", f"cluster={world.cluster}"),
        "format=Account,User,Share,GrpTRESMins",
    )
    mine = {
        world.account(f"a{world.suffix}"),
        world.account(f"b{world.suffix}"),
        org_account(f"Alpha University {world.suffix}", None, world.top),
        f"{world.top}_direct",
    }
    return {tuple(line.split("|")) for line in out.splitlines() if line.split("|")[0] in mine}  # type: ignore[misc]


def _default_account(user: str) -> str:
    return slurm("sacctmgr", "-n", "-P", "show", "user", user, "format=DefaultAccount").strip()


def test_sync_after_an_award_change_and_removals(slurm_world: SlurmWorld) -> None:
    world = slurm_world
    pa, pb = f"a{world.suffix}", f"b{world.suffix}"
    a, b = world.account(pa), world.account(pb)
    org = org_account(f"Alpha University {world.suffix}", None, world.top)
    direct = f"{world.top}_direct"  # the programme level of allocations made directly
    c = f"cluster={world.cluster}"
    # Users of this test only (no Unix users needed: no jobs run), so no other run's
    # associations can change which default account they have.
    alice, bob = f"ua{world.suffix}", f"ub{world.suffix}"
    now = datetime.now(tz=UTC)
    with world.ctx.sessions.begin() as s:
        accounts.create_user(s, alice, now)
        accounts.create_user(s, bob, now)
        for project in (pa, pb):
            accounts.create_project(s, project, f"Alpha University {world.suffix}", now)
            accounts.add_member(s, project, bob)
        accounts.add_member(s, pa, alice)
        accounts.create_allocation(s, pb, 100.0, now)

    first = [cmd for cmd in world.sync() if " add qos " not in cmd]  # QOS: once per cluster
    assert len(first) == 8  # top, programme, org, two projects, three memberships
    assert world.plan() == [], "a second sync changes nothing"
    assert _assocs(world) == {
        (direct, "", "101", ""),
        (org, "", "101", ""),
        (a, "", "1", "gres/gpu=0"),
        (a, alice, "1", ""),
        (a, bob, "1", ""),
        (b, "", "100", "gres/gpu=6000"),
        (b, bob, "1", ""),
    }
    assert _default_account(bob) == a

    # An award change: project a gets 50 GPU-hours.
    with world.ctx.sessions.begin() as s:
        accounts.create_allocation(s, pa, 50.0, now)
    assert [str(cmd) for cmd in world.plan()] == [
        f"sacctmgr -i modify account where name={direct} {c} set fairshare=150",
        f"sacctmgr -i modify account where name={org} {c} set fairshare=150",
        f"sacctmgr -i modify account where name={a} {c} set fairshare=50",
        f"sacctmgr -i modify account where name={a} {c} set GrpTRESMins=gres/gpu=3000",
    ]
    world.sync()
    assert world.plan() == []

    # Project a goes away with its members: bob's default account is a, alice has only a.
    with world.ctx.sessions.begin() as s:
        project_id = repo.project_by_name(s, pa).id
        s.execute(delete(MembershipRow).where(MembershipRow.project_id == project_id))
        from gpucenter.persistence.tables import AllocationRow

        s.execute(delete(AllocationRow).where(AllocationRow.project_id == project_id))
        s.execute(delete(ProjectRow).where(ProjectRow.id == project_id))
    assert [str(cmd) for cmd in world.plan()] == [
        f"sacctmgr -i modify account where name={direct} {c} set fairshare=100",
        f"sacctmgr -i modify account where name={org} {c} set fairshare=100",
        f"sacctmgr -i modify user where name={bob} {c} set defaultaccount={b}",
        f"sacctmgr -i delete user name={alice} {c}",
        f"sacctmgr -i delete user name={bob} account={a} {c}",
        f"sacctmgr -i delete account name={a} {c}",
    ]
    world.sync()
    assert world.plan() == []
    assert _default_account(bob) == b
    assert _assocs(world) == {
        (direct, "", "100", ""),
        (org, "", "100", ""),
        (b, "", "100", "gres/gpu=6000"),
        (b, bob, "1", ""),
    }
