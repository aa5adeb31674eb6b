"""One typed Settings object for the whole process, read from GPUCENTER_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpucenter.domain.messages import msg


class Settings(BaseSettings):
    """Configuration; every field can be set as GPUCENTER_<NAME>, e.g. GPUCENTER_DATABASE_URL."""

    model_config = SettingsConfigDict(env_prefix="GPUCENTER_", extra="ignore")

    var_dir: Path = Field(default=Path("var"), description="where state lives by default")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file under var_dir",
    )
    site_file: Path | None = Field(
        default=None,
        description="YAML description of the local site; empty means the built-in demo site",
    )
    sites_file: Path | None = Field(
        default=None,
        description="YAML listing the sites and their dispatchers (local, slurm or "
        "kubernetes); "
        "empty: one site from site_file and the dispatcher setting",
    )
    dispatcher: Literal["local", "slurm", "kubernetes"] = Field(
        default="local",
        description="the one site's dispatcher when there is no sites_file; slurm reads "
        "GPUCENTER_SLURM_* (conf, cluster, partition, log_dir...), kubernetes "
        "GPUCENTER_KUBERNETES_* (kubeconfig, namespace_prefix, kueue...)",
    )
    slurm_sync_interval_s: float = Field(
        default=300.0,
        ge=0,
        description="how often the scheduler leader applies the account sync to each Slurm "
        "site; 0: never (run 'gpucenter slurm sync --apply' by hand)",
    )
    usage_ingest_interval_s: float = Field(
        default=300.0,
        ge=0,
        description="how often the scheduler leader reads each Slurm site's usage (sacct) "
        "into the ledger; 0: never (run 'gpucenter slurm usage' by hand)",
    )
    use_check: Literal["daily", "weekly", "monthly", "never"] = Field(
        default="monthly",
        description="how often the leader runs the use-it-or-lose-it check and tells the "
        "projects of under-used awards",
    )
    leader_lease_s: float = Field(
        default=6.0,
        gt=0,
        description="the scheduler leader renews its lease this often x 4; a leader silent "
        "for longer (paused, cut off) is replaced (takeover well within 15 s at 6)",
    )
    kubernetes_sync_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="how often the scheduler leader syncs each Kubernetes site's namespaces, "
        "quotas, queues and roles (applied where the site's apply_sync says so); 0: never",
    )
    fair_share_policy: Literal["fair-tree", "classic"] = Field(
        default="fair-tree",
        description="how the share tree ranks projects: Slurm's Fair Tree, or its classic "
        "2^(-usage/shares) formula",
    )
    programme_shares: dict[str, float] = Field(
        default_factory=dict,
        description='fair-share weight per programme (JSON, e.g. {"foundation": 40}); a '
        "programme not named weighs the GPU-hours of its projects' current allocations",
    )
    programme_entitlements: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='GPUs each programme owns per GPU type (JSON, e.g. {"foundation": '
        '{"h100": 4096}}); beyond them its jobs borrow, preemptibly. Empty: no borrowing',
    )
    # Tenant isolation on local sites (README "Security model"): who a job runs as.
    isolation: Literal["auto", "multi_tenant", "single_user"] = Field(
        default="auto",
        description="multi_tenant: every job runs as its owner's Unix account in a bubblewrap "
        "sandbox (needs root); single_user: every job runs as the server's own user, allowed "
        "only while the site has at most one organisation; auto: multi_tenant when the "
        "server runs as root, else single_user",
    )
    single_user_owner: str | None = Field(
        default=None,
        description="single_user only: the one gpucenter user whose jobs this server runs (as "
        "its own Unix user), whatever the number of organisations; other users' jobs wait. "
        "`make run` names the demo user",
    )
    isolation_uid_min: int = Field(
        default=200_000, ge=1000, description="first uid/gid of the accounts gpucenter makes"
    )
    isolation_uid_max: int = Field(default=299_999, description="last uid/gid it may use")
    isolation_user_prefix: str = Field(default="gpc-", description="its user account names")
    isolation_group_prefix: str = Field(default="gpcp-", description="its project group names")
    tenant_dir: Path | None = Field(
        default=None,
        description="where tenants' directories live: homes/, projects/ (shared spaces) and "
        "jobs/ (each run's output and working directory); empty: <var_dir>/tenants. Never "
        "under /var/lib, /var/spool, /var/log, /root or /home (jobs never get those writable)",
    )
    isolation_hidden_paths: list[str] = Field(
        default_factory=list,
        description="more paths jobs must never see (configuration, secrets); the state "
        "directory and the site files are hidden anyway",
    )
    isolation_device_dir: Path = Field(
        default=Path("/dev"), description="where the GPU device files (nvidia<minor>) are"
    )
    isolation_extra_ro_paths: list[str] = Field(
        default_factory=list,
        description="more host directories jobs see read-only (a software tree, the Python "
        "environment interactive sessions run from)",
    )
    session_python: str = Field(
        default="",
        description="the interpreter interactive sessions run (with jupyterlab installed), as "
        "jobs see it; empty: interactive sessions are off",
    )
    session_idle_timeout_s: int = Field(
        default=3600, ge=60, description="an interactive session with no activity this long ends"
    )
    isolation_share_network: bool = Field(
        default=True, description="jobs share the host's network (off: loopback only)"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    scheduler_interval_s: float = Field(default=1.0, gt=0)
    scheduler_enabled: bool = True
    scheduler_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="with `serve --workers 2` or more: the scheduler process's niceness, so "
        "that on a busy host requests (someone waits on each) get the CPU before a pass (the "
        "next pass catches up); jobs of the local site inherit it; 0: as the server",
    )
    test_pass_pause_s: float = Field(
        default=0.0,
        ge=0,
        description="tests only: hold each scheduling pass's decisions uncommitted this long",
    )
    kill_grace_s: float = Field(default=5.0, ge=0)
    api_url: str = Field(
        default="",
        description="where the CLI finds the API; empty: the CLI profile's url (see "
        "cli/profiles.py), else this server's own host and port",
    )
    token: str = Field(default="", description="API token the CLI sends")
    # Security: browser sessions, sign-in limits and single sign-on (see gpucenter/auth).
    cookie_secure: bool = Field(
        default=True, description="send session cookies over HTTPS only (localhost is fine)"
    )
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    signin_max_failures: int = Field(
        default=5,
        ge=1,
        description="failed sign-ins from one address (or one known browser) before that "
        "username and address pair is locked",
    )
    signin_lockout_s: float = Field(
        default=300.0, ge=0, description="the first lock of a pair; each repeat doubles it"
    )
    signin_lockout_max_s: float = Field(
        default=3600.0, ge=0, description="the longest a pair or username is locked"
    )
    signin_user_max_failures: int = Field(
        default=20,
        ge=1,
        description="failed sign-ins for one username from anywhere within "
        "signin_user_window_s before only known devices and second factors get in",
    )
    signin_user_window_s: float = Field(default=3600.0, gt=0)
    signin_known_addresses: bool = Field(
        default=True,
        description="an address a user signed in from before counts as a known device for "
        "the API and CLI; turn off behind a proxy that hides client addresses",
    )
    signin_device_days: int = Field(
        default=180, ge=1, le=3660, description="how long a browser stays a known device"
    )
    signin_rate_per_minute: int = Field(
        default=30, ge=1, description="sign-in and token requests per client address a minute"
    )
    token_days_max: int = Field(default=365, ge=1, le=3660)
    token_cache_ttl_s: float = Field(
        default=2.0, ge=0, description="seconds a resolved API token is reused in a process; 0: off"
    )
    submit_fast_path: bool = Field(
        default=True,
        description="answer POST /api/v1/jobs in a raw-ASGI handler before FastAPI routing "
        "(same checks and answers; off: the FastAPI route answers)",
    )
    submit_pool_size: int = Field(
        default=4,
        ge=1,
        le=64,
        description="async PostgreSQL connections per server process for job submissions",
    )
    oidc_issuer: str = Field(default="", description="OpenID Connect issuer URL; empty: no SSO")
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_create_users: bool = Field(
        default=False, description="create a local user on a first SSO sign-in"
    )
    # The portal shows times in this zone (stored and sent over the API in UTC).
    display_timezone: str = Field(default="Asia/Seoul", description="IANA zone for web pages")

    @model_validator(mode="after")
    def _api_url_from_port(self) -> Settings:
        """One place for the port: without GPUCENTER_API_URL the CLI talks to the address
        the server binds (GPUCENTER_HOST, GPUCENTER_PORT), not to a fixed 8000."""
        if not self.api_url:
            host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            self.api_url = f"http://{host}:{self.port}"
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'gpucenter.db').resolve()}"

    @property
    def log_dir(self) -> Path:
        """The local dispatcher's own state (its spool of status files): server only."""
        return self.var_dir / "jobs"

    @property
    def tenant_root(self) -> Path:
        """Homes, project spaces and job directories (`tenant_dir`, by default in var_dir)."""
        return self.tenant_dir if self.tenant_dir is not None else self.var_dir / "tenants"


class SettingsError(ValueError):
    """Settings that cannot be used, said as the variables to fix (never a traceback): the
    person who set GPUCENTER_PORT=eighty reads which variable and what it should be."""

    def __init__(self, problems: str) -> None:
        super().__init__(msg("error.cli_settings", problem=problems).english())
        self.problems = problems


def _describe(exc: ValidationError) -> str:
    """One clause per bad setting, named as its environment variable. The value is not
    repeated: a setting may hold a secret, and the person who set it knows it."""
    clauses = []
    for error in exc.errors():
        where = error.get("loc") or ()
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        clauses.append(f"GPUCENTER_{str(where[0]).upper()}: {message}" if where else message)
    return "; ".join(clauses)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; SettingsError (saying which variable is wrong) if unusable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
