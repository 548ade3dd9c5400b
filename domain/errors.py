"""The root of the domain's error hierarchy; each context derives its own errors from it."""

from __future__ import annotations


class DomainError(Exception):
    """A command that the current state of an aggregate forbids."""


class NotFound(DomainError):
    """The aggregate or the item a command names does not exist."""


class TransitionForbidden(DomainError):
    """The aggregate's status does not allow the command."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status
