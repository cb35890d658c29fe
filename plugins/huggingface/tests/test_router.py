"""The Inference Providers router (protocols.md §4.1), replayed; and the endpoint table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses

import modelplex_huggingface
from modelplex import create_provider
from modelplex.errors import (
    AuthenticationError,
    ConfigurationError,
    ModelNotFoundError,
    UnsupportedOperationError,
)
from modelplex.http import Timeouts
from modelplex.plugins import Plugins
from modelplex.testing import ProviderConformanceTests
from modelplex_huggingface.router import HFRouterProvider
from modelplex_huggingface.tei import TEIProvider
from modelplex_huggingface.tgi import TGIProvider

ROUTER = "https://router.huggingface.co/v1"
CHAT = ROUTER + "/chat/completions"
TOKEN = "hf_abcdefghijklmnopqrstuvwxyz012345"
SSE = {"Content-Type": "text/event-stream"}
ASK = [{"role": "user", "content": "What's the weather like in Edinburgh?"}]
JSON_TEXT = '{"city":"San Francisco","temperature":61,"units":"f"}'
# The non-streaming twin of router_json_stream.sse.
JSON_COMPLETE = {
    "id": "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF", "object": "chat.completion",
    "created": 1727346169, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": JSON_TEXT},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 79, "completion_tokens": 14, "total_tokens": 93}}
# protocols.md §4.1 [OBS]
NOT_SUPPORTED = {"error": {
    "message": "The requested model 'Qwen/Qwen3-Next-80B-A3B-Thinking' is not supported by any "
               "provider you have enabled.", "type": "invalid_request_error", "param": "model",
    "code": "model_not_supported"}}
BAD_TOKEN = {"error": "Invalid credentials in Authorization header"}
HEADERS = {"User-Agent": "modelplex-openai/0.1.0", "Accept": "application/json",
           "Authorization": "<redacted>", "Content-Type": "application/json"}


class TestRouterConformance(ProviderConformanceTests):
    """The shared provider contract through the router's (OpenAI) wire, on the core's test
    upstream."""

    wire = "openai"
    plugin = "huggingface"

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> HFRouterProvider:
        return HFRouterProvider(base_url=base_url + "/v1", api_key=api_key, timeouts=timeouts)


async def test_provider_suffix_token_and_exact_request(
        mock: aioresponses, transcript: Callable[[str], str],
        sent: Callable[..., list[Any]], clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HF_TOKEN", TOKEN)
    mock.post(CHAT, body=transcript("router_json_stream.sse"), headers=SSE)
    async with create_provider("huggingface") as p:
        assert isinstance(p, HFRouterProvider)
        chunks = [c async for c in p.chat(ASK, model="deepseek-ai/DeepSeek-V3-0324:sambanova",
                                          options={"temperature": 0.2})]
        requests = sent(mock, p, TOKEN)
    assert "".join(c.content for c in chunks) == JSON_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 14
    assert requests == [("POST", CHAT, HEADERS, {
        "model": "deepseek-ai/DeepSeek-V3-0324:sambanova", "messages": ASK,
        "temperature": 0.2, "stream": True, "stream_options": {"include_usage": True}})]


async def test_token_file_is_used_when_no_variable(
        mock: aioresponses, sent: Callable[..., list[Any]], tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(TOKEN + "\n")
    mock.post(CHAT, payload=JSON_COMPLETE)
    async with HFRouterProvider() as p:
        await p.complete(ASK, model="m")
        [(_, _, headers, _)] = sent(mock, p)
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert p.token_source == str(tmp_path / "hf" / "token")


async def test_bad_token_string_error_names_the_fix(mock: aioresponses) -> None:
    mock.post(CHAT, status=401, payload=BAD_TOKEN)
    async with HFRouterProvider(api_key=TOKEN) as p:
        with pytest.raises(AuthenticationError) as info:
            await p.complete(ASK, model="m")
    message = str(info.value)
    assert "Invalid credentials in Authorization header" in message
    assert "Make calls to Inference Providers" in message and TOKEN not in message


async def test_huggingface_api_key_is_read_like_hf_token(
        mock: aioresponses, sent: Callable[..., list[Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGFACE_API_KEY", TOKEN)
    mock.post(CHAT, payload=JSON_COMPLETE)
    async with HFRouterProvider() as p:
        await p.complete(ASK, model="m")
        [(_, _, headers, _)] = sent(mock, p)
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert p.token_source == "HUGGINGFACE_API_KEY"


async def test_no_token_says_to_set_hf_token(mock: aioresponses) -> None:
    mock.post(CHAT, status=401, payload=BAD_TOKEN)
    async with HFRouterProvider() as p:
        with pytest.raises(AuthenticationError, match="no token was sent: set HF_TOKEN"):
            await p.complete(ASK, model="m")


async def test_gated_model_has_a_clear_message(mock: aioresponses) -> None:
    mock.post(CHAT, status=403, payload={"error": "Access to model meta-llama/Llama-3.1-8B is "
                                                  "restricted and you are not in the authorized "
                                                  "list (gated repo)."})
    async with HFRouterProvider(api_key=TOKEN) as p:
        with pytest.raises(AuthenticationError, match="gated or restricted: accept its "
                                                      "conditions"):
            await p.complete(ASK, model="meta-llama/Llama-3.1-8B")


async def test_model_not_supported_is_model_not_found(mock: aioresponses) -> None:
    mock.post(CHAT, status=400, payload=NOT_SUPPORTED)
    async with HFRouterProvider(api_key=TOKEN) as p:
        with pytest.raises(ModelNotFoundError, match="not supported by any provider"):
            await p.complete(ASK, model="Qwen/Qwen3-Next-80B-A3B-Thinking")


async def test_router_models_with_providers(mock: aioresponses) -> None:
    mock.get(ROUTER + "/models", payload={"object": "list", "data": [{
        "id": "Qwen/Qwen3-8B", "object": "model", "owned_by": "Qwen",
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        "providers": [{"provider": "novita", "status": "live", "context_length": 40960,
                       "pricing": {"input": 0.035, "output": 0.138}, "supports_tools": True,
                       "supports_structured_output": False, "is_model_author": False}]}]})
    async with HFRouterProvider(api_key=TOKEN) as p:
        [model] = await p.list_models()
    assert (model.id, model.context_length) == ("Qwen/Qwen3-8B", 40960)
    assert model.capabilities == ["completion", "tools"]
    assert model.details["providers"][0]["provider"] == "novita"


async def test_models_of_one_inference_provider_from_the_hub(
        mock: aioresponses, sent: Callable[..., list[Any]]) -> None:
    url = ("https://huggingface.co/api/models?inference_provider=sambanova"
           "&pipeline_tag=text-generation&limit=1000")
    mock.get(url, payload=[{"id": "deepseek-ai/DeepSeek-V3-0324", "likes": 3000,
                            "pipeline_tag": "text-generation", "tags": ["conversational"]}])
    async with HFRouterProvider(api_key=TOKEN, inference_provider="sambanova") as p:
        [model] = await p.list_models()
        [(method, sent_url, headers, _)] = sent(mock, p, TOKEN)
    assert model.id == "deepseek-ai/DeepSeek-V3-0324"
    assert model.details["inference_provider"] == "sambanova"
    assert (method, headers["Authorization"]) == ("GET", "<redacted>")
    assert sent_url.startswith("https://huggingface.co/api/models?")
    assert sorted(sent_url.split("?")[1].split("&")) == [
        "inference_provider=sambanova", "limit=1000", "pipeline_tag=text-generation"]


async def test_router_has_no_embeddings() -> None:
    async with HFRouterProvider(api_key=TOKEN) as p:
        with pytest.raises(UnsupportedOperationError, match="tei endpoint"):
            await p.embed(["x"], model="m")


def test_secret_never_in_repr() -> None:
    p = HFRouterProvider(api_key=TOKEN)
    assert TOKEN not in repr(p) and TOKEN not in repr(p.http)


def test_endpoint_table(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                        modelplex_plugins: Plugins) -> None:
    config = tmp_path / "config" / "modelplex"
    config.mkdir(parents=True)
    (config / "huggingface.toml").write_text(
        '[gpu-tgi]\nkind = "tgi"\nbase_url = "http://gpu-box:8080"\napi_key_env = "TGI_KEY"\n'
        '[embedder]\nkind = "tei"\nbase_url = "http://gpu-box:8081"\n'
        '[sambanova]\nkind = "router"\ninference_provider = "sambanova"\n'
        '[broken]\nkind = "tgi"\n')
    clean_env.setenv("MODELPLEX_HF_ENDPOINTS",
                     '{"typo": {"kind": "tgi", "base_url": "http://x:1", "colour": "red"}}')
    modelplex_plugins.register(modelplex_huggingface, name="huggingface")
    assert {"huggingface", "tgi", "tei", "gpu-tgi", "embedder", "sambanova", "broken",
            "typo"} <= set(modelplex_plugins.provider_names())
    tgi = create_provider("gpu-tgi", modelplex_plugins)
    assert isinstance(tgi, TGIProvider)
    assert (tgi.name, tgi.base_url, tgi.api_key_env) == ("gpu-tgi", "http://gpu-box:8080",
                                                         "TGI_KEY")
    tei = create_provider("embedder", modelplex_plugins)
    assert isinstance(tei, TEIProvider) and tei.base_url == "http://gpu-box:8081"
    router = create_provider("sambanova", modelplex_plugins)
    assert isinstance(router, HFRouterProvider) and router.inference_provider == "sambanova"
    with pytest.raises(ConfigurationError, match=r"'broken'.*base_url is required for a tgi"):
        create_provider("broken", modelplex_plugins)
    with pytest.raises(ConfigurationError, match=r"'typo' in MODELPLEX_HF_ENDPOINTS.*colour"):
        create_provider("typo", modelplex_plugins)


def test_endpoint_timeouts_reach_the_provider(clean_env: pytest.MonkeyPatch,
                                              modelplex_plugins: Plugins) -> None:
    clean_env.setenv("MODELPLEX_HF_ENDPOINTS", json.dumps({
        "slow-tgi": {"kind": "tgi", "base_url": "http://x:1", "timeouts": {"first_byte": 300}},
        "bad-tgi": {"kind": "tgi", "base_url": "http://x:1", "timeouts": {"first": 1}}}))
    modelplex_plugins.register(modelplex_huggingface, name="huggingface")
    tgi = create_provider("slow-tgi", modelplex_plugins)
    assert isinstance(tgi, TGIProvider) and tgi.http.timeouts.first_byte == 300
    with pytest.raises(ConfigurationError, match=r"'bad-tgi'.*unknown timeout"):
        create_provider("bad-tgi", modelplex_plugins)
