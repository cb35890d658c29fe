"""Against a real server: llama-cpp-python's OpenAI-compatible server on the tiny GGUF."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelplex.errors import ModelNotFoundError
from modelplex.provider import Provider
from modelplex.testing import Cli, ProviderConformanceTests
from modelplex_openai.provider import OpenAIProvider

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "seed": 7}


@pytest.fixture
async def local(llama_server: str) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(name="llamacpp-server", base_url=llama_server)
    yield provider
    await provider.aclose()


class TestLlamaServerConformance(ProviderConformanceTests):
    """The shared provider contract, against the real server."""

    plugin = None  # the registration is checked by the upstream-driven suite
    in_process = True  # a real server, not the test upstream (test_replay.py drives that)

    @pytest.fixture
    async def provider(self, llama_server: str) -> AsyncIterator[OpenAIProvider]:
        provider = OpenAIProvider(name="llamacpp-server", base_url=llama_server)
        yield provider
        await provider.aclose()

    @pytest.fixture
    def model(self) -> str:
        return "tiny"

    async def test_missing_model_raises_model_not_found(self, provider: Provider) -> None:
        """True behaviour of llama_cpp.server in single-model mode: any model name is served.

        It answers with its one model and echoes the requested name, so there is no 404 to map
        (the 404 mapping is covered by the replay suite); asking for the model's details by an
        unknown name does raise ModelNotFoundError.
        """
        chunks = [c async for c in provider.chat(self.messages, model=self.missing_model,
                                                 options=self.options)]
        assert "".join(c.content for c in chunks)
        assert chunks[-1].model == self.missing_model
        with pytest.raises(ModelNotFoundError, match=self.missing_model):
            await provider.show_model(self.missing_model)


async def test_joined_stream_equals_complete(local: OpenAIProvider) -> None:
    options = {**GREEDY, "max_tokens": 40}
    chunks = [c async for c in local.chat(MESSAGES, model="tiny", options=options)]
    response = await local.complete(MESSAGES, model="tiny", options=options)
    assert "".join(c.content for c in chunks) == response.content
    assert chunks[-1].finish_reason == response.finish_reason
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == response.usage.completion_tokens


async def test_usage_on_the_final_chunk_only(local: OpenAIProvider) -> None:
    chunks = [c async for c in local.chat(MESSAGES, model="tiny",
                                          options={**GREEDY, "max_tokens": 10})]
    usage = chunks[-1].usage
    assert usage is not None
    # llama-cpp-python sends no usage chunk and no timings: counts come from the deltas.
    assert usage.estimated
    assert usage.completion_tokens == 10
    assert usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    response = await local.complete(MESSAGES, model="tiny", options={**GREEDY, "max_tokens": 10})
    assert not response.usage.estimated  # the non-streaming answer carries real counts
    assert response.usage.completion_tokens == 10


async def test_max_tokens_ends_with_length(local: OpenAIProvider) -> None:
    chunks = [c async for c in local.chat(MESSAGES, model="tiny",
                                          options={**GREEDY, "max_tokens": 3})]
    assert chunks[-1].finish_reason == "length"
    response = await local.complete(MESSAGES, model="tiny", options={**GREEDY, "max_tokens": 3})
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == 3


async def test_stop_sequence(local: OpenAIProvider) -> None:
    free = await local.complete(MESSAGES, model="tiny", options={**GREEDY, "max_tokens": 30})
    text = free.content
    assert len(text) > 4
    stop = text[3]
    cut = text[:text.index(stop)]
    options = {**GREEDY, "max_tokens": 30, "stop": [stop]}
    stopped = await local.complete(MESSAGES, model="tiny", options=options)
    assert stopped.content == cut
    assert stopped.finish_reason == "stop"
    chunks = [c async for c in local.chat(MESSAGES, model="tiny", options=options)]
    assert "".join(c.content for c in chunks) == cut
    assert chunks[-1].finish_reason == "stop"


async def test_json_object_output_parses(local: OpenAIProvider) -> None:
    options = {**GREEDY, "max_tokens": 60}
    response = await local.complete(MESSAGES, model="tiny", options=options,
                                    response_format="json")
    assert isinstance(json.loads(response.content), dict | list)
    chunks = [c async for c in local.chat(MESSAGES, model="tiny", options=options,
                                          response_format="json")]
    assert json.loads("".join(c.content for c in chunks)) == json.loads(response.content)


async def test_embeddings_have_the_model_dimension(local: OpenAIProvider) -> None:
    vectors = await local.embed(["hello", "world", "again"], model="tiny",
                                options={"batch_size": 2})
    assert len(vectors) == 3
    assert {len(v) for v in vectors} == {64}
    assert vectors[0] != vectors[1]
    assert await local.embed([], model="tiny") == []


async def test_model_listing_and_health(local: OpenAIProvider) -> None:
    models = await local.list_models()
    assert [m.id for m in models] == ["tiny"]
    assert models[0].provider == "llamacpp-server"
    assert (await local.show_model("tiny")).id == "tiny"
    health = await local.health()
    assert health.healthy
    assert health.model_count == 1


async def test_unreachable_server_is_unhealthy() -> None:
    async with OpenAIProvider(name="nowhere", base_url="http://127.0.0.1:9/v1") as provider:
        health = await provider.health()
    assert not health.healthy
    assert "cannot connect" in (health.detail or "")


def _cli(tmp_path: Path, **env: str) -> Cli:
    """``modelplex`` with only the openai plugin, none of the developer's OpenAI and
    modelplex settings, and its config folder in ``tmp_path``."""
    return Cli(drop=("OPENAI_", "MODELPLEX_"), env={
        "XDG_CONFIG_HOME": str(tmp_path), "MODELPLEX_LOAD_PLUGINS": "openai", **env})


def test_cli_chat_with_a_named_endpoint(llama_server: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path, MODELPLEX_OPENAI_ENDPOINTS=json.dumps(
        {"llamacpp-server": {"base_url": llama_server}}))
    result = cli.run("chat", "-m", "llamacpp-server:tiny", "-o", "max_tokens", "8",
                     "-o", "temperature", "0", "-u", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "[llamacpp-server:tiny] prompt" in result.stderr
    assert "completion 8 tokens" in result.stderr


def test_cli_chat_with_openai_base_url(llama_server: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path, OPENAI_BASE_URL=llama_server,
               OPENAI_API_KEY="sk-local-test-key-1234567890")
    result = cli.run("chat", "-m", "openai:tiny", "-o", "max_tokens", "5", "-u", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "[openai:tiny]" in result.stderr
    assert "sk-local-test-key" not in result.stdout + result.stderr


def test_cli_models_list_through_a_config_file(llama_server: str, tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    (tmp_path / "modelplex").mkdir()
    (tmp_path / "modelplex" / "openai.toml").write_text(
        f'[local]\nbase_url = "{llama_server}"\ndefault_model = "tiny"\n')
    result = cli.run("models", "list", "-p", "local", "--json")
    assert result.returncode == 0, result.stderr
    # ids are provider:model, as the user types them
    assert [m["id"] for m in json.loads(result.stdout)["models"]] == ["local:tiny"]
    # the endpoint's default model is used when only the provider is named
    result = cli.run("chat", "-m", "local", "-o", "max_tokens", "4", "hi")
    assert result.returncode == 0, result.stderr


async def test_native_structured_output_through_the_server(llama_server: str) -> None:
    """modelplex-openai sends the schema as response_format; the server's grammar holds the
    tiny babbling model to it, so the answer validates on the first attempt."""
    from pydantic import BaseModel, Field

    from modelplex import ChatManager

    class Reading(BaseModel):
        sensor: str = Field(max_length=12)
        level: int
        ok: bool

    config = {"openai": {"base_url": llama_server, "api_key": "sk-unused-000000",
                         "json_schema_style": "json_object"}}
    async with ChatManager("openai:tiny", provider_config=config,
                           options={**GREEDY, "max_tokens": 120}) as chat:
        result = await chat.get_structured("Read the sensor.", Reading, max_retries=0)
    assert (result.mode, result.attempts) == ("native", 1)
    assert isinstance(result.value, Reading)
