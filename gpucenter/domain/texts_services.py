"""English of the refusals of accounts, sign-in, accounting, sessions, sites and settings.

Why a module of its own: see `texts_programmes.py`. `ENGLISH` merges this dict; the Korean
is in `gpucenter/locale/ko/service_errors.po`. The English is what these refusals said
before they had codes (tests and API clients compare it), so a template here changes only
when the refusal's words are meant to change.
"""

from __future__ import annotations

SERVICE_ERRORS: dict[str, str] = {
    # Numbers, names and forms shared by several modules.
    "error.more_than_zero": "must be more than 0",
    "error.between": "must be between %(low)s and %(high)s",
    "error.use_one_of": "use one of %(allowed)s",
    "error.must_be_list": "must be a list",
    "error.positive_int": "must be a positive whole number, got %(got)s",
    "error.cannot_read_file": "cannot read %(path)s: %(problem)s",
    "error.control_character": (
        "contains the control character %(char)s; only printable text, tabs and line "
        "ends are accepted"
    ),
    "error.not_duration": "%(text)s is not a duration; try 90, 30m, 2h or 1:30:00",
    # Accounting: rate cards, reports, ledger, budgets, use-it-or-lose-it.
    "error.fiscal_year_range": "must be a year between 2000 and 2100",
    "error.month_form": "use YYYY-MM, not %(got)s",
    "error.unknown_dimension": "unknown dimension %(name)s; use %(allowed)s",
    "error.on_exhausted": "use 'hold' or 'opportunistic'",
    "error.usage_source": "every usage record needs its source",
    "error.reason_ledger": "say why, for the ledger and the audit log",
    "error.reason_audit": "say why, for the audit log",
    "error.adjust_kind": "use refund_job_run or transfer for those kinds",
    "error.adjust_key": "an idempotency key makes a retried adjustment harmless",
    "error.transfer_same": "a transfer needs two different allocations",
    "error.transfer_key": "an idempotency key makes a retried transfer harmless",
    "error.reclaim_too_much": "only %(left)s GPU-hours are unused; reclaim at most that",
    "error.offer_same_call": "offer only to an application of the same call",
    # Roles, scopes and permissions.
    "error.unknown_role": "unknown role %(role)s",
    "error.cannot_grant_role": "you cannot grant %(role)s",
    "error.cannot_revoke_role": "you cannot revoke %(role)s",
    "error.cannot_grant_revoke_role": "you cannot grant or revoke %(role)s",
    "error.unknown_state": "unknown state; use one of %(allowed)s",
    "error.scopes_empty": "name at least one scope, e.g. jobs:read",
    "error.unknown_scope": "unknown scope %(scope)s",
    "error.cannot_grant_scope": "you cannot grant the scope %(scope)s",
    "error.needs_centre_admin": "this action needs the centre admin role",
    "error.needs_permission": "this needs the %(permission)s permission",
    "error.needs_admin_or_operator": "this needs the centre admin or site operator role",
    "error.ledger_adjust_role": (
        "adjusting the ledger needs the centre admin or programme manager role"
    ),
    "error.rate_cards_admin": "rate cards are set by centre admins",
    "error.reports_role": "reports are for centre admins and programme managers",
    "error.reports_for": "reports are for programme managers, site operators and admins",
    "error.call_not_managed": "this call belongs to a programme you do not manage",
    # The portal's forms and the API's credentials (same words as before: no enumeration).
    "error.form_expired": "the form expired or came from another site; reload and retry",
    "error.form_cross_site": "the form came from another site",
    "error.bearer_missing": (
        "send 'Authorization: Bearer <token>'; get a token with gpucenter login"
    ),
    "error.wrong_credentials": "wrong username or password (or second-factor code)",
    "error.token_expired": "token expired; sign in again for a new one",
    "error.not_current_password": "is not your current password",
    "error.token_name": "up to 100 letters, digits, spaces or . : @ _ -",
    "error.sso_not_registered": (
        "this single sign-on identity is not registered here; ask a centre admin"
    ),
    "error.sso_wrong_issuer": "the provider's answer was not for this centre",
    "error.identity_linked": "that identity is already linked to another user",
    "error.totp_invalid": "not a valid current code from your authenticator",
    "error.mfa_already_on_first": "a second factor is already on; turn it off first",
    "error.mfa_start_first": "start the set-up first",
    "error.mfa_already_on": "the second factor is already on",
    "error.mfa_not_on": "the second factor is not on",
    # Accounts, organisations, projects and allocations.
    "error.account_name": (
        "%(value)s is not allowed: use 2-64 lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter"
    ),
    "error.organisation_exists": "organisation %(name)s already exists",
    "error.user_exists": "user %(name)s already exists",
    "error.project_exists": "project %(name)s already exists",
    "error.unknown_org_kind": "unknown organisation kind %(kind)s; use one of %(allowed)s",
    "error.member_role": "must be 'pi' or 'member'",
    "error.gpu_hours_range": "must be more than 0 and at most %(most)s",
    "error.password_too_short": "is too short: use at least %(least)s characters",
    "error.password_too_long": "is too long: use at most %(most)s characters",
    "error.password_common": (
        "is one of the most common passwords (or one with digits or symbols added): "
        "choose one nobody else would"
    ),
    "error.password_repeated": (
        "repeats a short pattern or counts up or down ('abcabc...', '1234...'): choose another"
    ),
    "error.password_username": "must not be the username",
    "error.key_reused": "this Idempotency-Key was used for a different submission",
    # Job templates (YAML or JSON an admin loads).
    "error.template_mapping": "must be a mapping with name, title, fields and job",
    "error.template_name": "use 2-64 lowercase letters, digits or '-'",
    "error.template_field_name": "each field needs a name",
    "error.template_field_type": "must be one of %(types)s",
    "error.template_job": "must be a mapping with at least a command",
    "error.template_job_key": "unknown job key %(key)s",
    "error.template_unknown_ref": "refers to unknown field %(field)s",
    # Reservations and nodes.
    "error.reserve_too_many": "only %(count)s %(gpu_type)s GPUs can be reserved",
    "error.end_after_start": "must be after the start",
    "error.name_a_node": "must name at least one node",
    "error.unknown_node": "unknown node %(node)s",
    "error.duplicate_node": "duplicate node name %(node)s",
    # Backups and restores (the operator's `gpucenter-admin backup|restore`).
    "error.backup_in_memory": "an in-memory SQLite database cannot be backed up",
    "error.no_sqlite_database": "no SQLite database at %(path)s",
    "error.backup_unsupported": "backups of %(backend)s are not supported",
    "error.restore_unsupported": "restoring %(backend)s is not supported",
    "error.not_backup_file": "%(path)s is not a backup file",
    "error.unsound_sqlite": "%(path)s is not a sound SQLite database",
    "error.tool_missing": "%(tool)s is not installed; install the PostgreSQL client tools",
    "error.tool_failed": "%(tool)s: %(problem)s",
    # Site files and the sites file (the operator's configuration).
    "error.site_file_not_yaml": "not valid YAML: %(problem)s",
    "error.site_file_shape": "expected a mapping with 'site' and a list 'nodes'",
    "error.node_needs_name": "each node needs at least a 'name'",
    "error.gpu_type_required": "required when 'gpus' is a number",
    "error.sites_file_shape": "expected a mapping with a non-empty list 'sites'",
    "error.site_needs_name": "each site needs a 'name'",
    "error.site_kind": "use one of %(kinds)s, not %(kind)s",
    "error.site_settings_mapping": "expected a mapping of settings",
    "error.site_settings": "%(problem)s",
    "error.site_names_unique": "site names must be unique: %(names)s",
    "error.slurm_no_answer": "Slurm does not answer and no nodes are known: %(problem)s",
    "error.sinfo_no_gpus": "sinfo lists no node with GPUs (gres gpu)",
    "error.k8s_no_answer": "the API server does not answer, no nodes known: %(problem)s",
    "error.cluster_no_gpus": "the cluster has no node with GPUs to place on",
    "error.node_in_two_sites": (
        "node %(node)s is in both %(first)s and %(second)s: node names must be unique over "
        "all sites"
    ),
    # Sign-in limits (services/identity/ratelimit.py, signin.py): say no more than before.
    "error.rate_address": "too many requests from this address; slow down",
    "error.rate_pair": (
        "too many failed sign-ins for this account from this address; try again later, or "
        "sign in from a device you have used before"
    ),
    "error.rate_user": (
        "too many failed sign-ins for this account from devices it has not used before: sign "
        "in from a browser or address you signed in from before, or with your second-factor "
        "code"
    ),
}
