"""Client side of errors: decode a failed call's status into `ErrorDetails`, and one line."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from p2e_kit.errors import ErrorDetails, FieldViolation, PreconditionViolation


def decode(error: grpc.RpcError) -> ErrorDetails:
    """Code, message, ErrorInfo reason and violations of a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    out = ErrorDetails(code=code.name if code else "UNKNOWN", message=message or "")
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.reason = info.reason
            out.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.field_violations = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            pre = error_details_pb2.PreconditionFailure()
            detail.Unpack(pre)
            out.precondition_violations = [
                PreconditionViolation(v.type, v.subject, v.description) for v in pre.violations
            ]
    return out


def one_line(error: grpc.RpcError, *, target: str = "") -> str:
    """A one-line, human explanation of a failed call."""
    details = decode(error)
    if details.code == "UNAVAILABLE" and details.reason == "":
        where = f" at {target}" if target else ""
        return f"service unavailable{where}: is the stack running? (`p2engine up`)"
    if details.code == "DEADLINE_EXCEEDED" and not details.reason:
        return "the call timed out"
    return f"{details.code.lower().replace('_', ' ')}: {details.message}"
