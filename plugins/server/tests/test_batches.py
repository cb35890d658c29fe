"""OpenAI's Files and Batch APIs on ``modelplex serve``, driven by the official ``openai``
client: upload, create, progress, results, cancel, listing, keys owning their files and
batches, hostile input files, bounds, and a server stopped mid-batch resuming (on SQLite and a
real PostgreSQL) without running or writing any line twice."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.batch_runner import BATCHES, BatchRunner
from modelplex_server.gateway import GATEWAY
from modelplex_server.settings import KeyConfig, hash_key
from modelplex_server.testing import ServeProcess, StoreBackend

CHAT = "/v1/chat/completions"
DONE = {"completed", "failed", "expired", "cancelled"}


def line(custom_id: str, text: str, model: str = "fault:fault", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body}}


def jsonl(*items: Any) -> bytes:
    return b"".join((i if isinstance(i, bytes) else json.dumps(i).encode()) + b"\n"
                    for i in items)


def client_for(server: AppServer, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


async def submit(client: openai.AsyncOpenAI, content: bytes, endpoint: Any = CHAT) -> str:
    uploaded = await client.files.create(file=("batch.jsonl", content), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint=endpoint,
                                        completion_window="24h")
    assert batch.status == "validating" and batch.input_file_id == uploaded.id
    return batch.id


async def wait_for(client: openai.AsyncOpenAI, batch_id: str,
                   until: Any = lambda b: b.status in DONE) -> Any:
    """Poll the batch (as a client does) until ``until(batch)``."""
    async with asyncio.timeout(120):
        while True:
            batch = await client.batches.retrieve(batch_id)
            if until(batch):
                return batch
            await asyncio.sleep(0.02)


async def results(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(raw) for raw in content.text.splitlines()]


async def test_a_chat_batch_end_to_end(server: AppServer) -> None:
    async with client_for(server) as client:
        batch_id = await submit(client, jsonl(*(line(f"r{i}", f"question {i}")
                                                for i in range(5))))
        batch = await wait_for(client, batch_id)
        assert batch.status == "completed", batch.errors
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed,
                batch.request_counts.failed) == (5, 5, 0)
        assert batch.error_file_id is None and batch.output_file_id is not None
        assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
        out = await results(client, batch.output_file_id)
        assert [r["custom_id"] for r in out] == [f"r{i}" for i in range(5)]
        for r in out:
            assert r["error"] is None and r["id"].startswith("batch_req_")
            assert r["response"]["status_code"] == 200
            body = r["response"]["body"]
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"] == PIECE * 5
            assert body["usage"]["total_tokens"] == 8
        meta = await client.files.retrieve(batch.output_file_id)
        assert meta.purpose == "batch_output"
        assert meta.bytes == len((await client.files.content(meta.id)).content)
        listed = [b.id async for b in client.batches.list()]
        assert listed == [batch_id]


async def test_embeddings_batch(server: AppServer) -> None:
    items = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "fault:fault", "input": f"text {i}"}} for i in range(3)]
    async with client_for(server) as client:
        batch = await wait_for(client, await submit(client, jsonl(*items), "/v1/embeddings"))
        assert batch.status == "completed"
        out = await results(client, batch.output_file_id)
        assert {r["custom_id"] for r in out} == {"e0", "e1", "e2"}
        assert all(len(r["response"]["body"]["data"][0]["embedding"]) == 8 for r in out)


async def test_legacy_completions_batch(server: AppServer) -> None:
    items = [{"custom_id": "c0", "method": "POST", "url": "/v1/completions",
              "body": {"model": "fault:fault", "prompt": "Say hi"}},
             {"custom_id": "c1", "method": "POST", "url": "/v1/completions",
              "body": {"model": "fault:fault", "prompt": ["a", "b"]}}]
    async with client_for(server) as client:
        batch = await wait_for(client, await submit(client, jsonl(*items), "/v1/completions"))
        assert batch.status == "completed"
        (good,) = await results(client, batch.output_file_id)
        assert good["custom_id"] == "c0"
        assert good["response"]["body"]["choices"][0]["text"] == PIECE * 5
        (bad,) = await results(client, batch.error_file_id)
        assert bad["custom_id"] == "c1" and bad["response"]["status_code"] == 400


async def test_failed_lines_go_to_the_error_file(server: AppServer) -> None:
    content = jsonl(line("good", "hi"), line("unknown", "hi", model="nosuch:model"),
                    line("streamed", "hi", stream=True),
                    line("bad-temperature", "hi", temperature="hot"))
    async with client_for(server) as client:
        batch = await wait_for(client, await submit(client, content))
        assert batch.status == "completed"
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 3)
        errors = {r["custom_id"]: r for r in await results(client, batch.error_file_id)}
        assert set(errors) == {"unknown", "streamed", "bad-temperature"}
        assert errors["unknown"]["response"]["status_code"] == 404
        assert errors["unknown"]["response"]["body"]["error"]["code"] == "model_not_found"
        assert errors["streamed"]["response"]["status_code"] == 400
        assert errors["streamed"]["response"]["body"]["error"]["param"] == "stream"
        assert errors["bad-temperature"]["response"]["body"]["error"]["param"] == "temperature"
        assert [r["custom_id"] for r in await results(client, batch.output_file_id)] == ["good"]


@pytest.mark.parametrize(("content", "code", "line_no"), [
    (jsonl(line("a", "x"), b"{not json"), "invalid_json_line", 2),
    (jsonl({"method": "POST", "url": CHAT, "body": {"model": "fault:fault"}}),
     "missing_required_parameter", 1),
    (jsonl(line("a", "x"), line("a", "y")), "duplicate_custom_id", 2),
    (jsonl({**line("a", "x"), "url": "/v1/images/generations"}), "mismatched_endpoint", 1),
    (jsonl({**line("a", "x"), "method": "GET"}), "invalid_method", 1),
    (jsonl({"custom_id": "a", "method": "POST", "url": CHAT, "body": []}),
     "invalid_request", 1),
    (jsonl(b"[1, 2]"), "invalid_json_line", 1),
    (b"\n\n", "empty_file", None),
    (jsonl(line("x" * 600, "x")), "invalid_custom_id", 1),
    (b'{"custom_id": "\xff\xfe"}\n', "invalid_json_line", 1),
    (jsonl(b"[" * 5000 + b"]" * 5000), "invalid_json_line", 1),
])
async def test_a_bad_input_file_fails_the_batch_with_errors(
        server: AppServer, upstream: FaultyUpstream, content: bytes, code: str,
        line_no: int | None) -> None:
    async with client_for(server) as client:
        batch = await wait_for(client, await submit(client, content))
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data
    error = batch.errors.data[0]
    assert (error.code, error.line) == (code, line_no)
    assert error.message
    assert batch.output_file_id is None and upstream.requests == 0  # nothing was run


async def test_bounds_on_files_and_lines(serve: Any, upstream: FaultyUpstream) -> None:
    server = await serve(max_file_bytes=2000, max_batch_lines=2, max_files=2)
    async with client_for(server) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.files.create(file=("big.jsonl", b"x" * 5000), purpose="batch")
        assert caught.value.status_code == 413
        assert "max_file_bytes" in str(caught.value)
        batch = await wait_for(client, await submit(client, jsonl(
            line("a", "1"), line("b", "2"), line("c", "3"))))
        assert batch.status == "failed"
        assert batch.errors is not None and batch.errors.data
        assert batch.errors.data[0].code == "too_many_requests"
        assert "max_batch_lines" in str(batch.errors.data[0].message)
        with pytest.raises(openai.BadRequestError, match="purpose"):
            await client.files.create(file=("a.jsonl", b"{}"), purpose="assistants")
        await client.files.create(file=("b.jsonl", b"{}"), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="max_files"):
            await client.files.create(file=("c.jsonl", b"{}"), purpose="batch")
    assert upstream.requests == 0


async def test_bad_batch_requests_are_clear_errors(server: AppServer) -> None:
    async with client_for(server) as client:
        uploaded = await client.files.create(file=("a.jsonl", jsonl(line("a", "x"))),
                                             purpose="batch")
        with pytest.raises(openai.BadRequestError, match="endpoint"):
            await client.batches.create(input_file_id=uploaded.id,
                                        endpoint="/v1/images/generations",
                                        completion_window="24h")
        with pytest.raises(openai.BadRequestError, match="completion_window"):
            await client.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                        completion_window="1h")  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            await client.batches.create(input_file_id="file-missing", endpoint=CHAT,
                                        completion_window="24h")
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("batch_missing")
        with pytest.raises(openai.NotFoundError):
            await client.files.content("file-missing")


async def test_files_and_batches_belong_to_their_key(serve: Any) -> None:
    keys = [KeyConfig(name="alice", hash=hash_key("k-alice"), models=["fault:*"]),
            KeyConfig(name="bob", hash=hash_key("k-bob")),
            KeyConfig(name="root", hash=hash_key("k-root"), admin=True)]
    server = await serve(keys=keys)
    async with client_for(server, "k-alice") as alice, client_for(server, "k-bob") as bob, \
            client_for(server, "k-root") as root:
        mine = await submit(alice, jsonl(line("a", "x")))
        done = await wait_for(alice, mine)
        assert done.status == "completed"
        theirs = await submit(bob, jsonl(line("b", "y")))
        for call in (bob.batches.retrieve(mine), bob.files.retrieve(done.input_file_id),
                     bob.files.content(done.output_file_id or ""),
                     bob.batches.cancel(mine), bob.files.delete(done.input_file_id)):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [b.id async for b in alice.batches.list()] == [mine]
        assert [b.id async for b in bob.batches.list()] == [theirs]
        bobs = {f.id async for f in bob.files.list()}
        assert (await bob.batches.retrieve(theirs)).input_file_id in bobs
        assert not bobs & {done.input_file_id, done.output_file_id}
        assert {b.id async for b in root.batches.list()} == {mine, theirs}
        # a model the key may not use: refused at validation, nothing run
        refused = await wait_for(alice, await submit(alice, jsonl(
            line("ok", "x"), line("other", "x", model="llamacpp:smollm2"))))
        assert refused.status == "failed"
        assert refused.errors is not None and refused.errors.data
        assert (refused.errors.data[0].code, refused.errors.data[0].line) == (
            "model_not_allowed", 2)
        deleted = await alice.files.delete(done.input_file_id)
        assert deleted.deleted
        with pytest.raises(openai.NotFoundError):
            await alice.files.retrieve(done.input_file_id)


async def test_listing_pages(server: AppServer) -> None:
    async with client_for(server) as client:
        made = [await submit(client, jsonl(line("a", str(i)))) for i in range(5)]
        page = await client.batches.list(limit=2)
        assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
        later = await client.batches.list(limit=2, after=page.data[-1].id)
        assert [b.id for b in later.data] == made[::-1][2:4]
        assert [b.id async for b in client.batches.list(limit=2)] == made[::-1]
        files = await client.files.list(limit=2)
        assert len(files.data) == 2 and files.has_more
        with pytest.raises(openai.BadRequestError, match="limit"):
            await client.batches.list(limit=1000)


async def test_cancel_stops_the_batch(serve: Any, upstream: FaultyUpstream) -> None:
    server = await serve(batch_concurrency=2)
    upstream.faults.extend(["ok", "ok", *["hang"] * 10])
    async with client_for(server) as client:
        batch_id = await submit(client, jsonl(*(line(f"r{i}", f"q{i}") for i in range(8))))
        await wait_for(client, batch_id, lambda b: b.request_counts.completed == 2
                       and upstream.active == 2)  # two answered, two hanging
        cancelling = await client.batches.cancel(batch_id)
        assert cancelling.status in ("cancelling", "cancelled")
        batch = await wait_for(client, batch_id)
        assert batch.status == "cancelled" and batch.cancelled_at and batch.cancelling_at
        assert batch.request_counts is not None and batch.request_counts.completed == 2
        out = await results(client, batch.output_file_id)
        assert sorted(r["custom_id"] for r in out) == ["r0", "r1"]
        with pytest.raises(openai.APIStatusError) as caught:
            await client.batches.cancel(batch_id)
        assert caught.value.status_code == 409
    assert await upstream.wait_idle()  # the hanging requests were stopped
    assert upstream.requests == 4


async def test_a_stopped_server_resumes_its_batch(serve: Any, upstream: FaultyUpstream,
                                                  store_backend: StoreBackend) -> None:
    """Stop the server with two lines answered and two in flight; a new server on the same
    store answers the rest: every line once in the output, no answered line asked again."""
    upstream.faults.extend(["ok", "ok", *["hang"] * 10])
    first = await serve(store=store_backend.open(), batch_concurrency=2)
    async with client_for(first) as client:
        batch_id = await submit(client, jsonl(*(line(f"r{i}", f"q{i}") for i in range(6))))
        await wait_for(client, batch_id, lambda b: b.request_counts.completed == 2
                       and upstream.active == 2)
    await first.stop()
    upstream.faults.clear()
    second = await serve(store=store_backend.open(), batch_concurrency=2)
    async with client_for(second) as client:
        batch = await wait_for(client, batch_id)
        assert batch.status == "completed"
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed) == (6, 6)
        out = await results(client, batch.output_file_id)
    assert [r["custom_id"] for r in out] == [f"r{i}" for i in range(6)]
    asked = Counter(body["messages"][-1]["content"] for body in upstream.bodies)
    answered_first = {f"q{i}" for i in range(6)} - {
        text for text, count in asked.items() if count > 1}
    assert len(answered_first) >= 2 and max(asked.values()) <= 2  # only the hung ones again
    assert sum(asked.values()) == 8  # 2 answered + 2 hung + 4 after the restart


async def test_a_dead_servers_claim_is_taken_over(serve: Any, tmp_path: Any) -> None:
    """A batch claimed by a server that died (its claim not renewed) is resumed once the
    claim is older than ``batch_claim_timeout``; a fresh claim is left alone."""
    from modelplex_server.sqlite_store import SQLiteConversationStore

    path = tmp_path / "store.db"
    first = await serve(store=SQLiteConversationStore(path))
    runner = first.runner.app[BATCHES]
    await runner.stop()  # this server stops running batches: like one that hangs
    async with client_for(first) as client:
        batch_id = await submit(client, jsonl(line("a", "x")))
    store = first.runner.app[GATEWAY].conversations
    assert await store.claim_batch(batch_id, "dead-server", stale=1.0)
    second = await serve(store=SQLiteConversationStore(path), batch_claim_timeout=1.0)
    async with client_for(second) as client:
        batch = await wait_for(client, batch_id)
        assert batch.status == "completed"
    other = second.runner.app[BATCHES]
    assert isinstance(other, BatchRunner) and not other._tasks


async def test_a_batch_spends_its_keys_budget(serve: Any) -> None:
    """Lines run with the batch's key: once its budget is spent, the next lines are 429s in
    the error file (the batch still completes)."""
    keys = [KeyConfig(name="alice", hash=hash_key("k-alice"), budget="5 tokens/day")]
    server = await serve(keys=keys, batch_concurrency=1)
    async with client_for(server, "k-alice") as client:
        batch = await wait_for(client, await submit(client, jsonl(
            *(line(f"r{i}", f"q{i}") for i in range(3)))))
        assert batch.status == "completed"
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
        errors = await results(client, batch.error_file_id)
        assert [e["response"]["status_code"] for e in errors] == [429, 429]
        assert {e["response"]["body"]["error"]["code"] for e in errors} == {"budget_exceeded"}


async def test_lines_past_the_window_expire(server: AppServer, upstream: FaultyUpstream
                                            ) -> None:
    runner = server.runner.app[BATCHES]
    store = server.runner.app[GATEWAY].conversations
    await runner.stop()  # made while no runner looks, then found past its window
    async with client_for(server) as client:
        batch_id = await submit(client, jsonl(line("a", "x"), line("b", "y")))
        await store.update_batch(batch_id, data={"expires_at": 1})
        await runner.start()
        batch = await wait_for(client, batch_id)
        assert batch.status == "expired" and batch.expired_at
        errors = await results(client, batch.error_file_id)
        assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
            ("a", None, "batch_expired"), ("b", None, "batch_expired")]
    assert upstream.requests == 0


async def test_a_server_whose_claim_was_taken_stops(serve: Any, upstream: FaultyUpstream
                                                    ) -> None:
    """When another server took a batch over (this one did not renew its claim in time),
    this one stops its lines in flight instead of running the batch twice."""
    server = await serve(batch_concurrency=2)  # claims go stale after 30 s
    runner = server.runner.app[BATCHES]
    store = server.runner.app[GATEWAY].conversations
    upstream.faults.extend(["hang"] * 10)
    async with client_for(server) as client:
        batch_id = await submit(client, jsonl(*(line(f"r{i}", f"q{i}") for i in range(4))))
        await wait_for(client, batch_id, lambda b: upstream.active == 2)
        assert await store.claim_batch(batch_id, "another-server", stale=-1)
        runner.wake()  # look now rather than at the next renewal
        await wait_for(client, batch_id, lambda b: not runner._tasks)
        assert await upstream.wait_idle()
        batch = await client.batches.retrieve(batch_id)
        assert batch.status == "in_progress"  # the other server carries on
        assert not await store.claim_batch(batch_id, runner.id, stale=60)


@pytest.mark.slow
async def test_a_killed_server_resumes_its_batch(upstream: FaultyUpstream,
                                                 tmp_path: Path) -> None:
    """``modelplex serve`` killed with SIGKILL mid-batch (two lines answered, two in flight,
    its claim never released): started again, it takes the batch over once the claim is
    ``batch_claim_timeout`` old and finishes it, every line once."""
    (tmp_path / "openai.toml").write_text("")
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nhealth_interval = 3600\nbatch_concurrency = 2\n'
                      f'batch_claim_timeout = 1\nstore = "{tmp_path / "store.db"}"\n')
    env = {"MODELPLEX_OPENAI_ENDPOINTS": json.dumps({"fault": {"base_url":
                                                                upstream.url + "/v1"}}),
           "MODELPLEX_OPENAI_CONFIG": str(tmp_path / "openai.toml"),
           "MODELPLEX_LOAD_PLUGINS": "openai,server", "MODELPLEX_DATA_DIR": str(tmp_path)}
    upstream.faults.extend(["ok", "ok", *["hang"] * 10])
    first = await asyncio.to_thread(ServeProcess, "--config", str(config), "--port", "0",
                                    env=env)
    try:
        async with openai.AsyncOpenAI(base_url=first.url + "/v1", api_key="x",
                                      max_retries=0) as client:
            batch_id = await submit(client, jsonl(*(line(f"r{i}", f"q{i}")
                                                    for i in range(6))))
            await wait_for(client, batch_id, lambda b: b.request_counts.completed == 2
                           and upstream.active == 2)
    finally:
        first.proc.kill()
        await asyncio.to_thread(first.stop)
    upstream.faults.clear()
    second = await asyncio.to_thread(ServeProcess, "--config", str(config), "--port", "0",
                                     env=env)
    try:
        async with openai.AsyncOpenAI(base_url=second.url + "/v1", api_key="x",
                                      max_retries=0) as client:
            batch = await wait_for(client, batch_id)
            assert batch.status == "completed"
            out = await results(client, batch.output_file_id)
    finally:
        assert await asyncio.to_thread(second.stop) == 0
    assert [r["custom_id"] for r in out] == [f"r{i}" for i in range(6)]
    assert upstream.requests == 8  # 2 answered, 2 in flight when killed, 4 after


async def test_open_batches_per_key_are_capped(serve: Any, upstream: FaultyUpstream) -> None:
    server = await serve(max_open_batches=2)
    upstream.faults.extend(["hang"] * 10)  # the first two batches stay open
    async with client_for(server) as client:
        first = await submit(client, jsonl(line("a", "1")))
        await submit(client, jsonl(line("a", "1")))
        uploaded = await client.files.create(file=("c.jsonl", jsonl(line("a", "1"))),
                                             purpose="batch")
        with pytest.raises(openai.BadRequestError, match="max_open_batches") as caught:
            await client.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                        completion_window="24h")
        body: Any = caught.value.body
        assert body["code"] == "batches_limit_reached"
        await client.batches.cancel(first)
        await wait_for(client, first)
        third = await client.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                            completion_window="24h")
        assert third.status == "validating"


async def test_limits_hold_for_creates_at_once(serve: Any, upstream: FaultyUpstream,
                                              store_backend: StoreBackend) -> None:
    """max_files and max_open_batches are checked in the store's step that inserts: twelve
    uploads, then eight batches, asked at once through two servers sharing one store (SQLite
    and a real PostgreSQL), keep exactly the limits, and the rest get the limit's 400."""
    upstream.faults.extend(["hang"] * 20)  # the batches made stay open
    servers = [await serve(store=store_backend.open(), max_files=5, max_open_batches=2)
               for _ in range(2)]
    clients = [client_for(server) for server in servers]

    async def refused(call: Any, code: str) -> Any:
        try:
            return await call
        except openai.BadRequestError as err:
            body: Any = err.body
            assert body["code"] == code
            return None

    try:
        uploads = await asyncio.gather(*(refused(clients[i % 2].files.create(
            file=(f"{i}.jsonl", jsonl(line("a", "1"))), purpose="batch"),
            "files_limit_reached") for i in range(12)))
        kept = [f.id for f in uploads if f is not None]
        assert len(kept) == 5
        assert sorted(f.id for f in (await clients[1].files.list()).data) == sorted(kept)
        batches = await asyncio.gather(*(refused(clients[i % 2].batches.create(
            input_file_id=kept[i % 5], endpoint=CHAT, completion_window="24h"),
            "batches_limit_reached") for i in range(8)))
        assert sum(b is not None for b in batches) == 2
        assert len((await clients[0].batches.list()).data) == 2
    finally:
        for client in clients:
            await client.close()


async def test_the_batch_object_has_its_model_and_usage(server: AppServer) -> None:
    async with client_for(server) as client:
        batch = await wait_for(client, await submit(client, jsonl(
            line("a", "1"), line("b", "2"))))
        assert batch.status == "completed" and batch.model == "fault:fault"
        assert batch.usage is not None
        assert (batch.usage.input_tokens, batch.usage.output_tokens,
                batch.usage.total_tokens) == (6, 10, 16)
        assert batch.usage.input_tokens_details.cached_tokens == 0
        mixed = await wait_for(client, await submit(client, jsonl(
            line("a", "1"), line("b", "2", model="tools:gpt-4o"))))
        assert mixed.model is None
