"""Domain errors. Each names the field at fault so that every interface can say what to fix."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class ValidationError(DomainError):
    """Input that can never be valid, with the field that is wrong and how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidTransition(DomainError):
    """A state change the job state machine does not allow."""


class NotFound(DomainError):
    """The thing asked for does not exist, or the caller may not know that it exists."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class Unauthenticated(DomainError):
    """No valid credentials were presented."""


class Conflict(DomainError):
    """The request clashes with the current state (a duplicate name, a finished job, ...)."""


class OutOfRange(DomainError):
    """A value the store cannot hold (an id past 2**31, a number past its column's range).

    Raised by the persistence layer in place of the driver's data error, so that every
    interface can refuse the input without knowing which database said no."""


class SiteError(DomainError):
    """A site could not do what was asked: its tools failed, or answered what we cannot
    read. The message says which command and why; nothing about the site was changed by
    gpucenter's side of the failed step."""
