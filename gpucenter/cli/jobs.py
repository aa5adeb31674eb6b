"""`gpucenter job ...`: what a member does, through the REST API (via the Python SDK)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gpucenter.cli.common import (
    api_client,
    console,
    emit,
    err_console,
    fail,
    friendly_errors,
    parse_duration,
    say,
    tr,
    when,
)
from gpucenter.client import ENDED, Client
from gpucenter.config import get_settings
from gpucenter.domain.messages import msg

app = typer.Typer(
    help="Submit, watch and cancel jobs.", no_args_is_help=True, pretty_exceptions_enable=False
)


def _parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"{option} expects NAME=VALUE, got {pair!r}", 2)
        found[key] = value
    return found


def _after_ok(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.replace(":", ",").split(",") if v.strip()]
    except ValueError:
        fail(f"--after-ok expects job ids such as 12,13; got {text!r}", 2)


@app.command()
def submit(
    command: Annotated[
        list[str] | None,
        typer.Argument(help="the command to run (after --), or the path of a job script"),
    ] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="project")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", "-g", help="GPUs per node")] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", "-N")] = None,
    gpu_type: Annotated[str | None, typer.Option("--gpu-type", "-t")] = None,
    time: Annotated[str | None, typer.Option("--time", help="90, 30m, 2h, 1:00:00")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    workdir: Annotated[str | None, typer.Option("--workdir")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE")] = None,
    qos: Annotated[str | None, typer.Option("--qos", help="normal or opportunistic")] = None,
    image: Annotated[str | None, typer.Option("--image", help="container image")] = None,
    array: Annotated[str | None, typer.Option("--array", help="0-9, 1,3,5, 0-20:5")] = None,
    after_ok: Annotated[str | None, typer.Option("--after-ok", help="job ids")] = None,
    script: Annotated[Path | None, typer.Option("--script", help="a job script")] = None,
    template: Annotated[str | None, typer.Option("--template", help="template name")] = None,
    field: Annotated[
        list[str] | None, typer.Option("--set", help="template field NAME=VALUE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    parsable: Annotated[
        bool, typer.Option("--parsable", help="print only the job's id (for a shell variable)")
    ] = False,
) -> None:
    """Submit a job: a command, a script with #GPUCENTER directives, or a template.

    Examples: gpucenter job submit -p demo -g 2 -- python train.py;
    gpucenter job submit train.sh; gpucenter job submit --template pytorch-ddp --set script=t.py
    """
    words = command or []
    if script is None and len(words) == 1:
        if Path(words[0]).is_file():
            script = Path(words[0])
            words = []
        elif "--" not in sys.argv and _looks_like_path(words[0]):
            # `job submit /no/such/file.sh` is a typo, not a command named like a file: say
            # so rather than run it and fail in the queue. After `--` it is a command.
            fail(say(msg("error.script_missing", path=words[0])), 2)
    if template is not None and workdir is None and _shares_files_with_server():
        # A template's fields name files relative to where the user stands (pytorch-ddp's
        # script=train.py): by default the job runs in the directory it was submitted from.
        workdir = str(Path.cwd())
    body: dict[str, Any] = {
        "project": project,
        "gpus_per_node": gpus,
        "nodes": nodes,
        "gpu_type": gpu_type,
        "time_limit_s": parse_duration(time) if time is not None else None,
        "name": name,
        "workdir": workdir,
        "env": _parse_pairs(env, "--env") if env else None,
        "qos": qos,
        "image": image,
        "array": array,
        "after_ok": _after_ok(after_ok),
        "template": template,
        "fields": _parse_pairs(field, "--set") if field else None,
    }
    if script is not None:
        if words:
            fail("give either a command or a script, not both", 2)
        if not script.is_file():
            fail(say(msg("error.script_missing", path=str(script))), 2)
        try:
            body["script"] = script.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read script {script}: {exc}", 2)
    elif words:
        body["command"] = " ".join(words)
    elif template is None:
        fail("nothing to run: give a command after --, a script, or --template", 2)
    body = {k: v for k, v in body.items() if v is not None}
    with friendly_errors(), api_client() as client:
        # One key per invocation: a retry inside the client can never make two jobs.
        job = client.submit(body, idempotency_key=str(uuid.uuid4()))

    if parsable:
        console.print(str(job["id"]), highlight=False)
        return

    def render(j: dict[str, Any]) -> None:
        tasks = j.get("array_task_ids")
        if tasks:
            console.print(f"submitted array job {j['id']}: tasks {tasks[0]}..{tasks[-1]}")
        else:
            console.print(f"submitted job [bold]{j['id']}[/] ({j['state']})")
        if template is not None and body.get("workdir"):
            console.print(f"working directory: {body['workdir']}", highlight=False)

    emit(job, as_json, render)


def _looks_like_path(word: str) -> bool:
    return not any(c.isspace() for c in word) and (
        "/" in word or word.endswith((".sh", ".bash", ".py", ".slurm"))
    )


def _shares_files_with_server() -> bool:
    """The server is on this machine (a loopback address), so a directory here is one the
    server can see: the only case in which the CLI may name one by default."""
    from urllib.parse import urlparse

    host = urlparse(get_settings().api_url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _jobs_table(jobs: list[dict[str, Any]]) -> None:
    table = Table(*map(tr, ("ID", "Name", "State", "GPUs", "Type", "QoS", "Reason / detail")))
    for j in jobs:
        shown = j["state"] in ("PENDING", "FAILED", "TIMEOUT")
        why = say(j.get("reason_message"), j["reason_detail"]) if shown else ""
        table.add_row(
            str(j["id"]),
            j["name"],
            tr(j["state"]),
            str(j["gpus_per_node"] * j["nodes"]),
            j["gpu_type"],
            j.get("qos", ""),
            (f"{tr(j['reason'])}: " if j["reason"] else "") + why,
        )
    console.print(table)


@app.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", "-s")] = None,
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List your jobs and your projects' jobs, newest first."""
    with friendly_errors(), api_client() as client:
        jobs = client.jobs(state, limit, project)
    emit(jobs, as_json, _jobs_table)


_TIMES = ("submitted_at", "started_at", "ended_at")


def _render_job(j: dict[str, Any], why: dict[str, Any] | None = None) -> None:
    for key in (
        "id", "name", "state", "command", "gpu_type", "gpus_per_node", "nodes",
        "time_limit_s", "qos", "image", "template", "array_job_id", "array_index",
        "after_ok", "submitted_at", "started_at", "ended_at", "exit_code", "placement",
    ):  # fmt: skip
        if j.get(key) not in (None, [], ""):
            value = when(j[key]) if key in _TIMES else j.get(key)
            value = tr(str(value)) if key == "state" else value
            console.print(f"[bold]{tr(key):>14}[/] {value}", highlight=False)
    for name, value in (j.get("env") or {}).items():  # masked unless it is your own job
        console.print(f"[bold]{tr('env'):>14}[/] {name}={value}", highlight=False)
    if j["state"] == "PENDING":
        detail = say(j.get("reason_message"), j["reason_detail"])
        if why is not None:
            _render_pending(why)
        console.print(f"[bold]{tr('detail'):>14}[/] {tr(j['reason'])}: {detail}", highlight=False)
        factors = j.get("priority_factors")
        if factors:
            table = Table(
                tr("priority"), *[tr(k) for k in factors if k != "priority"], title=tr("priority")
            )
            table.add_row(
                f"{factors['priority']:.4f}",
                *[f"{v:.4f}" for k, v in factors.items() if k != "priority"],
            )
            console.print(table)
    elif j["reason_detail"]:
        detail = say(j.get("reason_message"), j["reason_detail"])
        console.print(f"[bold]{tr('detail'):>14}[/] {detail}", highlight=False)


def _render_pending(why: dict[str, Any]) -> None:
    """The answer to "why is my job pending": the sentence, the queue, the start, advice."""
    console.print(f"[bold]{tr('waiting'):>14}[/] {say(why['sentence'])}", highlight=False)
    position = msg(
        "pending.position", position=why["position"], total=why["waiting"], gpu_type=why["gpu_type"]
    )
    console.print(f"[bold]{tr('queue'):>14}[/] {say(position)}", highlight=False)
    start = (
        msg("pending.no_estimate")
        if why["expected_start"] is None
        else msg("pending.expected", start=when(why["expected_start"]))
    )
    console.print(f"[bold]{tr('start'):>14}[/] {say(start)}", highlight=False)
    for n, item in enumerate(why["sooner"]):
        label = tr("sooner") if n == 0 else ""
        console.print(f"[bold]{label:>14}[/] {say(item, item['text'])}", highlight=False)


@app.command()
def show(job_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one job; a waiting one says why it waits (in one sentence), where it stands among
    jobs of its GPU type, when it is expected to start, what would start it sooner, and how
    its priority is made up."""
    with friendly_errors(), api_client() as client:
        job = client.job(job_id)
        why = _pending_of(client, job)
    if as_json:
        emit({**job, "pending": why}, True, print)
    else:
        _render_job(job, why)


def _pending_of(client: Client, job: dict[str, Any]) -> dict[str, Any] | None:
    if job["state"] != "PENDING":
        return None
    from gpucenter.client import ApiError

    try:
        return client.pending(int(job["id"]))
    except ApiError as exc:
        if exc.status == 409:  # it started in the meantime
            return None
        raise


@app.command()
def logs(
    job_id: int,
    stderr: Annotated[bool, typer.Option("--stderr", help="show standard error")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="until the job ends")] = False,
) -> None:
    """Print a job's output; with --follow, stream it until the job ends. When the job failed
    (or timed out, or was cancelled), its standard error follows, on standard error."""
    stream = "stderr" if stderr else "stdout"
    with friendly_errors(), api_client() as client:
        if follow:
            for text in client.follow_log(job_id, stream):
                sys.stdout.write(text)
                sys.stdout.flush()
        else:
            _copy_log(client, job_id, stream, sys.stdout.buffer)
        sys.stdout.flush()
        if not stderr:
            _stderr_if_failed(client, job_id)


def _copy_log(client: Client, job_id: int, stream: str, out: Any) -> int:
    offset = 0
    while True:
        chunk, offset, _ = client.log_chunk(job_id, stream, offset)
        if not chunk:
            return offset
        out.write(chunk)


def _stderr_if_failed(client: Client, job_id: int) -> None:
    """A failed job's error is usually on standard error: show it rather than leave the
    user looking at an empty log, and say where it is when it is empty too."""
    job = client.job(job_id)
    if job["state"] not in ENDED or job["state"] == "COMPLETED":
        return
    detail = say(job.get("reason_message"), job.get("reason_detail") or "")
    err_console.print(
        f"--- job {job_id} ended {job['state']}"
        + (f" (exit code {job['exit_code']})" if job.get("exit_code") is not None else "")
        + (f": {detail}" if detail else "")
        + "; its standard error follows ---",
        highlight=False,
        markup=False,
    )
    sys.stderr.flush()
    written = _copy_log(client, job_id, "stderr", sys.stderr.buffer)
    sys.stderr.flush()
    if not written:
        err_console.print(
            f"(standard error is empty; 'gpucenter job logs {job_id} --stderr' shows it)",
            highlight=False,
            markup=False,
        )


@app.command()
def cancel(job_id: int) -> None:
    """Cancel a job: a pending one at once, a running one with SIGTERM then SIGKILL."""
    with friendly_errors(), api_client() as client:
        job = client.cancel(job_id)
    detail = say(job.get("reason_message"), job["reason_detail"])
    console.print(f"job {job['id']}: {tr(job['state'])} {detail}", highlight=False)


@app.command()
def templates(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The job templates published in this centre, with their fields."""
    with friendly_errors(), api_client() as client:
        found = client.templates()

    def render(items: list[dict[str, Any]]) -> None:
        table = Table(*map(tr, ("Template", "Title", "Fields (--set NAME=VALUE)")))
        for t in items:
            fields = ", ".join(
                f"{f['name']}{'*' if f['required'] else ''}"
                + (f"={f['default']}" if f["default"] is not None else "")
                for f in t["fields"]
            )
            table.add_row(t["name"], tr(t["title"]), fields)
        console.print(table)

    emit(found, as_json, render)
