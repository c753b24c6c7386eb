"""The executions store on PostgreSQL: first result wins, duplicates are found."""

from __future__ import annotations

import asyncio

import pytest

from p2e_kit.db import create_engine
from p2e_tool_runner.store import ExecutionRecord, ExecutionStore


@pytest.mark.postgres
async def test_execution_store_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    store = ExecutionStore(engine)
    try:
        await store.create_tables()
        records = [
            ExecutionRecord("c1", "pay", '{"n":1}', "a", "conv", "OK", result=f'{{"try": {n}}}')
            for n in range(5)
        ]
        kept = await asyncio.gather(*(store.save(r) for r in records))
        assert len({k.result for k in kept}) == 1
        stored = await store.get("c1")
        assert stored is not None and stored.result == kept[0].result
        found = await store.find_duplicate(
            conversation="conv", agent="a", tool="pay", args='{"n":1}', exclude_call_id="c2"
        )
        assert found == "c1"
        none = await store.find_duplicate(
            conversation="conv", agent="a", tool="pay", args='{"n":1}', exclude_call_id="c1"
        )
        assert none is None
    finally:
        await engine.dispose()
