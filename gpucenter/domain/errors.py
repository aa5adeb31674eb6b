"""Domain errors. Each names the field at fault so that every interface can say what to fix.

An error may also carry its text as a message code with parameters (`coded`), so that the
portal and the CLI can say it in the reader's language; `str(error)` stays the English.
"""

from __future__ import annotations

from typing import Self

from gpucenter.domain.messages import Message


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    coded: Message | None = None

    @classmethod
    def of(cls, message: Message) -> Self:
        """This error saying `message` (English in `str()`, the code for other readers)."""
        error = cls(message.english())
        error.coded = message
        return error


class ValidationError(DomainError):
    """Input that can never be valid, with the field that is wrong and how to fix it."""

    def __init__(self, field: str, message: str, coded: Message | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        if coded is not None:
            self.coded = Message.of("error.field", field=field, problem=coded)

    @classmethod
    def about(cls, field: str, problem: Message) -> ValidationError:
        """A refusal of `field` whose problem is said by a message code."""
        return cls(field, problem.english(), problem)


class InvalidTransition(DomainError):
    """A state change the job state machine does not allow."""


class NotFound(DomainError):
    """The thing asked for does not exist, or the caller may not know that it exists."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key
        self.coded = Message.of("error.not_found", kind=kind, key=repr(key))


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
