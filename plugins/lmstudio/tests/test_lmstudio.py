"""LM Studio: chat over /v1 and models over the native REST API, replayed (protocols.md §5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aioresponses import aioresponses

import modelplex_lmstudio
from modelplex.errors import BadRequestError, ModelNotFoundError
from modelplex.http import Timeouts
from modelplex.manager import create_provider
from modelplex.plugins import Plugins
from modelplex.testing import ProviderConformanceTests
from modelplex.testing.pytest_plugin import Sent
from modelplex_lmstudio.provider import LMStudioProvider
from modelplex_openai.provider import OpenAIProvider

HOST = "http://lmstudio.test:1234"
CHAT = HOST + "/v1/chat/completions"
SSE = {"Content-Type": "text/event-stream"}
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
COMPLETE = {
    "id": "chatcmpl-lms0002", "object": "chat.completion", "created": 1745000000,
    "model": "qwen2.5-7b-instruct",
    "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "The capital of France is Paris."}}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
    "stats": {},
}
# protocols.md §5.1, observed
NOT_FOUND = {"error": {"message": 'Model "default" not found. Please specify a valid model.'
                                  "\n\nYour models:\n\nqwen2.5-7b-instruct",
                       "type": "invalid_request_error", "param": "model",
                       "code": "model_not_found"}}
# protocols.md §5.3: GET /api/v1/models (LM Studio 0.4+), one loaded LLM, one embedding model
V1_MODELS = {"models": [
    {"type": "llm", "publisher": "lmstudio-community", "key": "qwen2.5-7b-instruct",
     "display_name": "Qwen2.5 7B Instruct", "architecture": "qwen2",
     "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.8}, "size_bytes": 4683073856,
     "params_string": "7B",
     "loaded_instances": [{"id": "qwen2.5-7b-instruct",
                           "config": {"context_length": 8192, "flash_attention": True}}],
     "max_context_length": 32768, "format": "gguf",
     "capabilities": {"vision": False, "trained_for_tool_use": True}},
    {"type": "embedding", "publisher": "nomic-ai", "key": "text-embedding-nomic-embed-text-v1.5",
     "display_name": "Nomic Embed Text v1.5", "architecture": "nomic-bert",
     "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.8}, "size_bytes": 84106624,
     "params_string": None, "loaded_instances": [], "max_context_length": 2048,
     "format": "gguf"},
]}
# protocols.md §5.2: GET /api/v0/models (LM Studio 0.3.6+); the first object is verbatim
V0_MODELS = {"object": "list", "data": [
    {"id": "qwen2-vl-7b-instruct", "object": "model", "type": "vlm", "publisher": "mlx-community",
     "arch": "qwen2_vl", "compatibility_type": "mlx", "quantization": "4bit",
     "state": "not-loaded", "max_context_length": 32768},
    {"id": "granite-3.0-2b-instruct", "object": "model", "type": "llm",
     "publisher": "lmstudio-community", "arch": "granite", "compatibility_type": "gguf",
     "quantization": "Q4_K_M", "state": "loaded", "max_context_length": 4096,
     "capabilities": ["tool_use"]},
]}


@pytest.fixture
async def provider(clean_env: pytest.MonkeyPatch) -> AsyncIterator[LMStudioProvider]:
    p = LMStudioProvider(host=HOST)
    yield p
    await p.aclose()


class TestLMStudioConformance(ProviderConformanceTests):
    """The shared provider contract, driven by the core's test upstream (OpenAI wire)."""

    wire = "openai"
    plugin = "lmstudio"

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> LMStudioProvider:
        return LMStudioProvider(host=base_url, api_key=api_key, timeouts=timeouts)


async def test_replayed_stream_and_errors(mock: aioresponses,
                                          transcript: Callable[[str], str]) -> None:
    """LM Studio's recorded stream, its non-streaming twin and its model-not-found answer."""
    async with LMStudioProvider(host=HOST) as provider:
        mock.post(CHAT, body=transcript("lmstudio_stream.sse"), headers=SSE)
        chunks = [c async for c in provider.chat(MESSAGES, model="qwen2.5-7b-instruct")]
        mock.post(CHAT, payload=COMPLETE)
        response = await provider.complete(MESSAGES, model="qwen2.5-7b-instruct")
        mock.post(CHAT, status=404, payload=NOT_FOUND)
        with pytest.raises(ModelNotFoundError, match="not found"):
            await provider.complete(MESSAGES, model="default")
    assert "".join(c.content for c in chunks) == response.content == \
        "The capital of France is Paris."
    final = chunks[-1]
    assert final.finish_reason == response.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (14, 8)
    assert final.model == "qwen2.5-7b-instruct"


def test_defaults_and_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-not-for-lmstudio-0123456789")
    clean_env.setenv("OPENAI_BASE_URL", "http://elsewhere/v1")
    provider = LMStudioProvider()
    assert isinstance(provider, OpenAIProvider)
    assert provider.name == "lmstudio"
    assert (provider.host, provider.base_url) == ("http://localhost:1234",
                                                  "http://localhost:1234/v1")
    assert "Authorization" not in provider.http.headers
    clean_env.setenv("LMSTUDIO_HOST", "gpu-box:1234/")
    clean_env.setenv("LM_API_TOKEN", "lms-token-0123456789")
    provider = LMStudioProvider()
    assert provider.base_url == "http://gpu-box:1234/v1"
    assert provider.http.headers["Authorization"] == "Bearer lms-token-0123456789"
    assert "lms-token" not in repr(provider)
    assert LMStudioProvider(base_url="http://x:1/v1").host == "http://x:1"


def test_plugin_registers_lmstudio(clean_env: pytest.MonkeyPatch,
                                   modelplex_plugins: Plugins) -> None:
    modelplex_plugins.register(modelplex_lmstudio, name="lmstudio")
    assert "lmstudio" in modelplex_plugins.provider_names()
    provider = create_provider("lmstudio", modelplex_plugins, host="http://other:1234")
    assert isinstance(provider, LMStudioProvider)
    assert provider.base_url == "http://other:1234/v1"


async def test_lmstudio_options_are_sent(provider: LMStudioProvider, mock: aioresponses,
                                         sent: Sent
                                         ) -> None:
    mock.post(CHAT, payload=COMPLETE)
    await provider.complete(MESSAGES, model="qwen2.5-7b-instruct",
                            options={"ttl": 300, "top_k": 40, "repeat_penalty": 1.1,
                                     "presence_penalty": 0.2})
    [body] = sent.bodies(mock)
    assert (body["ttl"], body["top_k"], body["repeat_penalty"], body["presence_penalty"]) == \
        (300, 40, 1.1, 0.2)


async def test_no_model_loaded_is_a_bad_request(provider: LMStudioProvider,
                                                mock: aioresponses) -> None:
    mock.post(CHAT, status=400, payload={"error": {
        "message": "No models loaded. Please load a model in the developer page or use the "
                   "`lms load` command.", "type": "invalid_request_error", "param": "model"}})
    with pytest.raises(BadRequestError, match="No models loaded"):
        await provider.complete(MESSAGES, model="qwen2.5-7b-instruct")


async def test_list_models_from_the_v1_rest_api(provider: LMStudioProvider,
                                                mock: aioresponses) -> None:
    mock.get(HOST + "/api/v1/models", payload=V1_MODELS)
    llm, embedder = await provider.list_models()
    assert llm.id == "qwen2.5-7b-instruct"
    assert llm.provider == "lmstudio"
    assert (llm.family, llm.quantization, llm.context_length) == ("qwen2", "Q4_K_M", 32768)
    assert (llm.size_bytes, llm.parameter_size) == (4683073856, "7B")
    assert llm.capabilities == ["completion", "tools"]
    assert llm.details["loaded"] is True
    assert llm.details["loaded_context_length"] == 8192
    assert llm.details["display_name"] == "Qwen2.5 7B Instruct"
    assert embedder.capabilities == ["embedding"]
    assert embedder.details["loaded"] is False
    assert embedder.details["state"] == "not-loaded"


async def test_list_models_falls_back_to_v0(provider: LMStudioProvider,
                                            mock: aioresponses) -> None:
    mock.get(HOST + "/api/v1/models", status=404, payload={"error": "Unexpected endpoint"})
    mock.get(HOST + "/api/v0/models", payload=V0_MODELS)
    vlm, granite = await provider.list_models()
    assert (vlm.id, vlm.family, vlm.quantization, vlm.context_length) == (
        "qwen2-vl-7b-instruct", "qwen2_vl", "4bit", 32768)
    assert vlm.capabilities == ["completion", "vision"]
    assert vlm.details == {"loaded": False, "state": "not-loaded", "type": "vlm",
                           "publisher": "mlx-community", "format": "mlx"}
    assert granite.capabilities == ["completion", "tools"]
    assert granite.details["loaded"] is True


async def test_old_server_answering_200_with_an_error(provider: LMStudioProvider,
                                                      mock: aioresponses) -> None:
    mock.get(HOST + "/api/v1/models",
             payload={"error": "Unexpected endpoint or method. (GET /api/v1/models)"})
    mock.get(HOST + "/api/v0/models", payload=V0_MODELS)
    assert [m.id for m in await provider.list_models()] == ["qwen2-vl-7b-instruct",
                                                            "granite-3.0-2b-instruct"]


async def test_loaded_models_and_show_model(provider: LMStudioProvider,
                                            mock: aioresponses) -> None:
    for _ in range(4):
        mock.get(HOST + "/api/v1/models", payload=V1_MODELS)
    assert [m.id for m in await provider.list_loaded_models()] == ["qwen2.5-7b-instruct"]
    assert (await provider.show_model("Qwen2.5 7B Instruct")).id == "qwen2.5-7b-instruct"
    assert (await provider.show_model("text-embedding-nomic-embed-text-v1.5")).context_length \
        == 2048
    with pytest.raises(ModelNotFoundError, match=r"no model named 'llama'.*qwen2.5-7b"):
        await provider.show_model("llama")


async def test_embeddings_over_v1(provider: LMStudioProvider, mock: aioresponses) -> None:
    mock.post(HOST + "/v1/embeddings", payload={
        "object": "list", "model": "text-embedding-nomic-embed-text-v1.5@q4_k_m",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    assert await provider.embed(["hi"], model="text-embedding-nomic-embed-text-v1.5") == [
        [0.1, 0.2, 0.3]]


async def test_health_uses_v1_models(provider: LMStudioProvider, mock: aioresponses) -> None:
    mock.get(HOST + "/v1/models", payload={"data": [
        {"id": "qwen2.5-7b-instruct", "object": "model", "owned_by": "organization_owner"}],
        "object": "list"})
    health = await provider.health()
    assert health.healthy
    assert health.model_count == 1
