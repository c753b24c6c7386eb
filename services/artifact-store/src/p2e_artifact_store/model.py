"""Artifacts as plain Python: the record the store keeps, and how a payload is stored.

A payload up to the inline limit is kept in the artifacts row; a larger one goes to the
blobs table under its SHA-256 and the row holds `blob_ref = "blob:<sha256>"`.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

BLOB_PREFIX = "blob:"
INLINE_LIMIT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ArtifactRecord:
    """One artifact. `payload` is empty for a blob-backed artifact loaded without its blob."""

    id: str
    kind: str
    conversation_id: str
    branch_id: str = ""
    agent_id: str = ""
    produced_by: str = ""
    parent_ids: tuple[str, ...] = ()
    causation_id: str = ""
    create_time: datetime | None = None
    content_type: str = ""
    payload: bytes = b""
    blob_ref: str = ""
    size_bytes: int = 0
    sequence: int = 0
    state_seq: int = 0
    digest: str = ""

    def content_key(self) -> tuple[object, ...]:
        """What must match for two artifacts with one id to be "the same" (not the timestamp,
        which a retrying publisher may restamp, nor the store's own sequence)."""
        return (
            self.kind,
            self.conversation_id,
            self.branch_id,
            self.agent_id,
            tuple(self.parent_ids),
            self.causation_id,
            self.content_type,
            self.digest,
            self.state_seq,
        )


class PutOutcome(enum.Enum):
    CREATED = "created"
    DUPLICATE = "duplicate"  # same id, same content: nothing written
    CONFLICT = "conflict"  # same id, other content: nothing written


@dataclass(frozen=True)
class PutResult:
    outcome: PutOutcome
    stored: ArtifactRecord  # the row as it is in the store (the first one, on a repeat)


@dataclass
class PreparedBlob:
    sha256: str
    data: bytes = field(repr=False)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_ref_of(sha256: str) -> str:
    return f"{BLOB_PREFIX}{sha256}"


def blob_sha_of(ref: str) -> str:
    return ref.removeprefix(BLOB_PREFIX)


def prepare(
    record: ArtifactRecord, *, inline_limit: int = INLINE_LIMIT_BYTES
) -> tuple[ArtifactRecord, PreparedBlob | None]:
    """Fill digest, size and create_time; move a large payload out into a blob."""
    now = datetime.now(UTC)
    create_time = record.create_time or now
    if record.blob_ref and not record.payload:
        # Already in the blob store (or elsewhere): keep the reference as given.
        digest = record.digest or blob_sha_of(record.blob_ref)
        return replace(record, create_time=create_time, digest=digest), None
    digest = sha256_hex(record.payload)
    size = len(record.payload)
    if size <= inline_limit:
        prepared = replace(
            record, create_time=create_time, digest=digest, size_bytes=size, blob_ref=""
        )
        return prepared, None
    prepared = replace(
        record,
        create_time=create_time,
        digest=digest,
        size_bytes=size,
        blob_ref=blob_ref_of(digest),
        payload=b"",
    )
    return prepared, PreparedBlob(digest, record.payload)
