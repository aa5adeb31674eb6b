"""The Slurm pieces that need no daemons: state mapping, reasons, sbatch arguments, parsing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import LaunchRequest
from gpucenter.dispatch.slurm import SlurmDispatcher, SlurmSubmission
from gpucenter.dispatch.slurm_cli import Result, SlurmCli, SlurmUnavailable
from gpucenter.dispatch.slurm_states import Phase, describe_reason, exit_status, map_state
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.services.slurm_usage import parse_alloc_tres

STATES = {
    "PENDING": (Phase.WAITING, None),
    "REQUEUED": (Phase.WAITING, None),
    "RUNNING": (Phase.RUNNING, None),
    "COMPLETING": (Phase.RUNNING, None),
    "SUSPENDED": (Phase.RUNNING, None),
    "COMPLETED": (Phase.ENDED, JobState.COMPLETED),
    "FAILED": (Phase.ENDED, JobState.FAILED),
    "CANCELLED by 0": (Phase.ENDED, JobState.CANCELLED),
    "TIMEOUT": (Phase.ENDED, JobState.TIMEOUT),
    "NODE_FAIL": (Phase.ENDED, JobState.FAILED),
    "PREEMPTED": (Phase.ENDED, JobState.FAILED),
    "OUT_OF_MEMORY": (Phase.ENDED, JobState.FAILED),
    "BOOT_FAIL": (Phase.ENDED, JobState.FAILED),
    "DEADLINE": (Phase.ENDED, JobState.FAILED),
    "SOMETHING_NEW": (Phase.RUNNING, None),  # unknown: never treated as ended
}


@pytest.mark.parametrize("raw", STATES)
def test_every_slurm_state_maps(raw: str) -> None:
    mapped = map_state(raw, "1:0")
    assert (mapped.phase, mapped.state) == STATES[raw]


def test_exit_codes_and_reasons_in_words() -> None:
    assert exit_status("3:0") == 3 and exit_status("0:9") == 137 and exit_status("") is None
    assert "exit code 3" in map_state("FAILED", "3:0").detail
    text = describe_reason("AssocGrpGRESMinutes")
    assert text.startswith("AssocGrpGRESMinutes:") and "GPU-minutes" in text
    assert "GPUs" in describe_reason("Resources")
    assert describe_reason("Weird") == "Slurm reason: Weird"


def test_alloc_tres() -> None:
    assert parse_alloc_tres("billing=1,cpu=1,gres/gpu:h100=2,gres/gpu=2,node=1") == (2, "h100")
    assert parse_alloc_tres("cpu=4,node=1") == (0, None)


def _fake(replies: Mapping[str, Result]) -> SlurmCli:
    def runner(
        argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        return replies[argv[0]]

    return SlurmCli(runner=runner)


def test_sbatch_arguments(tmp_path: Path) -> None:
    dispatcher = SlurmDispatcher(tmp_path, cli=_fake({}), partition="gpu")
    request = LaunchRequest(JobId(7), "train.py", (NodeGpus("n1", (0, 1)),), 90, "/w")
    args = dispatcher.sbatch_args(request, SlurmSubmission("proj", "h100", 2, 1, "t", "ann"))
    assert "--account=proj" in args and "--gres=gpu:h100:2" in args
    assert "--time=2" in args and "--comment=gpucenter:7" in args and "--chdir=/w" in args
    assert "--partition=gpu" in args and "--uid=ann" in args and "--job-name=t" in args


def test_controller_down_keeps_jobs_and_says_why(tmp_path: Path) -> None:
    notes: list[tuple[JobId, str]] = []

    class Observer:
        def started(self, job_id: JobId, at: float) -> None: ...

        def waiting(self, job_id: JobId, reason: str, detail: str) -> None:
            notes.append((job_id, reason))

    down = Result(1, "", "squeue: error: Unable to contact slurm controller (connect failure)")
    cli = _fake({"sbatch": Result(0, "42\n", ""), "squeue": down})
    dispatcher = SlurmDispatcher(tmp_path, cli=cli, observer=Observer())
    request = LaunchRequest(JobId(1), "true", (NodeGpus("n1", (0,)),), 60, None, account="p")
    assert dispatcher.submit(request).external_id == "42"
    assert dispatcher.poll() == []
    assert notes == [(JobId(1), "SiteUnavailable")] and dispatcher.unavailable
    assert dispatcher.running_job_ids() == {JobId(1)}
    with pytest.raises(SlurmUnavailable):
        cli.run("squeue", [])
