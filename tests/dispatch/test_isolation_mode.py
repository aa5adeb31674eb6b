"""The isolation mode decision, case by case (a pure function: no root, no bwrap needed)."""

from __future__ import annotations

import logging

import pytest

from gpucenter.dispatch.isolation import IsolationSetting, RunMode, decide_mode

MULTI, SINGLE = IsolationSetting.MULTI_TENANT, IsolationSetting.SINGLE_USER


@pytest.mark.parametrize(
    ("euid", "setting", "orgs", "problem", "mode", "switch", "sandboxed"),
    [
        (0, MULTI, 3, None, RunMode.MULTI_TENANT, True, True),
        (0, MULTI, 1, None, RunMode.MULTI_TENANT, True, True),
        (1000, MULTI, 1, None, RunMode.REFUSED, False, False),
        (0, MULTI, 3, "bwrap missing", RunMode.REFUSED, False, False),
        (1000, SINGLE, 1, None, RunMode.SINGLE_USER, False, True),
        (1000, SINGLE, 0, "bwrap missing", RunMode.SINGLE_USER, False, False),
        (1000, SINGLE, 2, None, RunMode.REFUSED, False, False),
        (0, SINGLE, 2, None, RunMode.REFUSED, False, False),
        (0, "multi_tenant", 2, None, RunMode.MULTI_TENANT, True, True),
        (0, "shared", 1, None, RunMode.REFUSED, False, False),
    ],
)
def test_decisions(
    euid: int,
    setting: IsolationSetting | str,
    orgs: int,
    problem: str | None,
    mode: RunMode,
    switch: bool,
    sandboxed: bool,
) -> None:
    decision = decide_mode(euid=euid, setting=setting, organisations=orgs, sandbox_problem=problem)
    assert decision.mode is mode
    assert decision.may_run_jobs is (mode is not RunMode.REFUSED)
    assert (decision.switch_user, decision.sandboxed) == (switch, sandboxed)
    if mode is RunMode.REFUSED:
        assert decision.level == logging.ERROR and "NO JOB WILL START" in decision.message.upper()


def test_multi_tenant_without_root_says_what_to_do() -> None:
    decision = decide_mode(euid=1000, setting=MULTI, organisations=2)
    assert "uid 1000" in decision.message and "root" in decision.message
    assert "single_user" in decision.message


def test_single_user_is_said_loudly() -> None:
    decision = decide_mode(euid=1000, setting=SINGLE, organisations=1, sandbox_problem="none")
    assert decision.level == logging.WARNING
    assert decision.message.startswith("SINGLE-USER MODE")
    assert "UNSANDBOXED" in decision.message


def test_single_user_refuses_a_second_organisation_naming_the_count() -> None:
    decision = decide_mode(euid=1000, setting=SINGLE, organisations=2)
    assert "2 organisations" in decision.message and "multi_tenant" in decision.message


@pytest.mark.parametrize(
    ("euid", "setting", "orgs", "mode", "only"),
    [
        (1000, SINGLE, 10, RunMode.SINGLE_USER, "demo"),  # the lived-in demo on a laptop
        (1000, SINGLE, 1, RunMode.SINGLE_USER, "demo"),
        (0, MULTI, 10, RunMode.MULTI_TENANT, None),  # multi-tenant runs everybody's as theirs
        (1000, MULTI, 10, RunMode.REFUSED, None),
    ],
)
def test_single_user_naming_its_owner_runs_only_that_users_jobs(
    euid: int, setting: IsolationSetting, orgs: int, mode: RunMode, only: str | None
) -> None:
    decision = decide_mode(euid=euid, setting=setting, organisations=orgs, owner="demo")
    assert decision.mode is mode
    assert decision.only_owner == only
    if only is not None:
        assert decision.refuses_owner("demo") == ""
        assert "only demo's jobs" in decision.refuses_owner("alice")
        assert "only demo's jobs run" in decision.message
    else:
        assert decision.refuses_owner("alice") == ""


def test_an_empty_owner_name_is_no_owner() -> None:
    decision = decide_mode(euid=1000, setting=SINGLE, organisations=2, owner="")
    assert decision.mode is RunMode.REFUSED


def test_single_user_as_root_says_root() -> None:
    decision = decide_mode(euid=0, setting=SINGLE, organisations=1)
    assert "ROOT" in decision.message
