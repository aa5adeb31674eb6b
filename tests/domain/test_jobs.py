"""The job state machine and request validation."""

from __future__ import annotations

import pytest

from gpucenter.domain.errors import InvalidTransition, ValidationError
from gpucenter.domain.jobs import TERMINAL_STATES, GpuRequest, JobSpec, JobState, check_transition

ALLOWED = {
    (JobState.PENDING, JobState.RUNNING),
    (JobState.PENDING, JobState.CANCELLED),
    (JobState.PENDING, JobState.FAILED),
    (JobState.RUNNING, JobState.COMPLETED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.CANCELLED),
    (JobState.RUNNING, JobState.TIMEOUT),
    (JobState.RUNNING, JobState.PENDING),
}


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("new", list(JobState))
def test_only_the_listed_transitions_are_allowed(current: JobState, new: JobState) -> None:
    if (current, new) in ALLOWED:
        assert check_transition(current, new) is new
    else:
        with pytest.raises(InvalidTransition):
            check_transition(current, new)


def test_terminal_states_are_final() -> None:
    for state in TERMINAL_STATES:
        assert state.is_terminal
        assert all((state, other) not in ALLOWED for other in JobState)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(gpu_type="", gpus_per_node=1), "gpu_type"),
        (dict(gpu_type="h100", gpus_per_node=0), "gpus_per_node"),
        (dict(gpu_type="h100", gpus_per_node=1, nodes=0), "nodes"),
    ],
)
def test_gpu_request_names_the_bad_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        GpuRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_job_spec_rejects_empty_command_and_silly_limits() -> None:
    gpu = GpuRequest("h100", 1)
    with pytest.raises(ValidationError, match="command"):
        JobSpec("x", "  ", gpu, 60)
    with pytest.raises(ValidationError, match="time_limit"):
        JobSpec("x", "true", gpu, 0)
    with pytest.raises(ValidationError, match="env"):
        JobSpec("x", "true", gpu, 60, env={"A=B": "c"})
    assert GpuRequest("h100", 4, 2, ("h200",)).total_gpus == 8
    assert GpuRequest("h100", 4, 2, ("h200", "h100")).acceptable_types == ("h100", "h200")
