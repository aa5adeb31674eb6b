"""Typed identifiers, so that a project id is never passed where a job id is expected."""

from typing import NewType

JobId = NewType("JobId", int)
ProjectId = NewType("ProjectId", int)
AllocationId = NewType("AllocationId", int)
UserId = NewType("UserId", int)
OrganisationId = NewType("OrganisationId", int)
