"""English of the rules an award plan breaks (`allocation.plan.rule_breaks`); why an
application got less than it asked, and what shaped the plan, are `award.*` in messages.py.

Why coded: programme managers read these on the optimiser run's page and forward them to
applicants, in Korean as often as in English; the pure allocation code decides them, and
the reader's language is chosen where they are shown. They are also the words of the
refusal when a manager's change would break the call's rules. `ENGLISH` merges this dict;
the Korean is in `gpucenter/locale/ko/plan_texts.po` (msgids are these English texts).
Quantities are `Num` parameters (formatted for the reader), names and periods plain text.
"""

from __future__ import annotations

PLAN_TEXTS: dict[str, str] = {
    # Rules a plan breaks (allocation.plan.rule_breaks)
    "plan.not_candidate": "application %(app)s is not a candidate",
    "plan.below_minimum": (
        "application %(app)s: %(hours)s GPU-hours is below its useful minimum %(minimum)s"
    ),
    "plan.over_request": "application %(app)s: %(hours)s GPU-hours is more than it asked for",
    "plan.over_request_in": (
        "application %(app)s: more than it asked for in %(gpu_type)s %(period)s"
    ),
    "plan.lease_whole": "application %(app)s: a lease needs a whole number of GPUs",
    "plan.over_capacity": "capacity %(gpu_type)s %(period)s: %(used)s of %(capacity)s GPU-hours",
    "plan.lease_overlap": "leases of %(gpu_type)s hold %(held)s GPUs at once, more than %(limit)s",
    "plan.below_floor": "share %(name)s: %(got)s is below the floor %(floor)s",
    "plan.above_ceiling": "share %(name)s: %(got)s is above the ceiling %(ceiling)s",
    "plan.over_org_cap": "organisation %(org)s: %(used)s GPU-hours exceeds the cap %(cap)s",
    "plan.joined": "%(first)s; %(rest)s",
    "plan.its_cells": "its cells",
}
