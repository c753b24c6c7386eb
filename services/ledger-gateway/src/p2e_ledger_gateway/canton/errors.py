"""Canton's answers that are not a success, and what P2Engine makes of them.

Canton reports every failure as a `JsCantonError` (`code` = error id such as
DUPLICATE_COMMAND, `errorCategory` = Canton error category, `context` = details). The
JSON API maps the gRPC code to an HTTP status (ABORTED and ALREADY_EXISTS -> 409,
FAILED_PRECONDITION -> 400, NOT_FOUND -> 404, UNAVAILABLE -> 503, ...). Classification uses
the error id first and the category second, never the HTTP status alone:

    DUPLICATE_COMMAND                         -> the command already committed: replay it
    contention (category 2, locked/archived)  -> re-read the contracts and retry (bounded)
    transient (category 1/3, 5xx, 429)        -> retried by the client, then UNAVAILABLE
    Daml refusal (DAML_FAILURE, ...)          -> FAILED_PRECONDITION / INVALID_ARGUMENT
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from p2e_kit.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    P2EError,
    PreconditionViolation,
)

# Canton error categories (com.daml.error.ErrorCategory.asInt).
TRANSIENT_SERVER_FAILURE = 1
CONTENTION_ON_SHARED_RESOURCES = 2
DEADLINE_EXCEEDED_STATE_UNKNOWN = 3
INVALID_INDEPENDENT_OF_SYSTEM_STATE = 8
INVALID_GIVEN_CURRENT_SYSTEM_STATE = 9
RESOURCE_EXISTS = 10
RESOURCE_MISSING = 11

DUPLICATE_CODES = frozenset({"DUPLICATE_COMMAND"})
# The contracts a command used were locked or archived meanwhile: re-read and retry.
CONTENTION_CODES = frozenset(
    {
        "LOCAL_VERDICT_LOCKED_CONTRACTS",
        "LOCAL_VERDICT_LOCKED_KEYS",
        "LOCAL_VERDICT_INACTIVE_CONTRACTS",
        "CONTRACT_NOT_FOUND",
        "CONTRACT_NOT_ACTIVE",
        "FAILED_TO_DETERMINE_LEDGER_TIME",
        "SUBMISSION_ALREADY_IN_FLIGHT",
    }
)
# Daml interpretation refused the command: a business failure, never retried.
INTERPRETATION_CODES = frozenset(
    {
        "DAML_FAILURE",
        "UNHANDLED_EXCEPTION",
        "DAML_INTERPRETATION_ERROR",
        "INTERPRETATION_USER_ERROR",
        "TEMPLATE_PRECONDITION_VIOLATED",
        "DAML_INTERPRETER_INVALID_ARGUMENT",
    }
)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Reasons Wallet.daml raises (error id "p2engine.dev/<REASON>", in the error's context).
KNOWN_REASONS = (
    "INSUFFICIENT_FUNDS",
    "WALLET_FROZEN",
    "SELF_TRANSFER",
    "INVALID_AMOUNT",
    "INVALID_REQUEST_ID",
    "ISSUER_MISMATCH",
)
ERROR_ID_PREFIX = "p2engine.dev/"
_REASON_IN_TEXT = re.compile(r"\b(" + "|".join(KNOWN_REASONS) + r")\b")


@dataclass(eq=False)
class CantonError(Exception):
    """A non-2xx answer of the JSON Ledger API."""

    status: int
    code: str
    cause: str
    category: int | None = None
    context: dict[str, str] = field(default_factory=dict)
    correlation_id: str = ""

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.code}: {self.cause}")

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.cause}"

    @classmethod
    def from_body(cls, status: int, body: bytes) -> CantonError:
        """Parses a JsCantonError; tolerates the text/plain bodies of decoding failures."""
        text = body.decode("utf-8", errors="replace")
        try:
            data: Any = json.loads(text) if text else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or "code" not in data:
            return cls(status, f"HTTP_{status}", text[:500] or f"HTTP {status}")
        category = data.get("errorCategory")
        context = data.get("context") or {}
        return cls(
            status=status,
            code=str(data["code"]),
            cause=str(data.get("cause", "")),
            category=category if isinstance(category, int) else None,
            context={str(k): str(v) for k, v in context.items()},
            correlation_id=str(data.get("correlationId") or ""),
        )

    @property
    def is_duplicate(self) -> bool:
        return self.code in DUPLICATE_CODES

    @property
    def is_contention(self) -> bool:
        return self.code in CONTENTION_CODES or (
            self.category == CONTENTION_ON_SHARED_RESOURCES and not self.is_duplicate
        )

    @property
    def is_transient(self) -> bool:
        if self.is_duplicate or self.is_contention or self.is_interpretation:
            return False
        return self.status in TRANSIENT_STATUSES or self.category in (
            TRANSIENT_SERVER_FAILURE,
            DEADLINE_EXCEEDED_STATE_UNKNOWN,
        )

    @property
    def is_interpretation(self) -> bool:
        return self.code in INTERPRETATION_CODES

    @property
    def is_not_found(self) -> bool:
        return self.status == 404 or self.category == RESOURCE_MISSING

    @property
    def is_already_exists(self) -> bool:
        return self.category == RESOURCE_EXISTS or (self.status == 409 and "EXISTS" in self.code)

    @property
    def reason(self) -> str:
        """The P2Engine reason of a Daml refusal: context `reason`, `error_id`, or the text."""
        if self.context.get("reason") in KNOWN_REASONS:
            return self.context["reason"]
        error_id = self.context.get("error_id", "")
        if error_id.startswith(ERROR_ID_PREFIX):
            return error_id.removeprefix(ERROR_ID_PREFIX)
        found = _REASON_IN_TEXT.search(self.cause)
        return found.group(1) if found else "LEDGER_REJECTED"


def refusal(err: CantonError, *, subject: str) -> P2EError:
    """The kit error of a Daml refusal (an interpretation error) about `subject`."""
    reason = err.reason
    message = _message(err)
    meta = {"canton_code": err.code}
    if err.category == INVALID_INDEPENDENT_OF_SYSTEM_STATE or reason in (
        "INVALID_AMOUNT",
        "INVALID_REQUEST_ID",
        "SELF_TRANSFER",
    ):
        return InvalidArgument(message, field=_field_of(reason), reason=reason, metadata=meta)
    return FailedPrecondition(
        message,
        reason=reason,
        violations=[PreconditionViolation(reason, subject, message)],
        metadata=meta,
    )


def unavailable(what: str, err: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(
        f"Canton JSON API unavailable ({what}): {err}", reason="CANTON_UNAVAILABLE"
    )


def unexpected(what: str, err: CantonError) -> P2EError:
    """A Canton error with no domain meaning here (misconfiguration, missing DAR, ...)."""
    if err.status in (401, 403):
        return DependencyUnavailable(
            f"Canton refused our credentials ({what}): {err}", reason="CANTON_UNAUTHORIZED"
        )
    return P2EError(f"Canton refused {what}: {err}", reason="CANTON_ERROR")


P = ParamSpec("P")
R = TypeVar("R")


def translated(
    what: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Turns a CantonError no one interpreted into a kit error: nothing Canton-specific leaks."""

    def decorate(
        method: Callable[P, Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(method)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await method(*args, **kwargs)
            except CantonError as err:
                raise unexpected(what, err) from err

        return wrapper

    return decorate


def _message(err: CantonError) -> str:
    # DAML_FAILURE causes read "... failed with status ...: <message>"; keep them short.
    return err.cause.strip()[:500] or err.code


def _field_of(reason: str) -> str:
    return {"INVALID_AMOUNT": "amount", "SELF_TRANSFER": "to_agent"}.get(reason, "request_id")
