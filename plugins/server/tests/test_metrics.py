"""``GET /metrics``: the Prometheus text format, parsed with prometheus_client's parser after
real requests; protected when keys are configured; and W3C trace context from a client."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
from prometheus_client.parser import text_string_to_metric_families

from modelplex_server.metrics import prometheus_name
from modelplex_server.settings import KeyConfig, generate_key, hash_key

USER = [{"role": "user", "content": "Hi"}]


async def scrape(url: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, \
            session.get(url + "/metrics", headers=headers) as resp:
        text = await resp.text()
        if resp.status != 200:
            return resp.status, {}
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.status, {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, name: str | None = None) -> list[Any]:
    return [s for s in family.samples if name is None or s.name == name]


async def test_metrics_after_requests_through_a_named_model(serve: Any) -> None:
    server = await serve(models={"fast": "fault:fault"})
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        await client.chat.completions.create(model="fast", messages=USER)
        stream = await client.chat.completions.create(model="fast", messages=USER, stream=True)
        _ = [c async for c in stream]
    status, families = await scrape(server.url)
    assert status == 200
    (active,) = samples(families["modelplex_server_active_requests"])
    assert active.value == 0
    cooling = samples(families["modelplex_router_deployment_cooling"])
    assert [(s.labels["model"], s.value) for s in cooling] == [("fast", 0.0)]
    done = {s.labels["outcome"]: s.value
            for s in samples(families["modelplex_router_deployment_requests"])}
    assert done == {"ok": 2.0, "error": 0.0}


async def test_metrics_need_an_admin_key_when_keys_are_configured(serve: Any) -> None:
    admin, user = generate_key(), generate_key()
    server = await serve(keys=[KeyConfig(name="ops", hash=hash_key(admin), admin=True),
                               KeyConfig(name="app", hash=hash_key(user))])
    assert (await scrape(server.url))[0] == 401
    assert (await scrape(server.url, "wrong"))[0] == 401
    assert (await scrape(server.url, user))[0] == 403
    status, families = await scrape(server.url, admin)
    assert status == 200 and "modelplex_server_active_requests" in families


def test_prometheus_names() -> None:
    assert prometheus_name("gen_ai.client.operation.duration", "s") == \
        "gen_ai_client_operation_duration_seconds"
    assert prometheus_name("gen_ai.client.token.usage", "{token}") == "gen_ai_client_token_usage"
