"""English of the refusals of programmes, calls, applications, reviews and awards.

Why a module of its own: `domain/messages.py` holds the job path's and the scheduler's
texts; the award life cycle has many refusals of its own (deadlines, states, shares), and
keeping them here keeps each catalogue file short. `ENGLISH` merges this dict; the Korean
is in `gpucenter/locale/ko/programme_errors.po` (its msgids are these English texts, so a
change of a word here needs the same change there). A value from the data (a name, a state,
a number) is a parameter, never part of the template."""

from __future__ import annotations

PROGRAMME_ERRORS: dict[str, str] = {
    # What a refusal is about (a nested message inside another)
    "thing.award": "award %(id)s",
    "thing.agreement": "the agreement of award %(id)s",
    "thing.request": "request %(id)s",
    "thing.report": "report %(id)s",
    "thing.notice": "%(kind)s notice %(id)s",
    # Values of a form or a call's settings
    "error.value_positive": "must be more than 0",
    "error.value_at_least": "must be at least %(low)s",
    "error.value_between": "must be between %(low)s and %(high)s",
    "error.value_fraction": "must be more than 0 and at most 1",
    "error.value_number": "must be a number",
    "error.value_whole_or_none": "must be a whole number, or omitted",
    "error.value_empty": "must not be empty",
    "error.value_mapping": "must be a mapping",
    "error.value_whole_days": "must be a whole number of days",
    "error.settings_unknown": "unknown settings: %(names)s",
    "error.say_why_audit_pi": "say why, for the audit log and the PI",
    "error.say_why_audit": "say why, for the audit log",
    "error.say_why_applicant_audit": "say why, for the applicant and the audit log",
    "error.reason_long": "keep the reason under 2,000 characters",
    # Calls and applications: eligibility (allocation/eligibility.py, allocation/model.py)
    "error.call_not_open": "the call opens at %(at)s",
    "error.call_closed": "the call closed at %(at)s; it is too late",
    "error.applicant_type_unknown": "organisation kind %(kind)s is not an applicant type",
    "error.applicant_not_eligible": (
        "a %(kind)s is not eligible for this call (open to: %(allowed)s)"
    ),
    "error.award_kind_not_offered": "this call does not award %(kind)s",
    "error.region_missing": "give the organisation's region (e.g. busan)",
    "error.requests_empty": "ask for GPU-hours of at least one GPU type and period",
    "error.period_not_offered": "%(period)s is not offered (%(allowed)s)",
    "error.request_twice": "%(gpu_type)s %(period)s is asked for twice; merge them",
    "error.over_call_limit": (
        "%(total)s GPU-hours is more than this call's limit of %(limit)s per application"
    ),
    "error.min_gpu_hours": "must be more than 0 and at most the %(total)s GPU-hours asked",
    "error.gpu_type_not_offered": "%(gpu_type)s is not offered by this call (%(allowed)s)",
    "error.tags_unknown": "unknown tags %(tags)s; use: %(allowed)s",
    "error.lease_incomplete": "a lease application needs gpu_type, gpus and a window",
    "error.lease_too_many_gpus": "at most %(limit)s GPUs may be leased in this call",
    "error.lease_outside_periods": (
        "the lease window must lie within the call's periods (%(first)s to %(last)s)"
    ),
    "error.period_format": "%(period)s is not a quarter; write it like 2026Q3",
    "error.lease_min_gpus": "must be between 1 and the GPUs requested",
    "error.lease_end_before_start": "must be after the start",
    "error.lease_exactly_one": "a lease application asks for exactly one lease",
    "error.requests_needed": "a GPU-hours application needs at least one request",
    "error.shares_types_missing": "name at least one applicant type",
    "error.min_share_over_max": "must not exceed max_share",
    "error.min_shares_over_total": "minimum shares add up to more than 100%",
    # Rules and forms a programme sets (allocation/terms.py, allocation/review.py)
    "error.form_empty": "ask at least one question",
    "error.form_names_differ": "question names must differ",
    "error.progress_months_start": "months start at 1",
    "error.progress_months_list": "list whole months, e.g. [1, 3, 9]",
    "error.agreement_use": "use research or commercial",
    "error.question_name": "each question needs a name",
    "error.question_type": "%(name)s: use text, yes_no or number",
    "error.tier_kind": "use reviewed or fast",
    "error.answer_yes_no": "answer yes or no",
    "error.answer_required": "please answer this question",
    "error.answer_number": "enter a number",
    "error.scores_unknown": "unknown criteria: %(names)s",
    "error.score_missing": "is missing",
    "error.reviewers_short": (
        "application %(app)s has only %(have)s conflict-free reviewers; %(need)s are needed"
    ),
    # Outcomes (allocation/outcomes.py, services/awards/reports.py)
    "error.outcome_kind": "use one of %(allowed)s",
    "error.outcome_title_missing": "give the outcome a title",
    "error.outcome_title_long": "keep titles and identifiers under 500 characters",
    "error.outcome_doi": "a paper needs its DOI, like 10.1234/abcd.5678",
    "error.outcome_patent": "give the patent's application or grant number",
    "error.outcome_model_url": "give where the model is published (a URL)",
    "error.outcome_model_name": "give the model's URL or registry name (org/name)",
    "error.outcome_trained": "give how many people were trained (at least 1)",
    "error.outcome_dimension": "unknown dimension %(name)s; use %(allowed)s",
    "error.outcomes_team_only": "only the award's team records its outcomes",
    "error.outcomes_award_inactive": (
        "award %(award)s is %(state)s; outcomes belong to active awards"
    ),
    "error.outcome_duplicate": "this %(kind)s is already recorded for award %(award)s",
    "error.report_not_submittable": "the report is %(state)s; it cannot be submitted again",
    # State changes (allocation/lifecycle.py)
    "error.state_change": "%(what)s is %(old)s; it cannot become %(new)s",
    # Agreements (services/awards/agreements.py)
    "error.agreement_pi_only": "only the award's PI accepts its agreement",
    "error.agreement_nothing_to_accept": "the agreement is %(state)s; there is nothing to accept",
    "error.offer_lapsed_accept": "the offer lapsed: it was not accepted by its deadline",
    "error.agreement_signatory_only": (
        "only a signatory of the applicant's organisation countersigns"
    ),
    "error.agreement_nothing_to_countersign": (
        "the agreement is %(state)s; there is nothing to countersign"
    ),
    "error.offer_lapsed_countersign": "the offer lapsed: it was not countersigned by its deadline",
    "error.agreement_decline_who": "only the PI (or, to countersign, the organisation) may decline",
    "error.agreement_not_declinable": "the agreement is %(state)s; it can no longer be declined",
    # Use checks, reclaims and misuse (services/awards/checks.py)
    "error.reclaim_not_open": "only an open reclaim can be appealed",
    "error.appeal_window_closed": "the appeal window has closed",
    "error.appeal_why": "say why the GPU-hours are still needed",
    "error.reclaim_not_appealed": "only an appealed reclaim is decided here",
    "error.misuse_flag_who": "programme managers and site operators flag misuse",
    "error.evidence_missing": "say what was seen",
    "error.not_commercial_flag": "not a commercial-use flag",
    # Awards and changes to them (services/awards/*.py)
    "error.award_pi_only": "only the award's PI may do this",
    "error.run_is_reoffer": "run %(run)s is a re-offer; approve it instead",
    "error.period_no_capacity": "this call offers no %(gpu_type)s GPU-hours in %(period)s",
    "error.period_ended": "%(period)s has ended",
    "error.renewal_period": "a renewal asks for a quarter after the award's end",
    "error.change_pi_only": "only the award's PI asks for changes to it",
    "error.award_not_active": "award %(award)s is %(state)s; only an active award can change",
    "error.report_overdue": "a report of this award is overdue; submit it first",
    "error.request_waiting": "a %(kind)s request of this award is already waiting",
    "error.justification_missing": "say why the award needs this",
    "error.request_not_for_reviewer": "this request does not wait for a reviewer",
    "error.not_a_reviewer": "%(user)s is not a reviewer of this programme",
    "error.reviewer_conflict": "%(user)s has a conflict of interest with it",
    "error.comment_missing": "give the manager your reasons",
    "error.request_needs_recommendation": (
        "this request waits for a reviewer's recommendation first"
    ),
    "error.extension_too_long": "this programme extends an award by at most %(days)s days",
    "error.transfer_same_type": "move GPU-hours to another GPU type this call offers",
    "error.transfer_source_missing": "the award has no %(gpu_type)s GPU-hours in %(period)s",
    "error.supplement_too_big": "supplements may add at most %(share)s of the award",
    "error.request_kind": "use renewal, supplement, extension or transfer",
    "error.award_frozen": "award %(award)s is %(state)s; it can no longer change",
    "error.unused_short": "only %(hours)s GPU-hours are unused",
    "error.reoffer_before_decision": "re-offers follow a decision; this call is not decided yet",
    "error.reserve_empty": "the reserve list has nobody left who can still be offered GPU-hours",
    "error.no_free_hours": "no GPU-hours are free in this call's remaining quarters",
    "error.run_is_round": "this run is a round's; decide it instead",
    "error.reoffer_approved": "re-offer %(run)s is already approved",
    "error.reoffer_stale": (
        "the re-offer no longer fits (awards changed since it was proposed); propose it again: "
        "%(broken)s"
    ),
    "error.breaks_rules": "it would break the call's rules: %(broken)s",
    "error.call_not_fast": "this call is reviewed, not a fast tier",
    "error.application_decided": "application %(app)s is %(state)s; it was decided already",
    "error.award_amount": "award more than 0 and at most what was asked",
    "error.award_below_minimum": "that is below the application's useful minimum",
    "error.override_reason": "an override needs a reason for the audit log",
    "error.lease_override": "a lease is changed by a request, not an override",
    "error.award_below_used": "an award cannot shrink below what it has used",
    # Applications and reviews (services/programmes/applications.py)
    "error.no_organisation": "your account belongs to no organisation",
    "error.application_not_draft_edit": (
        "application %(app)s is %(state)s; only drafts can be edited"
    ),
    "error.application_not_draft_submit": (
        "application %(app)s is %(state)s; only drafts can be submitted"
    ),
    "error.application_duplicate": (
        "a duplicate of application %(app)s, already submitted to this call by you or your "
        "organisation under the same title; withdraw it first"
    ),
    "error.fast_tier_once": (
        "application %(app)s to this fast-tier call is already yours; the fast tier gives one "
        "award per applicant"
    ),
    "error.report_overdue_apply": (
        "a report on one of your awards is overdue; submit it before applying here"
    ),
    "error.application_not_withdrawable": (
        "application %(app)s is %(state)s; it can no longer be withdrawn"
    ),
    "error.reviewer_conflict_self": "you have a conflict of interest with this application",
    "error.lease_fields": "needs gpu_type, gpus, starts_at, ends_at (%(problem)s)",
    "error.request_fields": "need gpu_type, period, gpu_hours (%(problem)s)",
    "error.application_kind": "use gpu_hours or lease",
    "error.already_scored": "you already scored this application; ask the manager to void it",
    "error.applicant_only_edits": "only the applicant edits the application",
    # Rounds and allocations (services/programmes/awards.py)
    "error.call_decided": "call %(call)s is already decided",
    "error.over_capacity": "the awards exceed capacity: %(broken)s",
    "error.override_reason_award": "an overridden award needs a reason for the audit log",
    "error.allocation_by_agreement": (
        "allocation %(alloc)s is %(state)s: its award's agreement decides it"
    ),
    "error.application_not_in_round": "application %(app)s is not in this round",
    "error.application_changed": "application %(app)s changed since the run; run the round again",
    "error.allocation_admin_only": "only admins change allocations that came from no award",
    # Programmes and calls (services/programmes/calls.py)
    "error.name_format": "use 2-64 lowercase letters, digits, '.', '_' or '-'",
    "error.needs_programme_manager": "this needs the programme manager role for this programme",
    "error.programme_needs_admin": "creating a programme needs the centre admin role",
    "error.programme_owner": "name the ministry or agency that runs the programme",
    "error.programme_role": "use programme_manager or reviewer",
    "error.appoint_needs_admin": "appointing a programme manager needs the centre admin role",
    "error.closes_before_opens": "must be after opens_at",
    "error.capacity_missing": "give GPU-hours per GPU type and quarter",
    "error.programme_exists": "programme %(name)s already exists",
    "error.call_exists": "call %(name)s already exists in this programme",
    "error.config_choice": "%(value)s is not one of %(allowed)s",
    "error.share_fields": "each share needs name, applicant_types, min/max_share (%(problem)s)",
    "error.criterion_fields": "each criterion needs name and weight (%(problem)s)",
    # The portal's forms and the command line (web/*.py, cli/programmes.py)
    "error.form_lost_call": "the form lost its call; reload the page",
    "error.gpu_hours_number": "Enter the GPU-hours as a number greater than 0.",
    "error.file_not_mapping": "%(path)s must hold a mapping",
    "error.file_unreadable": "cannot read %(path)s: %(problem)s",
}
