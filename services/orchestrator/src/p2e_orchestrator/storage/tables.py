"""The orchestrator's tables: conversations, branches, append-only states, effects, request ids."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ID = 64

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("agent_id", String(ID), nullable=False, index=True),
    Column("active_branch_id", String(ID), nullable=False),
    Column("state", String(32), nullable=False),
    Column("parent_conversation_id", String(ID), nullable=False, default=""),
    Column("depth", Integer, nullable=False, default=0),
    Column("overrides", JSON, nullable=False, default=dict),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)

branches = Table(
    "branches",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("conversation_id", String(ID), ForeignKey("conversations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("parent_branch_id", String(ID), nullable=False, default=""),
    Column("fork_seq", BigInteger, nullable=False, default=0),
    Column("created", DateTime(timezone=True), nullable=False),
    UniqueConstraint("conversation_id", "name", name="uq_branch_name"),
)

# Append-only: a row is never updated except for its `published` outbox flag.
states = Table(
    "states",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("conversation_id", String(ID), nullable=False),
    Column("branch_id", String(ID), ForeignKey("branches.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("parent_id", String(ID), nullable=False, default=""),
    Column("agent_id", String(ID), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("text", Text, nullable=False, default=""),
    Column("call_id", String(ID), nullable=False, default=""),
    Column("target", String(200), nullable=False, default=""),
    Column("data_json", Text, nullable=False, default=""),
    Column("is_error", Boolean, nullable=False, default=False),
    Column("published", Boolean, nullable=False, default=False),
    Column("created", DateTime(timezone=True), nullable=False),
    UniqueConstraint("branch_id", "seq", name="uq_state_branch_seq"),
    Index("ix_states_unpublished", "published", "created"),
    Index("ix_states_conversation", "conversation_id"),
)

# One row per tool call or delegation, written before dispatch; key = the call state's id.
effects = Table(
    "effects",
    metadata,
    Column("key", String(ID), primary_key=True),
    Column("conversation_id", String(ID), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request_json", Text, nullable=False, default=""),
    Column("result_json", JSON, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("completed", DateTime(timezone=True), nullable=True),
)

# Idempotency keys of mutating RPCs: (scope, request_id) -> the id of what the first call made.
request_ids = Table(
    "request_ids",
    metadata,
    Column("scope", String(200), nullable=False),
    Column("request_id", String(200), nullable=False),
    Column("result_id", String(ID), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("scope", "request_id"),
)
