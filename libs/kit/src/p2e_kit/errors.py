"""Domain errors shared by every P2Engine service.

Each class carries the gRPC status code it maps to; the server interceptor
(`p2e_kit.grpc_server`) turns them into a `google.rpc.Status` with an `ErrorInfo`,
and the CLI decodes the same status back into one line.

    P2EError                         (UNKNOWN)
    ├── InvalidArgument              INVALID_ARGUMENT   + BadRequest field violations
    ├── NotFound                     NOT_FOUND
    ├── AlreadyExists                ALREADY_EXISTS
    ├── FailedPrecondition           FAILED_PRECONDITION + PreconditionFailure
    ├── Conflict                     ABORTED
    ├── PermissionDenied             PERMISSION_DENIED
    ├── QuotaExceeded                RESOURCE_EXHAUSTED
    ├── DeadlineExceeded             DEADLINE_EXCEEDED
    ├── Unimplemented                UNIMPLEMENTED
    └── DependencyUnavailable        UNAVAILABLE

Domain modules raise these and never import grpc: the code is a plain name here and
mapped to `grpc.StatusCode` at the transport edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR_DOMAIN = "p2engine.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


class P2EError(Exception):
    """Base of every domain error. `reason` is an UPPER_SNAKE machine-readable cause."""

    code: str = "UNKNOWN"
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return self.message


class InvalidArgument(P2EError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        found = list(violations or [])
        if field is not None:
            found.append(FieldViolation(field, message))
        self.violations: list[FieldViolation] = found


class NotFound(P2EError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class AlreadyExists(P2EError):
    code = "ALREADY_EXISTS"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(P2EError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        violations: list[PreconditionViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: list[PreconditionViolation] = list(violations or [])


class Conflict(P2EError):
    code = "ABORTED"
    default_reason = "CONFLICT"


class PermissionDenied(P2EError):
    code = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class QuotaExceeded(P2EError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "QUOTA_EXCEEDED"


class DeadlineExceeded(P2EError):
    code = "DEADLINE_EXCEEDED"
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(P2EError):
    code = "UNIMPLEMENTED"
    default_reason = "UNIMPLEMENTED"


class DependencyUnavailable(P2EError):
    code = "UNAVAILABLE"
    default_reason = "DEPENDENCY_UNAVAILABLE"


@dataclass
class ErrorDetails:
    """What a client decoded from a failed call (see `p2e_kit.status.decode`)."""

    code: str
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    precondition_violations: list[PreconditionViolation] = field(default_factory=list)
