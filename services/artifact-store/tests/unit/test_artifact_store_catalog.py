"""Catalog and store over a real SQLite file: idempotency, blobs, paging, lineage, watch, put."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from p2e_artifact_store.catalog import Catalog, CatalogLimits
from p2e_artifact_store.model import ArtifactRecord, PutOutcome
from p2e_artifact_store.notify import Notifier
from p2e_artifact_store.store import ArtifactStore
from p2e_kit.db import create_engine
from p2e_kit.errors import AlreadyExists, InvalidArgument, NotFound


@pytest.fixture
async def catalog(sqlite_url: str) -> AsyncIterator[Catalog]:
    store = ArtifactStore(create_engine(sqlite_url))
    await store.create_tables()
    try:
        yield Catalog(store, Notifier(), CatalogLimits(watch_poll_seconds=5.0))
    finally:
        await store.close()


def art(ident: str, conv: str = "c1", kind: str = "user_message", **kw: object) -> ArtifactRecord:
    payload = kw.pop("payload", f'{{"text": "{ident}"}}'.encode())
    return ArtifactRecord(
        id=ident,
        kind=kind,
        conversation_id=conv,
        payload=payload,
        **kw,  # type: ignore[arg-type]
    )


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_same_id_twice_is_one_row(catalog: Catalog) -> None:
    first = await catalog.store_many([art("a1")])
    again = await catalog.store_many([art("a1"), art("a1")])
    assert first[0].outcome is PutOutcome.CREATED
    assert [r.outcome for r in again] == [PutOutcome.DUPLICATE, PutOutcome.DUPLICATE]
    assert again[0].stored.sequence == first[0].stored.sequence
    page = await catalog.list_page(conversation_id="c1")
    assert [a.id for a in page.artifacts] == ["a1"]
    assert page.total_size == 1


async def test_duplicates_inside_one_batch_are_one_row(catalog: Catalog) -> None:
    results = await catalog.store_many([art("a1"), art("a2"), art("a1")])
    assert [r.outcome for r in results] == [
        PutOutcome.CREATED,
        PutOutcome.CREATED,
        PutOutcome.DUPLICATE,
    ]
    assert (await catalog.list_page()).total_size == 2


async def test_same_id_other_content_keeps_the_first(catalog: Catalog) -> None:
    await catalog.store_many([art("a1", payload=b"first")])
    (result,) = await catalog.store_many([art("a1", payload=b"second")])
    assert result.outcome is PutOutcome.CONFLICT
    assert (await catalog.get("a1")).payload == b"first"


async def test_large_payload_goes_to_a_blob_and_comes_back(catalog: Catalog) -> None:
    big = bytes(range(256)) * 400  # 100 KiB
    await catalog.store_many([art("big", payload=big)])
    listed = (await catalog.list_page()).artifacts[0]
    assert listed.blob_ref.startswith("blob:")
    assert listed.payload == b""
    assert listed.size_bytes == len(big)
    got = await catalog.get("big")
    assert got.payload == big
    assert got.blob_ref == listed.blob_ref


async def test_small_payload_stays_inline(catalog: Catalog) -> None:
    await catalog.store_many([art("small", payload=b"x" * 65536)])
    got = (await catalog.list_page()).artifacts[0]
    assert got.blob_ref == ""
    assert got.size_bytes == 65536


async def test_pages_oldest_first_cover_everything_once(catalog: Catalog) -> None:
    await catalog.store_many([art(f"a{i}") for i in range(7)] + [art("other", conv="c2")])
    seen: list[str] = []
    token = ""
    while True:
        page = await catalog.list_page(conversation_id="c1", page_size=3, page_token=token)
        assert page.total_size == 7
        seen += [a.id for a in page.artifacts]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"a{i}" for i in range(7)]


async def test_pages_newest_first(catalog: Catalog) -> None:
    await catalog.store_many([art(f"a{i}") for i in range(5)])
    first = await catalog.list_page(page_size=2, newest_first=True)
    assert [a.id for a in first.artifacts] == ["a4", "a3"]
    second = await catalog.list_page(
        page_size=2, newest_first=True, page_token=first.next_page_token
    )
    assert [a.id for a in second.artifacts] == ["a2", "a1"]
    last = await catalog.list_page(
        page_size=2, newest_first=True, page_token=second.next_page_token
    )
    assert [a.id for a in last.artifacts] == ["a0"]
    assert last.next_page_token == ""


async def test_kind_filter(catalog: Catalog) -> None:
    await catalog.store_many([art("u1"), art("t1", kind="tool_call"), art("u2")])
    page = await catalog.list_page(kind="user_message")
    assert [a.id for a in page.artifacts] == ["u1", "u2"]
    assert page.total_size == 2


@pytest.mark.parametrize("token", ["garbage!", "eyJzIjoxfQ", "bm90IGpzb24"])
async def test_bad_page_token_is_invalid_argument(catalog: Catalog, token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await catalog.list_page(page_token=token)
    assert caught.value.violations[0].field == "page_token"


async def test_page_token_of_other_filters_is_rejected(catalog: Catalog) -> None:
    await catalog.store_many([art(f"a{i}") for i in range(3)])
    page = await catalog.list_page(conversation_id="c1", page_size=1)
    with pytest.raises(InvalidArgument):
        await catalog.list_page(conversation_id="c2", page_token=page.next_page_token)
    with pytest.raises(InvalidArgument):
        await catalog.list_page(
            conversation_id="c1", newest_first=True, page_token=page.next_page_token
        )


async def test_negative_page_size_is_invalid(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument):
        await catalog.list_page(page_size=-1)


async def test_lineage_walks_parents_and_causes_nearest_first(catalog: Catalog) -> None:
    await catalog.store_many(
        [
            art("s1"),
            art("s2", parent_ids=("s1",)),
            art("req"),
            art("s3", parent_ids=("s2",), causation_id="req"),
            art("s4", parent_ids=("s3",), causation_id="not-an-artifact"),
        ]
    )
    full = await catalog.lineage("s4")
    assert [a.id for a in full] == ["s4", "s3", "s2", "req", "s1"]
    short = await catalog.lineage("s4", depth=1)
    assert [a.id for a in short] == ["s4", "s3"]


async def test_lineage_of_unknown_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.lineage("nope")
    with pytest.raises(NotFound):
        await catalog.get("nope")


async def test_lineage_survives_cycles(catalog: Catalog) -> None:
    await catalog.store_many([art("x", parent_ids=("y",)), art("y", parent_ids=("x",))])
    assert [a.id for a in await catalog.lineage("x", depth=50)] == ["x", "y"]


async def test_watch_replays_then_follows_live_rows(catalog: Catalog) -> None:
    await catalog.store_many([art("a1"), art("a2"), art("b1", conv="c2")])
    watch = catalog.watch(conversation_id="c1", after_sequence=1)
    first = await anext(watch)
    assert first.id == "a2"
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)
    assert not pending.done()
    await catalog.store_many([art("b2", conv="c2"), art("a3")])
    live = await asyncio.wait_for(pending, 2.0)  # woken by the notifier, not the 5 s poll
    assert live.id == "a3"
    await watch.aclose()


async def test_put_assembles_chunks_and_is_idempotent(catalog: Catalog) -> None:
    header = ArtifactRecord(id="p1", kind="report", conversation_id="c1", payload=b"")
    stored = await catalog.put(header, chunks_of(b"abc", b"def"))
    assert stored.payload == b"abcdef"
    assert stored.sequence > 0
    again = await catalog.put(header, chunks_of(b"abcdef"))
    assert again.sequence == stored.sequence
    with pytest.raises(AlreadyExists):
        await catalog.put(header, chunks_of(b"other"))


async def test_put_without_id_gets_one_and_system_conversation(catalog: Catalog) -> None:
    header = ArtifactRecord(id="", kind="report", conversation_id="")
    stored = await catalog.put(header, chunks_of(b"x"))
    assert stored.id.startswith("art_")
    assert stored.conversation_id == "system"


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (ArtifactRecord(id="p", kind="", conversation_id="c"), "header.kind"),
        (
            ArtifactRecord(id="p", kind="k", conversation_id="c", blob_ref="blob:x"),
            "header.blob_ref",
        ),
        (ArtifactRecord(id="p", kind="k", conversation_id="c", size_bytes=99), "header.size_bytes"),
    ],
)
async def test_put_rejects_bad_headers(
    catalog: Catalog, header: ArtifactRecord, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await catalog.put(header, chunks_of(b"abc"))
    assert caught.value.violations[0].field == field


async def test_put_rejects_oversized_payload(sqlite_url: str) -> None:
    store = ArtifactStore(create_engine(sqlite_url))
    await store.create_tables()
    small = Catalog(store, Notifier(), CatalogLimits(max_artifact_bytes=10))
    try:
        with pytest.raises(InvalidArgument):
            await small.put(
                ArtifactRecord(id="p", kind="k", conversation_id="c"), chunks_of(b"x" * 11)
            )
    finally:
        await store.close()


async def test_export_streams_everything_with_blob_payloads(catalog: Catalog) -> None:
    big = b"z" * 70_000
    await catalog.store_many([art("a1"), art("big", payload=big), art("t", kind="tool_call")])
    exported = [a async for a in catalog.export(conversation_id="c1")]
    assert [a.id for a in exported] == ["a1", "big", "t"]
    assert exported[1].payload == big
    only_tools = [a.id async for a in catalog.export(kind="tool_call")]
    assert only_tools == ["t"]
