"""Orchestrator-specific errors and the mapping of a stored error code back to a kit error.

A turn that fails records its error code on its finished state; SendMessage (and a retry of
it) re-raises the same code to the caller.
"""

from __future__ import annotations

from p2e_kit import errors as kit


class TurnFailed(kit.P2EError):
    """A turn ended with an error whose code has no dedicated kit class (e.g. INTERNAL)."""

    def __init__(self, message: str, *, code: str = "INTERNAL", reason: str | None = None) -> None:
        super().__init__(message, reason=reason or "TURN_FAILED")
        self.code = code


_BY_CODE: dict[str, type[kit.P2EError]] = {
    cls.code: cls
    for cls in (
        kit.InvalidArgument,
        kit.NotFound,
        kit.AlreadyExists,
        kit.FailedPrecondition,
        kit.Conflict,
        kit.PermissionDenied,
        kit.QuotaExceeded,
        kit.DeadlineExceeded,
        kit.Unimplemented,
        kit.DependencyUnavailable,
    )
}


def error_for(code: str, message: str, *, reason: str = "") -> kit.P2EError:
    cls = _BY_CODE.get(code)
    if cls is None:
        return TurnFailed(message, code=code if code in ("INTERNAL", "UNKNOWN") else "INTERNAL")
    return cls(message, reason=reason or None)
