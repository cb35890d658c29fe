"""Issue 19 #1: what a request may make llama.cpp allocate.

Load-time settings (``n_ctx``, ``threads``) are the provider's, not a request's, unless the
operator allows them; the loaded instances are bounded (the least recently used idle one is
freed, really freed); every value has an upper bound and a clear error naming it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from modelplex.errors import BadRequestError, ConfigurationError, OptionsError
from modelplex_llamacpp.provider import LlamaCppProvider

from .conftest import ServeFactory

MESSAGES = [{"role": "user", "content": "Say something."}]
CPUS = os.cpu_count() or 1


def rss_mb() -> float:
    """This process's resident memory in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def freed(loaded: Any) -> bool:
    """Whether a loaded instance was closed (its memory freed)."""
    return bool(loaded.closed)


async def ask(provider: LlamaCppProvider, **options: object) -> None:
    async for _ in provider.chat(MESSAGES, model="tiny", options={"max_tokens": 1, **options}):
        pass


@pytest.mark.parametrize(("option", "value"), [("n_ctx", 1024), ("threads", 1)])
async def test_requests_may_not_set_load_options_by_default(models_dir: Path, option: str,
                                                            value: int) -> None:
    async with LlamaCppProvider(models_dir=models_dir) as provider:
        with pytest.raises(OptionsError, match=rf"option '{option}' is a load-time setting.*"
                                               rf"\[providers\.llamacpp\] {option} = {value}.*"
                                               r"allow_load_options = true"):
            provider.chat(MESSAGES, model="tiny", options={option: value})
        with pytest.raises(OptionsError, match=option):
            await provider.embed(["x"], model="tiny", options={option: value})
        assert not provider._loaded


async def test_distinct_load_options_keep_loaded_models_bounded(models_dir: Path) -> None:
    """The probe's attack: a new n_ctx and thread count per request. Before the fix, each one
    loaded another copy (about 4 MB each with the tiny model, gigabytes with a real one)."""
    async with LlamaCppProvider(models_dir=models_dir, allow_load_options=True) as provider:
        for n_ctx in (256, 320):  # warm up: the bound is reached
            await ask(provider, n_ctx=n_ctx)
        before = rss_mb()
        for i in range(24):
            await ask(provider, n_ctx=384 + 64 * i, threads=1 + i % CPUS)
            loaded = await provider.list_loaded_models()
            assert len(loaded) <= 2
        grown = rss_mb() - before
        assert [m.details["n_ctx"] for m in loaded] == [384 + 64 * 22, 384 + 64 * 23]
    assert grown < 20, f"RSS grew by {grown:.1f} MB over 24 loads"


async def test_threads_change_without_reloading(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, allow_load_options=True) as provider:
        await ask(provider)
        first = provider._loaded[next(iter(provider._loaded))]
        for threads in (1, CPUS, None):
            await ask(provider, **({"threads": threads} if threads else {}))
            assert list(provider._loaded.values()) == [first]
            assert first.threads == ((threads, threads) if threads else first.default_threads)


async def test_evicted_model_is_closed(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, max_loaded_models=1,
                                allow_load_options=True) as provider:
        await ask(provider, n_ctx=512)
        [old] = provider._loaded.values()
        await ask(provider, n_ctx=1024)
        assert old.closed
        [new] = provider._loaded.values()
        assert new is not old and not new.closed


async def test_a_model_in_use_is_not_freed_the_next_load_waits(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, max_loaded_models=1,
                                allow_load_options=True) as provider:
        stream = provider.chat(MESSAGES, model="tiny",
                               options={"n_ctx": 512, "max_tokens": 100_000})
        await stream.__anext__()
        [busy] = provider._loaded.values()
        other = asyncio.create_task(ask(provider, n_ctx=1024))
        await asyncio.sleep(0.3)
        assert not other.done()
        assert not freed(busy) and len(provider._loaded) == 1
        await stream.aclose()
        await asyncio.wait_for(other, 30)
        assert freed(busy)
        assert [m.details["n_ctx"] for m in await provider.list_loaded_models()] == [1024]


async def test_waiting_on_itself_is_an_error_not_a_hang(models_dir: Path) -> None:
    """A task reading a stream that asks for another instance while it holds every slot would
    wait for itself forever."""
    async with LlamaCppProvider(models_dir=models_dir, max_loaded_models=1) as provider:
        stream = provider.chat(MESSAGES, model="tiny", options={"max_tokens": 100_000})
        await stream.__anext__()
        with pytest.raises(ConfigurationError, match=r"already holds all 1 loaded model "
                                                     r"instances.*max_loaded_models"):
            async with asyncio.timeout(10):  # (in this task: wait_for would start another)
                await provider.embed(["x"], model="tiny")
        await stream.aclose()
        assert len(await provider.embed(["x"], model="tiny")) == 1


async def test_chat_and_embeddings_share_the_bound(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, max_loaded_models=1) as provider:
        await ask(provider)
        await provider.embed(["x"], model="tiny")
        [only] = await provider.list_loaded_models()
        assert only.details["embedding"] is True
        await ask(provider)
        assert len(await provider.list_loaded_models()) == 1


@pytest.mark.parametrize(("options", "message"), [
    ({"n_ctx": 4096}, r"option 'n_ctx' must be at most 2048, the context model 'tiny' was "
                      r"trained with \(got 4096\)"),
    ({"n_ctx": 1_048_576}, r"option 'n_ctx' must be at most 2048"),
    ({"n_ctx": 1_048_577}, r"option 'n_ctx' must be > 0 and <= 1048576"),
    ({"threads": CPUS + 1}, rf"option 'threads' must be at most {CPUS}, this machine's CPU "
                            rf"count \(got {CPUS + 1}\)"),
])
async def test_over_limit_values_are_refused(models_dir: Path, options: dict[str, int],
                                             message: str) -> None:
    async with LlamaCppProvider(models_dir=models_dir, allow_load_options=True) as provider:
        with pytest.raises(OptionsError, match=message):
            await ask(provider, **options)
        assert not provider._loaded


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threads": CPUS + 1}, rf"threads must be an integer from 1 to {CPUS}"),
    ({"n_batch": 0}, r"n_batch must be an integer from 1"),
    ({"max_loaded_models": 0}, r"max_loaded_models must be an integer from 1 to 64"),
    ({"n_ctx": "big"}, r"n_ctx must be an integer"),
    ({"allow_load_options": "yes"}, r"allow_load_options must be true or false"),
])
def test_provider_settings_are_bounded(models_dir: Path, kwargs: dict[str, object],
                                       message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        LlamaCppProvider(models_dir=models_dir, **kwargs)  # type: ignore[arg-type]


async def test_provider_n_ctx_above_the_trained_context_is_refused(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, n_ctx=8192) as provider:
        with pytest.raises(OptionsError, match=r"at most 2048.*\[providers\.llamacpp\] n_ctx"):
            await ask(provider)


async def test_provider_settings_apply(models_dir: Path) -> None:
    async with LlamaCppProvider(models_dir=models_dir, n_ctx=1024, threads=1,
                                n_batch=4096) as provider:
        await ask(provider)
        [loaded] = await provider.list_loaded_models()
        assert loaded.details["n_ctx"] == 1024
        assert loaded.details["n_batch"] == 1024  # at most n_ctx
        assert loaded.details["threads"] == 1


# -- through the server -----------------------------------------------------------------------
def chat_body(**extra: object) -> dict[str, object]:
    return {"model": "llamacpp:tiny", "messages": MESSAGES, "max_tokens": 2, **extra}


@pytest.mark.parametrize("stream", [False, True])
async def test_server_refuses_a_requests_n_ctx(serve: ServeFactory, stream: bool) -> None:
    served = await serve()
    status, body = await served.post("/v1/chat/completions", chat_body(
        options={"n_ctx": 1_048_576}, stream=stream))
    assert status == 400
    assert "option 'n_ctx' is a load-time setting" in body["error"]["message"]
    assert "allow_load_options" in body["error"]["message"]
    status, body = await served.post("/v1/chat/completions", chat_body(stream=stream))
    assert status == 200


async def test_server_bounds_n_ctx_when_the_operator_allows_it(serve: ServeFactory) -> None:
    served = await serve(allow_load_options=True, max_loaded_models=1)
    status, body = await served.post("/v1/chat/completions",
                                     chat_body(options={"n_ctx": 1_048_576}))
    assert status == 400
    assert "option 'n_ctx' must be at most 2048" in body["error"]["message"]
    for n_ctx in (512, 1024, 2048):
        status, body = await served.post("/v1/chat/completions",
                                         chat_body(options={"n_ctx": n_ctx}))
        assert status == 200, body


async def test_server_ollama_api_refuses_load_options(serve: ServeFactory) -> None:
    served = await serve()
    status, body = await served.post("/ollama/api/chat", {
        "model": "llamacpp:tiny", "messages": MESSAGES, "stream": False,
        "options": {"threads": 1, "num_predict": 2}})
    assert status == 400
    assert "option 'threads' is a load-time setting" in body["error"]


async def test_a_prompt_longer_than_the_context_is_a_bad_request(models_dir: Path) -> None:
    """It was a ProviderError (a 502 through the server) wrapping llama-cpp's ValueError."""
    async with LlamaCppProvider(models_dir=models_dir, n_ctx=256) as provider:
        with pytest.raises(BadRequestError, match=r"the prompt is \d+ tokens, which does not "
                                                  r"fit the context window of 256 tokens"):
            await provider.complete([{"role": "user", "content": "word " * 600}], model="tiny")
        await ask(provider)  # still serving


async def test_server_answers_400_to_a_prompt_too_long(serve: ServeFactory) -> None:
    served = await serve(n_ctx=256)
    status, body = await served.post("/v1/chat/completions", {
        "model": "llamacpp:tiny", "messages": [{"role": "user", "content": "word " * 600}]})
    assert status == 400
    assert "does not fit the context window of 256 tokens" in body["error"]["message"]
