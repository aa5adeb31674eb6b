"""A Slurm site's settings: where its configuration is, its cluster, accounts and logs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpucenter.dispatch.slurm.cli import SlurmCli
from gpucenter.dispatch.slurm.marker import MarkerKey


class SlurmSettings(BaseSettings):
    """A Slurm site's settings, from GPUCENTER_SLURM_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="GPUCENTER_SLURM_", extra="ignore")

    conf: str | None = Field(default=None, description="slurm.conf of the site (SLURM_CONF)")
    cluster: str | None = Field(default=None, description="ClusterName; empty: ask scontrol")
    partition: str | None = None
    top_account: str = Field(default="gpucenter", description="all managed accounts sit here")
    log_dir: Path = Field(default=Path("var/slurm-jobs"), description="job output (shared)")
    run_as_owner: bool = Field(default=True, description="sbatch --uid=<job owner> (as root)")
    gpu_types: tuple[str, ...] = Field(
        default=(), description="GPU types of the site; allocations for others do not count"
    )
    timeout_s: float = 30.0
    bin_dir: str | None = Field(default=None, description="where sbatch etc. are; empty: PATH")
    foreign_jobs: Literal["charge", "flag"] = Field(
        default="charge",
        description="jobs found run under a project's account outside gpucenter (sbatch -A): "
        "charge them to the project's allocation and flag them (audit, the project's "
        "members told), or (flag) only flag them to the operator, uncharged",
    )
    outside_submissions: Literal["refuse", "flag"] = Field(
        default="refuse",
        description="refuse: the site's submit rule (gpucenter slurm submit-rule, "
        "job_submit/lua) refuses at sbatch any job in a project's account not submitted by "
        "gpucenter; flag: such jobs run, and the usage ingest charges and flags them",
    )
    submit_rule_dir: Path | None = Field(
        default=None,
        description="slurm.conf's directory where the server runs on the controller's host: "
        "the sync then keeps the submit rule (job_submit.lua) and this namespace's "
        "outside_submissions in step; empty: run gpucenter slurm submit-rule there",
    )
    marker_key_file: Path | None = Field(
        default=None,
        description="the server's secret for job markers (0600); empty: "
        "<var_dir>/secrets/slurm-marker.key",
    )
    over_time_limit_min: int | None = Field(
        default=None,
        ge=0,
        description="the site's OverTimeLimit; empty: read from scontrol show config",
    )
    kill_wait_s: int | None = Field(
        default=None, ge=0, description="the site's KillWait; empty: read from scontrol"
    )
    sessions_over_tcp: bool = Field(
        default=False,
        description="interactive sessions listen on TCP with TLS on their compute node (the "
        "server must reach the nodes' ports): for sites whose nodes are other machines than "
        "the server's; off: on a Unix socket in the owner's log directory, which the server "
        "reaches only where it is on the node's host",
    )

    def marker_key(self) -> MarkerKey:
        """The key of this site's job markers (made on first use), bound to its top account."""
        path = self.marker_key_file
        if path is None:  # the server's: beside the audit key ring under GPUCENTER_VAR_DIR
            from gpucenter.config import get_settings

            path = Path(get_settings().var_dir) / "secrets" / "slurm-marker.key"
        return MarkerKey.load_or_create(path, self.top_account)

    def cli(self) -> SlurmCli:
        return SlurmCli(slurm_conf=self.conf, bin_dir=self.bin_dir, timeout_s=self.timeout_s)


__all__ = [
    "SlurmSettings",
]
