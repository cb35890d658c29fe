"""The files and batches part of every store (memory, SQLite, a real PostgreSQL) passes the
same tests: files and their pages, a batch's conditional updates, each line's result kept
once (with its count) even when written at once, claims between runners, and a reopen."""

from __future__ import annotations

import asyncio
from typing import Any

from modelplex_server.batch_store import BatchRecord, FileRecord
from modelplex_server.conversations import ConversationStore, MemoryConversationStore
from modelplex_server.testing import StoreBackend


async def check_files(store: ConversationStore) -> None:
    made = [FileRecord(owner=owner, filename=f"{i}.jsonl", bytes=3)
            for i, owner in enumerate(["alice", "bob", "alice", "alice"])]
    for record in made:
        await store.create_file(record, b"abc")
    assert await store.get_file(made[0].id) == made[0]
    assert await store.file_content(made[0].id) == b"abc"
    assert await store.get_file("file-missing") is None
    assert await store.file_content("file-missing") is None
    alices = [made[3].id, made[2].id, made[0].id]
    assert [f.id for f in await store.list_files("alice")] == alices
    assert [f.id for f in await store.list_files("alice", limit=2)] == alices[:2]
    assert [f.id for f in await store.list_files("alice", after=alices[0])] == alices[1:]
    assert [f.id for f in await store.list_files("alice", order="asc")] == alices[::-1]
    assert [f.id for f in await store.list_files("alice", order="asc",
                                                 after=made[0].id)] == alices[::-1][1:]
    assert await store.list_files("alice", after="file-missing") == []
    assert await store.list_files("alice", purpose="batch_output") == []
    assert len(await store.list_files(None)) == 4
    result = FileRecord(owner="alice", kind="output", purpose="batch_output", batch_id="b")
    await store.create_file(result)
    assert await store.file_content(result.id) is None
    assert await store.delete_file(made[1].id) is True
    assert await store.delete_file(made[1].id) is False


async def check_batches(store: ConversationStore) -> str:
    first = BatchRecord(owner="alice", data={"endpoint": "/v1/chat/completions"})
    second = BatchRecord(owner="bob")
    for record in (first, second):
        await store.create_batch(record)
    assert await store.get_batch("batch_missing") is None
    assert [b.id for b in await store.list_batches(None)] == [second.id, first.id]
    assert [b.id for b in await store.list_batches("alice")] == [first.id]
    assert [b.id for b in await store.list_batches(None, after=second.id)] == [first.id]
    assert await store.open_batches() == [first.id, second.id]
    await store.create_batch(BatchRecord(owner=None, status="completed"))
    assert [await store.count_open_batches(o) for o in ("alice", "bob", "carol", None)] \
        == [1, 1, 0, 0]
    moved = await store.update_batch(first.id, expect=("validating",), status="in_progress",
                                     total=3, data={"in_progress_at": 5})
    assert moved is not None and moved.status == "in_progress" and moved.total == 3
    assert moved.data == {"endpoint": "/v1/chat/completions", "in_progress_at": 5}
    assert await store.update_batch(first.id, expect=("validating",), status="failed") is None
    assert await store.update_batch("batch_missing", status="failed") is None
    # three lines, each written three times at once: kept once, counted once
    added = await asyncio.gather(*(store.add_result(first.id, line, line != 1, f"r{line}")
                                   for line in (0, 1, 2) for _ in range(3)))
    assert sum(added) == 3
    assert not await store.add_result("batch_missing", 0, True, "x")
    got = await store.get_batch(first.id)
    assert got is not None and (got.completed, got.failed) == (2, 1)
    assert await store.done_lines(first.id) == {0, 1, 2}
    assert await store.batch_results(first.id, True) == [(0, "r0"), (2, "r2")]
    assert await store.batch_results(first.id, True, after=0) == [(2, "r2")]
    assert await store.batch_results(first.id, True, limit=1) == [(0, "r0")]
    assert await store.batch_results(first.id, False) == [(1, "r1")]
    # claims: one runner at a time; a stale claim may be taken over; a released one at once
    assert await store.claim_batch(first.id, "a", stale=60)
    assert await store.claim_batch(first.id, "a", stale=60)  # renewed
    assert not await store.claim_batch(first.id, "b", stale=60)
    assert await store.claim_batch(first.id, "b", stale=-1)  # a's claim is stale
    await store.release_batch(first.id, "a")  # not a's any more: nothing happens
    assert not await store.claim_batch(first.id, "a", stale=60)
    await store.release_batch(first.id, "b")
    assert await store.claim_batch(first.id, "a", stale=60)
    await store.update_batch(second.id, status="completed")
    assert await store.open_batches() == [first.id]
    assert (await store.count_open_batches("bob"), await store.count_open_batches("alice")) \
        == (0, 1)
    return first.id


async def test_memory_store() -> None:
    store = MemoryConversationStore()
    await check_files(store)
    await check_batches(store)


async def test_persistent_stores(store_backend: StoreBackend) -> None:
    store: Any = store_backend.open()
    await store.open()
    try:
        await check_files(store)
        batch_id = await check_batches(store)
    finally:
        await store.aclose()
    again: Any = store_backend.open()  # a restart: everything is still there
    await again.open()
    try:
        got = await again.get_batch(batch_id)
        assert got is not None and got.status == "in_progress" and got.completed == 2
        assert await again.done_lines(batch_id) == {0, 1, 2}
        assert len(await again.list_files(None)) == 4
    finally:
        await again.aclose()


async def check_limits(first: ConversationStore, second: ConversationStore) -> None:
    """``most``: eight creates at once, half through each store, keep exactly the limit."""
    files = [FileRecord(owner="dave", filename=f"{i}.jsonl", bytes=1) for i in range(8)]
    kept = await asyncio.gather(*((first, second)[i % 2].create_file(f, b"x", most=3)
                                  for i, f in enumerate(files)))
    assert sum(kept) == 3
    assert {f.id for f in await first.list_files("dave")} \
        == {f.id for f, ok in zip(files, kept, strict=True) if ok}
    assert await first.create_file(FileRecord(owner="erin"), b"x", most=3)  # per owner
    assert await first.create_file(FileRecord(owner="dave"), None)  # no limit asked
    batches = [BatchRecord(owner="dave") for _ in range(8)]
    made = await asyncio.gather(*((first, second)[i % 2].create_batch(b, most=2)
                                  for i, b in enumerate(batches)))
    assert sum(made) == 2 and await second.count_open_batches("dave") == 2
    opened = [b for b, ok in zip(batches, made, strict=True) if ok]
    assert await first.get_batch(opened[0].id) is not None
    refused = [b for b, ok in zip(batches, made, strict=True) if not ok]
    assert await first.get_batch(refused[0].id) is None
    await first.update_batch(opened[0].id, status="completed")  # a finished one frees a place
    assert await second.create_batch(refused[0], most=2)
    assert not await first.create_batch(refused[1], most=2)
    assert await first.create_batch(BatchRecord(owner=None), most=1)  # no key: its own count
    assert not await second.create_batch(BatchRecord(owner=None), most=1)


async def test_memory_store_limits() -> None:
    store = MemoryConversationStore()
    await check_limits(store, store)


async def test_persistent_store_limits_across_connections(store_backend: StoreBackend) -> None:
    """Two store objects on one database (as two workers or replicas have): the count and the
    insert are one transaction, so creates through both at once still keep the limit."""
    first: Any = store_backend.open()
    second: Any = store_backend.open()
    await first.open()
    await second.open()
    try:
        await check_limits(first, second)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_result_file_made_twice_at_once_is_kept_once(
        store_backend: StoreBackend) -> None:
    """Two runners finishing one batch at once (a claim taken over) both make its result
    file, whose id comes from the batch's: one is kept, the other told so, neither fails."""
    stores: list[Any] = [store_backend.open(), store_backend.open(), MemoryConversationStore()]
    for store in stores[:2]:
        await store.open()
    try:
        for pair in (stores[:2], stores[2:] * 2):
            record = FileRecord(id=f"file-{id(pair)}out", owner="a", kind="output",
                                purpose="batch_output", batch_id="batch_x")
            made = await asyncio.gather(*(pair[i % 2].create_file(record) for i in range(6)))
            assert sum(made) == 1
            assert await pair[1].get_file(record.id) == record
    finally:
        for store in stores[:2]:
            await store.aclose()
