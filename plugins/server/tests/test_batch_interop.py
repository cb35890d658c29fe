"""modelplex's own OpenAI Batch client (:func:`modelplex.batch.run_provider_batch`, what
``modelplex batch --provider-batch`` runs) against modelplex's own server's ``/v1/files`` and
``/v1/batches``: the client uploads the rows, the server runs them through its path on the
stand-in model (``fault:fault``, a local fault upstream), the client reads the results back."""

from __future__ import annotations

import json
from pathlib import Path

from modelplex import batch
from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.testing.upstream import PIECE, FaultyUpstream
from modelplex_server.app import AppServer


async def test_provider_batch_client_against_our_own_server(
        server: AppServer, upstream: FaultyUpstream, plugins: Plugins, tmp_path: Path) -> None:
    config = parse_config({"providers": {"openai": {"base_url": server.url + "/v1",
                                                    "api_key": "sk-interop-unused"}}},
                          source="interop.toml")
    rows = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(4)]
    rows.append({"id": "terse", "prompt": "question terse", "options": {"max_tokens": 2}})
    out = tmp_path / "out.jsonl"
    seen: list[str] = []
    got = {r.id: r async for r in batch.run_provider_batch(
        rows, model="openai:fault:fault", output=out, poll_every=0.05, config=config,
        pool=ProviderPool(), plugins=plugins, on_status=lambda job: seen.append(job.state.value))}
    assert sorted(got, key=str) == ["r0", "r1", "r2", "r3", "terse"]
    assert all(r.ok for r in got.values()), [r.error for r in got.values()]
    assert all(got[f"r{i}"].answer == PIECE * 5 for i in range(4))
    assert got["terse"].answer == PIECE * 2  # the row's option went through the file
    assert all(r.completion_tokens > 0 and r.model == "openai:fault:fault"
               for r in got.values())
    assert seen[0] == "validating" and seen[-1] == "completed"  # polled to the end
    sent = {r.json["messages"][-1]["content"] for r in upstream.chat_requests()}
    assert sent == {f"question {i}" for i in range(4)} | {"question terse"}
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == sorted(
        got, key=str)
