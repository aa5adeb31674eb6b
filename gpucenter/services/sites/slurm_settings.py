"""A Slurm site's settings: where its configuration is, its cluster, accounts and logs."""

from __future__ import annotations

from pathlib import Path

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

    def cli(self) -> SlurmCli:
        return SlurmCli(slurm_conf=self.conf, timeout_s=self.timeout_s)


__all__ = [
    "SlurmSettings",
]
