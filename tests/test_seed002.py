"""Seed 002's examples, as the seed writes them (``modelplex`` for ``onesim.models``).

The OpenAI endpoint is a FaultyUpstream on 127.0.0.1 (``OPENAI_BASE_URL``), running in a
thread of its own because the seed's code calls ``asyncio.run`` and the sync API itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelplex.compat
from modelplex.config import Config, set_config
from modelplex.errors import ConfigurationError
from modelplex.testing.upstream import PIECE, FaultyUpstream

ANSWER = (PIECE * 5)


class ThreadedUpstream:
    """A FaultyUpstream serving from a background thread's event loop."""

    def __init__(self) -> None:
        self.upstream = FaultyUpstream()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            async with self.upstream:
                self._ready.set()
                await self._stop.wait()

        self.loop.run_until_complete(main())

    def __enter__(self) -> FaultyUpstream:
        self.thread.start()
        assert self._ready.wait(10)
        return self.upstream

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def openai_upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyUpstream]:
    old_config = set_config(Config())
    old_manager, modelplex.compat._manager = modelplex.compat._manager, None
    with ThreadedUpstream() as upstream:
        monkeypatch.setenv("OPENAI_BASE_URL", upstream.url + "/v1")
        yield upstream
    modelplex.compat._manager = old_manager
    set_config(old_config)


def test_complete_load_balancing_example(openai_upstream: FaultyUpstream,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from modelplex import (
        SystemMessage,
        UserMessage,
        configure_load_balancer,
        get_model,
        get_model_manager,
    )

    async def main() -> None:
        # Load model configurations
        manager = get_model_manager()
        manager.load_model_configs({
            "config_name": "gpt-4",
            "model_type": "openai_chat",
            "model_name": "gpt-4",
            "api_key": "your_api_key"
        })

        manager.load_model_configs({
            "config_name": "gpt-3.5-turbo",
            "model_type": "openai_chat",
            "model_name": "gpt-3.5-turbo",
            "api_key": "your_api_key"
        })

        # Configure load balancer
        configure_load_balancer(
            model_configs=["gpt-4", "gpt-3.5-turbo"],
            strategy="round_robin"
        )

        # Get load balancer
        load_balancer = get_model()

        # Prepare messages
        messages = [
            SystemMessage("You are a helpful assistant."),
            UserMessage("Hello, please introduce yourself.")
        ]

        # Send requests via load balancer
        formatted_messages = load_balancer.format(messages)
        response = await load_balancer.acall(formatted_messages)

        print(f"Response: {response.content}")
        print(f"Model used: {response.model_info.get('model_name', 'unknown')}")

        # Second request, will use next model
        response = await load_balancer.acall(formatted_messages)
        print(f"Second response model: {response.model_info.get('model_name', 'unknown')}")

    asyncio.run(main())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Response: {ANSWER}"
    used = {out[1].removeprefix("Model used: "),
            out[2].removeprefix("Second response model: ")}
    assert used == {"gpt-4", "gpt-3.5-turbo"}  # successive calls use the next model
    assert openai_upstream.requests == 2


def test_sync_and_async_calls_and_usage(openai_upstream: FaultyUpstream, tmp_path: Path) -> None:
    from modelplex import SystemMessage, UserMessage, get_model, get_model_manager

    path = tmp_path / "config.json"
    path.write_text(json.dumps([{"config_name": "gpt-4", "model_type": "openai_chat",
                                 "model_name": "gpt-4", "api_key": "your-api-key",
                                 "generate_args": {"temperature": 0.2}}]))
    manager = get_model_manager()
    manager.load_model_configs(str(path))

    model = get_model("gpt-4")
    system_msg = SystemMessage("You are a helpful assistant.")
    user_msg = UserMessage("Briefly explain the difference between synchronous and "
                           "asynchronous programming.")
    formatted_messages = model.format(system_msg, user_msg)
    assert formatted_messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    response = model(formatted_messages)  # Direct call using __call__
    assert response.text == ANSWER and response.content == ANSWER
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (3, 5)
    assert response.model_info == {"model_name": "gpt-4", "config_name": "gpt-4",
                                   "provider": "openai"}

    async def generate_response() -> str:
        model = get_model("gpt-4")
        response = await model.acall(model.format(system_msg, user_msg))
        return response.text

    assert asyncio.run(generate_response()) == ANSWER


def test_balancers_by_name_with_dict_messages_and_embeddings(
        openai_upstream: FaultyUpstream) -> None:
    from modelplex import configure_load_balancer, get_embedding_model, get_model, get_model_manager

    get_model_manager().load_model_configs([
        {"config_name": "a", "model_type": "openai_chat", "model_name": "m1",
         "client_args": {"base_url": openai_upstream.url + "/v1"}, "api_key": "k"},
        {"config_name": "b", "model_type": "openai_chat", "model_name": "m2", "api_key": "k"},
        {"config_name": "text-embedding-ada-002", "model_type": "openai_embedding",
         "model_name": "text-embedding-ada-002", "api_key": "k"},
        {"config_name": "text-embedding-3-small", "model_type": "openai_embedding",
         "model_name": "text-embedding-3-small", "api_key": "k"},
    ])
    configure_load_balancer(model_configs=["a", "b"], strategy="random",
                            config_name="load_balancer", model_type="llm")
    configure_load_balancer(model_configs=["text-embedding-ada-002", "text-embedding-3-small"],
                            strategy="round_robin", config_name="embedding_load_balancer",
                            model_type="embedding")

    async def main() -> None:
        llm_model = get_model()
        response = await llm_model.acall(messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello, please introduce yourself."}
        ])
        assert response.text == ANSWER
        assert response.model_info["config_name"] in ("a", "b")
        embedding_model = get_embedding_model()
        embeddings = await embedding_model.acall(texts=["This is a text"])
        assert embeddings.embedding is not None and len(embeddings.embedding) == 1
        assert len(embeddings.embedding[0]) == 8  # the upstream's vectors
        again = await get_model("embedding_load_balancer").acall(texts=["x"])
        assert {embeddings.model_info["config_name"], again.model_info["config_name"]} == {
            "text-embedding-ada-002", "text-embedding-3-small"}

    asyncio.run(main())


def test_wrong_seed_configs_are_named(openai_upstream: FaultyUpstream) -> None:
    from modelplex import configure_load_balancer, get_model, get_model_manager

    manager = get_model_manager()
    with pytest.raises(ConfigurationError, match=r"model_type 'openai' must be PROVIDER_chat"):
        manager.load_model_configs({"config_name": "x", "model_type": "openai"})
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) modle_name"):
        manager.load_model_configs({"config_name": "x", "model_type": "openai_chat",
                                    "modle_name": "gpt-4"})
    with pytest.raises(ConfigurationError, match="no model config named 'gpt-5'"):
        configure_load_balancer(model_configs=["gpt-5"])
    with pytest.raises(ConfigurationError, match="no default llm model"):
        get_model()


def test_get_model_twice_is_one_model(openai_upstream: FaultyUpstream) -> None:
    from modelplex import get_model, get_model_manager

    get_model_manager().load_model_configs({"config_name": "gpt-4", "model_type": "openai_chat",
                                            "model_name": "gpt-4", "api_key": "k"})
    assert get_model("gpt-4") is get_model("gpt-4")
    first = get_model("gpt-4")
    get_model_manager().load_model_configs({"config_name": "other", "model_type":
                                            "openai_chat", "model_name": "x", "api_key": "k"})
    assert get_model("gpt-4") is not first  # the configuration changed
