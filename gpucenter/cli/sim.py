"""`gpucenter sim`: replay a trace on a cluster spec and report (run, compare)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(
    help="Trace-driven simulator and capacity planner.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

TraceOpt = Annotated[Path | None, typer.Option("--trace", help="Trace file to replay.")]
FormatOpt = Annotated[str, typer.Option("--format", help="philly, tiresias or csv.")]
ClusterOpt = Annotated[Path, typer.Option("--cluster", help="Cluster spec YAML.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory for report.html, JSON, CSV.")]
ReserveOpt = Annotated[
    list[str] | None,
    typer.Option("--reserve", help="TYPE=GPUS, e.g. foundation=4096 (repeatable)."),
]
SynthOpt = Annotated[int, typer.Option("--synthetic", help="Generate N synthetic jobs instead.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the synthetic generator.")]
LoadOpt = Annotated[float, typer.Option("--load", help="Synthetic offered load (x capacity).")]
BackfillOpt = Annotated[
    float | None,
    typer.Option(
        "--backfill-interval",
        min=0.0,
        help="Policy ours: simulated seconds between backfill passes, quick passes in "
        "between (Slurm's bf_interval); default: the core policy's, as the server runs it "
        "(0 = a backfill pass at every pass).",
    ),
]


def _load(trace: Path | None, fmt: str, synthetic: int, seed: int, load: float, gpus: int) -> Any:
    from gpucenter.sim.traces import TraceError, load_trace, synthetic_trace

    if synthetic:
        return synthetic_trace(synthetic, gpus, seed=seed, load=load)
    if trace is None:
        raise typer.BadParameter("give --trace PATH or --synthetic N")
    try:
        return load_trace(trace, fmt)
    except (TraceError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _reserve(items: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        kind, _, n = item.partition("=")
        if not kind or not n.isdigit():
            raise typer.BadParameter(f"--reserve wants TYPE=GPUS, got {item!r}")
        out[kind] = int(n)
    return out


def _run(
    policies: list[str],
    trace: Path | None,
    fmt: str,
    cluster: Path,
    out: Path,
    reserve: list[str] | None,
    synthetic: int,
    seed: int,
    load: float,
    backfill_interval_s: float | None,
) -> None:
    from gpucenter.sim.cluster import ClusterSpecError, load_cluster
    from gpucenter.sim.engine import RefusedJobsWarning, refusals, simulate
    from gpucenter.sim.metrics import compute_metrics
    from gpucenter.sim.policies import make_policy
    from gpucenter.sim.report import summary_rows, write_report

    try:
        spec = load_cluster(cluster)
        pols = [make_policy(p, backfill_interval_s=backfill_interval_s) for p in policies]
    except (ClusterSpecError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    jobs = _load(trace, fmt, synthetic, seed, load, spec.total_gpus)
    nodes = spec.nodes()
    res_kw = _reserve(reserve)
    refused = refusals(jobs, nodes)
    if refused:
        console.print(
            f"[yellow]warning:[/yellow] {len(refused)} job(s) can never run on "
            f"{spec.name} ({spec.total_gpus} GPUs) and are refused:"
        )
        for _, reason in refused:
            console.print(f"  {reason}", highlight=False)
    runs = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} jobs"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        for pol in pols:
            task = bar.add_task(f"{pol.name:6s}", total=len(jobs))

            def tick(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RefusedJobsWarning)  # said once, above
                res = simulate(jobs, nodes, pol, shares=spec.shares, reserve=res_kw, progress=tick)
            runs.append(compute_metrics(res, spec.shares))
    title = f"{spec.name}: {len(jobs)} jobs, {spec.total_gpus} GPUs"
    if refused:
        title += f", {len(refused)} refused"
    if res_kw:
        title += ", reserved " + ", ".join(f"{k}={v}" for k, v in res_kw.items())
    path = write_report(runs, out, title)
    for row in summary_rows(runs):
        typer.echo("  ".join(f"{c:>12s}" for c in row))
    typer.echo(f"report: {path}")


@app.command("run")
def run(
    cluster: ClusterOpt,
    trace: TraceOpt = None,
    fmt: FormatOpt = "csv",
    policy: Annotated[
        str, typer.Option("--policy", help="ours, fifo, easy, las or slurm.")
    ] = "ours",
    out: OutOpt = Path("sim-report"),
    reserve: ReserveOpt = None,
    synthetic: SynthOpt = 0,
    seed: SeedOpt = 0,
    load: LoadOpt = 0.9,
    backfill_interval: BackfillOpt = None,
) -> None:
    """Replay one trace under one policy and write the report."""
    _run([policy], trace, fmt, cluster, out, reserve, synthetic, seed, load, backfill_interval)


@app.command("compare")
def compare(
    cluster: ClusterOpt,
    trace: TraceOpt = None,
    fmt: FormatOpt = "csv",
    policies: Annotated[str, typer.Option("--policies")] = "ours,fifo,easy,las",
    out: OutOpt = Path("sim-compare"),
    reserve: ReserveOpt = None,
    synthetic: SynthOpt = 0,
    seed: SeedOpt = 0,
    load: LoadOpt = 0.9,
    backfill_interval: BackfillOpt = None,
) -> None:
    """Replay one trace under several policies in one run; one report side by side."""
    _run(
        [p for p in policies.split(",") if p],
        trace,
        fmt,
        cluster,
        out,
        reserve,
        synthetic,
        seed,
        load,
        backfill_interval,
    )
