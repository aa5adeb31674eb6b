"""`gpucenter job ...`: what a member does, through the REST API."""

from __future__ import annotations

import sys
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from gpucenter.cli.common import api_client, console, emit, fail, friendly_errors, parse_duration

app = typer.Typer(
    help="Submit, watch and cancel jobs.", no_args_is_help=True, pretty_exceptions_enable=False
)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env expects NAME=VALUE, got {pair!r}", 2)
        env[key] = value
    return env


@app.command()
def submit(
    command: Annotated[list[str], typer.Argument(help="the command to run, after --")],
    project: Annotated[str, typer.Option("--project", "-p", help="project to charge")],
    gpus: Annotated[int, typer.Option("--gpus", "-g", help="GPUs per node")] = 1,
    nodes: Annotated[int, typer.Option("--nodes", "-N")] = 1,
    gpu_type: Annotated[str | None, typer.Option("--gpu-type", "-t")] = None,
    time: Annotated[str, typer.Option("--time", help="time limit: 90, 30m, 2h, 1:00:00")] = "1h",
    name: Annotated[str, typer.Option("--name")] = "",
    workdir: Annotated[str | None, typer.Option("--workdir")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Submit a job. Example: gpucenter job submit -p demo -g 2 -- python train.py"""
    body = {
        "project": project,
        "command": " ".join(command),
        "gpus_per_node": gpus,
        "nodes": nodes,
        "gpu_type": gpu_type,
        "time_limit_s": parse_duration(time),
        "name": name,
        "workdir": workdir,
        "env": _parse_env(env or []),
    }
    with friendly_errors(), api_client() as client:
        # One key per invocation: a retry inside the client can never make two jobs.
        job = client.submit(body, idempotency_key=str(uuid.uuid4()))
    emit(job, as_json, lambda j: console.print(f"submitted job [bold]{j['id']}[/] ({j['state']})"))


def _jobs_table(jobs: list[dict[str, Any]]) -> None:
    table = Table("ID", "Name", "State", "GPUs", "Type", "Reason / detail")
    for j in jobs:
        why = j["reason_detail"] if j["state"] in ("PENDING", "FAILED", "TIMEOUT") else ""
        table.add_row(
            str(j["id"]),
            j["name"],
            j["state"],
            str(j["gpus_per_node"] * j["nodes"]),
            j["gpu_type"],
            (f"{j['reason']}: " if j["reason"] else "") + why,
        )
    console.print(table)


@app.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", "-s")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your jobs and your projects' jobs, newest first."""
    with friendly_errors(), api_client() as client:
        jobs = client.jobs(state, limit)
    emit(jobs, as_json, _jobs_table)


@app.command()
def show(job_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one job, and why it waits if it does."""
    with friendly_errors(), api_client() as client:
        job = client.job(job_id)

    def render(j: dict[str, Any]) -> None:
        for key in (
            "id",
            "name",
            "state",
            "reason",
            "reason_detail",
            "command",
            "gpu_type",
            "gpus_per_node",
            "nodes",
            "time_limit_s",
            "submitted_at",
            "started_at",
            "ended_at",
            "exit_code",
            "placement",
        ):
            console.print(f"[bold]{key:>14}[/] {j.get(key)}", highlight=False)

    emit(job, as_json, render)


@app.command()
def logs(
    job_id: int,
    stderr: Annotated[bool, typer.Option("--stderr", help="show standard error")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="until the job ends")] = False,
) -> None:
    """Print a job's output."""
    stream = "stderr" if stderr else "stdout"
    with friendly_errors(), api_client() as client:
        if follow:
            for chunk in client.follow_log(job_id, stream):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            return
        offset = 0
        while True:
            chunk, offset, _ = client.log_chunk(job_id, stream, offset)
            if not chunk:
                break
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


@app.command()
def cancel(job_id: int) -> None:
    """Cancel a job: a pending one at once, a running one with SIGTERM then SIGKILL."""
    with friendly_errors(), api_client() as client:
        job = client.cancel(job_id)
    console.print(f"job {job['id']}: {job['state']} {job['reason_detail']}", highlight=False)
