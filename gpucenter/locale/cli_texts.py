"""The command line's own words (table headers, field labels, wait reasons), in English as
the CLI prints them; `gpucenter.cli.common.tr` translates them with the catalogues, and the
catalogue check (through `sources.all_texts`) makes sure each has its Korean."""

from __future__ import annotations

CLI_TEXTS: tuple[str, ...] = (
    # job show: the job's fields and the pending answer
    "id", "name", "state", "command", "gpu_type", "gpus_per_node", "nodes", "time_limit_s",
    "qos", "image", "template", "array_job_id", "array_index", "after_ok", "submitted_at",
    "started_at", "ended_at", "exit_code", "placement", "env", "waiting", "queue", "start",
    "sooner", "detail", "priority", "fairshare", "age", "jobsize",
    # the core's wait reasons, shown before the scheduler's sentence
    "Resources", "Priority", "Reservation", "AllocationExhausted", "QuotaLimit", "Topology",
    "Dependency", "SiteUnavailable", "New",
    # table headers
    "ID", "Name", "State", "GPUs", "Type", "QoS", "Reason / detail", "Project", "Alloc",
    "GPU-hours", "Used", "Remaining", "Burn/day", "Runs out", "Ends", "User", "GPU type",
    "Jobs", "Template", "Title", "Fields (--set NAME=VALUE)",
    # gpucenter award: headers, what was done, award and agreement states
    "Agreement", "Respond by", "countersign", "Accepted", "Declined", "Countersigned",
    "offered", "active", "declined", "lapsed", "completed", "revoked", "awaiting_pi",
    "awaiting_countersignature", "in_force", "pending", "exhausted", "expired", "suspended",
    "withdrawn",
)  # fmt: skip

__all__ = ["CLI_TEXTS"]
