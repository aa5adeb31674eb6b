"""A Slurm site's settings: where its configuration is, its cluster, accounts and logs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpucenter.dispatch.slurm.cli import SlurmCli


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
        description="jobs run under a project's account outside gpucenter (sbatch -A): "
        "charge them to the project's allocation, or flag them to the operator uncharged",
    )
    over_time_limit_min: int | None = Field(
        default=None,
        ge=0,
        description="the site's OverTimeLimit; empty: read from scontrol show config",
    )
    kill_wait_s: int | None = Field(
        default=None, ge=0, description="the site's KillWait; empty: read from scontrol"
    )

    def cli(self) -> SlurmCli:
        return SlurmCli(slurm_conf=self.conf, bin_dir=self.bin_dir, timeout_s=self.timeout_s)


__all__ = [
    "SlurmSettings",
]
