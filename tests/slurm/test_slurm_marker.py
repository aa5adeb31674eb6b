"""The per-run job marker (table tests) and what adoption does with it, against a scripted
Slurm (no daemons: tests/slurm/test_slurm_outside.py has the real ones)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gpucenter.dispatch.base import JobOwner
from gpucenter.dispatch.slurm.cli import Result, SlurmCli
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher
from gpucenter.dispatch.slurm.marker import MAC_HEX, Marker, MarkerKey, parse_marker
from gpucenter.dispatch.slurm.submit_rule import install, render
from gpucenter.domain.ids import JobId
from tests.dispatch.builders import launch_request

KEY = MarkerKey(b"k" * 32, "gpucenter")
OTHER_KEY = MarkerKey(b"o" * 32, "gpucenter")
OTHER_SITE = MarkerKey(b"k" * 32, "elsewhere")


def test_a_marker_names_its_job_and_run_with_a_mac_of_the_set_length() -> None:
    text = KEY.marker(7, 2)
    head, job, run, mac = text.split(":")
    assert (head, job, run, len(mac)) == ("gpucenter", "7", "2", MAC_HEX)
    assert KEY.valid(text) == Marker(7, 2, mac)
    assert KEY.marker(7, 2) == text  # deterministic: a restarted server computes the same


def _tamper(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


@pytest.mark.parametrize(
    ("comment", "valid"),
    [
        (KEY.marker(7, 1), True),
        (KEY.marker(7, 1).upper(), False),  # a different string: never the same MAC
        (_tamper(KEY.marker(7, 1)), False),  # one digit of the MAC changed
        (KEY.marker(7, 1).replace(":7:", ":8:"), False),  # another job, the same MAC
        (KEY.marker(7, 1).replace(":1:", ":2:"), False),  # another run, the same MAC
        (OTHER_KEY.marker(7, 1), False),  # made with another key (a user's guess)
        (OTHER_SITE.marker(7, 1), False),  # the right key, another site's namespace
        ("gpucenter:7", False),  # the old form: anybody can write it
        ("gpucenter:7:1:", False),
        ("gpucenter:7:1", False),
        ("gpucenter:x:1:abc", False),
        (KEY.marker(7, 1)[:-2], False),  # truncated
        (KEY.marker(7, 1) + "00", False),  # extended
        ("", False),
        ("hello", False),
    ],
)
def test_only_the_servers_own_marker_is_valid(comment: str, valid: bool) -> None:
    assert (KEY.valid(comment) is not None) is valid


@pytest.mark.parametrize(
    ("comment", "named"),
    [
        ("gpucenter:7", Marker(7, None, None)),
        ("gpucenter:7:3:abc", Marker(7, 3, "abc")),
        ("gpucenter:", None),
        ("gpucenter:7:x:abc", None),
        ("other:7", None),
    ],
)
def test_parse_marker(comment: str, named: Marker | None) -> None:
    assert parse_marker(comment) == named


def test_the_key_is_made_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "slurm-marker.key"
    first = MarkerKey.load_or_create(path, "gpucenter")
    again = MarkerKey.load_or_create(path, "gpucenter")
    assert first == again and len(first.secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    other = MarkerKey.load_or_create(tmp_path / "other.key", "gpucenter")
    assert other.secret != first.secret


class FakeSlurm:
    """squeue lists `jobs` (id -> (comment, user, uid, account)); scontrol shows them."""

    def __init__(self, jobs: Mapping[str, tuple[str, str, int, str]]) -> None:
        self.jobs = dict(jobs)
        self.calls: list[Sequence[str]] = []

    def __call__(
        self, argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        self.calls.append(list(argv))
        tool = os.path.basename(argv[0])
        if tool == "squeue":
            rows = "".join(
                f"{ext}|RUNNING|None|2026-12-05T10:00:00|Unknown|{c}\n"
                for ext, (c, _, _, _) in self.jobs.items()
            )
            return Result(0, rows, "")
        if tool == "scontrol" and "show" in argv:
            ext = argv[-1]
            if ext not in self.jobs:
                return Result(1, "", "slurm_load_jobs error: Invalid job id specified")
            comment, user, uid, account = self.jobs[ext]
            return Result(
                0, f"JobId={ext} UserId={user}({uid}) Account={account} Comment={comment}\n", ""
            )
        if tool == "sbatch":
            return Result(0, "999\n", "")
        if tool == "sacct":
            return Result(0, "", "")
        raise AssertionError(argv)


def _dispatcher(tmp_path: Path, fake: FakeSlurm) -> SlurmDispatcher:
    return SlurmDispatcher(tmp_path, cli=SlurmCli(runner=fake), marker_key=KEY)


def test_a_crash_before_the_record_adopts_only_this_runs_earliest_valid_job(
    tmp_path: Path,
) -> None:
    """Job 7, run 2, submitted before the server died: Slurm has its own job (100) and the
    owner's copies and forgeries. Only 100 is adopted; each of the others is refused with
    why, and none is submitted twice."""
    me, uid, acct = "srv", os.geteuid(), "gpucenter_alpha"
    fake = FakeSlurm(
        {
            "97": (OTHER_KEY.marker(7, 2), me, uid, acct),  # forged MAC
            "98": (KEY.marker(7, 1), me, uid, acct),  # the old run's marker
            "99": ("gpucenter:7", me, uid, acct),  # the old form
            "100": (KEY.marker(7, 2), me, uid, acct),  # ours
            "101": (KEY.marker(7, 2), me, uid, acct),  # a later copy of ours
            "102": (KEY.marker(7, 2), "bob", uid + 1, acct),  # another user, valid marker
            "103": (KEY.marker(7, 2), me, uid, "gpucenter_beta"),  # another account
        }
    )
    d = _dispatcher(tmp_path, fake)
    d.poll()
    launched = d.submit(launch_request(7, run=2))
    assert launched.external_id == "100"
    assert not any(os.path.basename(c[0]) == "sbatch" for c in fake.calls)
    refused = d.refused_adoptions
    assert sorted(refused, key=int) == ["97", "98", "99", "101", "102", "103"]
    assert "no valid marker" in refused["97"] and "no valid marker" in refused["99"]
    assert "run 1, not of run 2" in refused["98"]
    assert "submitted before it" in refused["101"]
    assert "not as the job's owner" in refused["102"] and "not as" in refused["103"]


def test_without_a_valid_marker_the_job_is_submitted_afresh(tmp_path: Path) -> None:
    fake = FakeSlurm({"50": (OTHER_KEY.marker(7, 1), "srv", os.geteuid(), "gpucenter_alpha")})
    d = _dispatcher(tmp_path, fake)
    d.poll()
    assert d.submit(launch_request(7, owner=JobOwner("alice"))).external_id == "999"
    assert "50" in d.refused_adoptions


@pytest.mark.parametrize(
    ("comment", "adopted"),
    [
        (KEY.marker(7, 1), True),
        (KEY.marker(7, 3), True),  # any run of the job: the database named this Slurm job
        (KEY.marker(8, 1), False),  # another job's marker
        (OTHER_KEY.marker(7, 1), False),
        ("gpucenter:7", False),
        ("", False),
    ],
)
def test_adopt_after_a_restart_wants_the_jobs_valid_marker(
    tmp_path: Path, comment: str, adopted: bool
) -> None:
    fake = FakeSlurm({"60": (comment, "srv", os.geteuid(), "gpucenter_alpha")})
    d = _dispatcher(tmp_path, fake)
    assert d.adopt(JobId(7), "60", 0.0, 60, None) is adopted
    assert (JobId(7) in d.running_job_ids()) is adopted
    assert ("60" in d.refused_adoptions) is not adopted


def test_adopt_watches_a_job_slurm_no_longer_shows(tmp_path: Path) -> None:
    d = _dispatcher(tmp_path, FakeSlurm({}))
    assert d.adopt(JobId(7), "61", 0.0, 60, None)  # sacct tells its end at the next poll


def test_the_submit_rule_marks_namespaces_and_keeps_one_script(tmp_path: Path) -> None:
    conf, marks = tmp_path / "etc", tmp_path / "refuse.d"
    conf.mkdir()
    done = install(conf, "GPUcenter", refuse=True, allowed_uids=(0, 64030), refuse_dir=marks)
    assert len(done) == 2 and (marks / "gpucenter").exists()
    text = (conf / "job_submit.lua").read_text()
    assert text == render((64030, 0), str(marks)) and "[64030] = true" in text
    assert install(conf, "gpucenter", True, (0, 64030), marks) == []  # nothing to change
    assert len(install(conf, "gpucenter", False, (0, 64030), marks)) == 1
    assert not (marks / "gpucenter").exists()
