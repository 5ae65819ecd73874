"""Control-plane errors. The API maps them to HTTP: NotFound → 404, Conflict → 409, Invalid → 400."""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class; `str(exc)` is a message safe to show to the caller."""


class NotFound(ControlPlaneError):
    """The object does not exist, or belongs to another org (never distinguish the two)."""


class Conflict(ControlPlaneError):
    """A uniqueness or state rule would be broken (duplicate name, active workloads, …)."""


class Invalid(ControlPlaneError):
    """The request breaks a business rule or carries unusable data (bad scope, bad factor file, …)."""
