"""Tenant isolation for the local executor (issue 17): who a job runs as, what it can see,
and what the server may safely read on its behalf.

- `unix_accounts`: provision Unix accounts and project groups by reconciliation; resolve
  a job's identity (`job_identity`).
- `mode`: whether this server may start jobs at all, and how (`decide_mode`).
- `sandbox`: the bubblewrap command that runs a job as its owner (`prepare_sandbox`,
  `start_sandboxed`); `status`: its status file, adoption proof, ending it, the probe.
- `safe_files`: log reads that cannot be steered, owner-owned output directories, 0700/0600
  server state.

The README's "Security model" section says how the local dispatcher uses them.
"""

from gpucenter.dispatch.isolation.identity import RunAs
from gpucenter.dispatch.isolation.mode import IsolationSetting, ModeDecision, RunMode, decide_mode
from gpucenter.dispatch.isolation.safe_files import (
    JobOutput,
    Tail,
    UnsafeFile,
    append_to_owned_file,
    ensure_private_dir,
    ensure_private_file,
    make_owned_dir,
    owner_of_dir,
    prepare_job_output,
    read_range,
    read_tail,
    write_private_file,
)
from gpucenter.dispatch.isolation.sandbox import (
    PreparedSandbox,
    SandboxError,
    SandboxJob,
    SandboxPolicy,
    job_environment,
    prepare_sandbox,
    shell_command,
    start_sandboxed,
)
from gpucenter.dispatch.isolation.status import (
    SandboxStatus,
    device_minors,
    kill_sandbox,
    read_sandbox_status,
    sandbox_is_ours,
    sandbox_problem,
)
from gpucenter.dispatch.isolation.unix_accounts import (
    AccountPolicy,
    IdentityError,
    ProvisioningResult,
    TenantProject,
    TenantUser,
    job_identity,
    owner_identity,
    provision,
)

__all__ = [
    "AccountPolicy",
    "IdentityError",
    "IsolationSetting",
    "JobOutput",
    "ModeDecision",
    "PreparedSandbox",
    "ProvisioningResult",
    "RunAs",
    "RunMode",
    "SandboxError",
    "SandboxJob",
    "SandboxPolicy",
    "SandboxStatus",
    "Tail",
    "TenantProject",
    "TenantUser",
    "UnsafeFile",
    "append_to_owned_file",
    "decide_mode",
    "device_minors",
    "ensure_private_dir",
    "ensure_private_file",
    "job_environment",
    "job_identity",
    "kill_sandbox",
    "make_owned_dir",
    "owner_identity",
    "owner_of_dir",
    "prepare_job_output",
    "prepare_sandbox",
    "provision",
    "read_range",
    "read_sandbox_status",
    "read_tail",
    "sandbox_is_ours",
    "sandbox_problem",
    "shell_command",
    "start_sandboxed",
    "write_private_file",
]
