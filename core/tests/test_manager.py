"""ChatManager over a small in-memory provider (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from typing import Any

import pytest

from modelplex.chunks import ChatResponse, StreamChunk, Usage
from modelplex.errors import (
    ChatBusyError,
    ConfigurationError,
    ModelNotFoundError,
    ModelplexError,
    OptionsError,
    StreamError,
    UnknownProviderError,
)
from modelplex.manager import ChatManager, ChatMode, create_provider, parse_model_spec
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest
from modelplex.types import MessageRole

#: an answer cut short: who wrote it, no usage (it never came)
FAKE_ECHO = {"model": "fake:echo", "provider": "fake", "usage": None}


@pytest.fixture
def two_providers(make_plugin: Any) -> Plugins:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="fake"), name="fake-plugin")
    plugins.register(make_plugin(provider_name="other"), name="other-plugin")
    return plugins


@pytest.fixture(autouse=True)
def _no_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLEX_DEFAULT_MODEL", raising=False)


# -- parse_model_spec ---------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "expected"), [
    ("fake:echo", ("fake", "echo")),
    ("fake:llama3.2:latest", ("fake", "llama3.2:latest")),
    ("fake:hf.co/org/model:Q4_K_M", ("fake", "hf.co/org/model:Q4_K_M")),
    ("fake", ("fake", None)),
    ("fake:", ("fake", None)),
    ("other:x", ("other", "x")),
])
def test_parse_model_spec(two_providers: Plugins, spec: str,
                          expected: tuple[str, str | None]) -> None:
    assert parse_model_spec(spec, two_providers) == expected


def test_default_provider_is_llamacpp_when_installed(make_plugin: Any) -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="fake"), name="a")
    plugins.register(make_plugin(provider_name="llamacpp"), name="b")
    assert parse_model_spec(None, plugins) == ("llamacpp", None)
    assert parse_model_spec("", plugins) == ("llamacpp", None)


def test_single_provider_is_the_default(fake_plugins: Plugins) -> None:
    assert parse_model_spec(None, fake_plugins) == ("fake", None)


def test_no_default_among_several(two_providers: Plugins) -> None:
    with pytest.raises(ConfigurationError, match="MODELPLEX_DEFAULT_MODEL") as info:
        parse_model_spec(None, two_providers)
    assert "fake, other" in str(info.value)


def test_default_from_the_environment(two_providers: Plugins,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_DEFAULT_MODEL", "other:big:7b")
    assert parse_model_spec(None, two_providers) == ("other", "big:7b")
    assert parse_model_spec("fake:echo", two_providers) == ("fake", "echo")  # explicit wins


def test_unknown_provider(two_providers: Plugins) -> None:
    with pytest.raises(UnknownProviderError) as info:
        parse_model_spec("ollama:llama3.2", two_providers)
    text = str(info.value)
    assert "unknown provider 'ollama'" in text
    assert "Installed providers: fake, other" in text
    assert "pip install modelplex-ollama" in text


def test_bare_word_that_is_not_a_provider(two_providers: Plugins) -> None:
    with pytest.raises(ConfigurationError, match="'llama3' does not name a provider") as info:
        parse_model_spec("llama3", two_providers)
    assert "provider:model" in str(info.value)


def test_no_providers_at_all() -> None:
    plugins = Plugins(load_entrypoints=False)
    with pytest.raises(UnknownProviderError, match="Installed providers: none"):
        parse_model_spec("llama3", plugins)
    with pytest.raises(ConfigurationError, match="installed providers: none"):
        parse_model_spec(None, plugins)


def test_create_provider_passes_config_and_checks_the_result(fake_plugins: Plugins,
                                                            make_plugin: Any) -> None:
    provider = create_provider("fake", fake_plugins, reply="hi there")
    assert provider.reply == "hi there"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="could not be configured"):
        create_provider("fake", fake_plugins, no_such_setting=1)

    class NotAProvider:
        name = "bogus"

        def __init__(self, **config: Any) -> None:
            pass

    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="bogus", cls=NotAProvider), name="bogus")
    with pytest.raises(ConfigurationError, match=r"not a modelplex\.Provider"):
        create_provider("bogus", plugins)


# -- sending ------------------------------------------------------------------------------------
async def test_send_message_streams_and_keeps_history(fake_plugins: Plugins,
                                                      fake_plugin: Any) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins) as chat:
        chunks = [c async for c in chat.send_message("  What is the capital of France? ")]
        assert [c.content for c in chunks[:-1]] == ["The", " capital", " of", " France",
                                                    " is", " Paris."]
        assert chunks[-1].usage is not None
        assert [(m.role, m.content) for m in chat.history] == [
            (MessageRole.USER, "What is the capital of France?"),
            (MessageRole.ASSISTANT, "The capital of France is Paris."),
        ]
        # who wrote the answer, and its usage (as a stored conversation gives it back)
        usage = chunks[-1].usage
        assert chat.history[1].metadata == {"model": "fake:echo", "provider": "fake", "usage": {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": 6, "estimated": False}}

        [c async for c in chat.send_message("And of Italy?")]
        provider = fake_plugin.created[0]
        sent = provider.requests[-1].messages
        assert [m.content for m in sent] == ["What is the capital of France?",
                                             "The capital of France is Paris.", "And of Italy?"]
        assert provider.requests[-1].model == "echo"
        assert len(chat.history) == 4

        chat.clear_history()
        assert chat.history == []


async def test_system_prompt_is_sent_first_and_not_stored(fake_plugins: Plugins,
                                                          fake_plugin: Any) -> None:
    async with ChatManager("fake", system_prompt="Answer briefly.", plugins=fake_plugins) as chat:
        [c async for c in chat.send_message("hi")]
        [c async for c in chat.send_message("again")]
        sent = fake_plugin.created[0].requests[-1].messages
        assert sent[0].role is MessageRole.SYSTEM
        assert sent[0].content == "Answer briefly."
        assert [m.role for m in sent[1:]] == [MessageRole.USER, MessageRole.ASSISTANT,
                                              MessageRole.USER]
        assert all(m.role is not MessageRole.SYSTEM for m in chat.history)
        assert chat.session.system_prompt == "Answer briefly."

        chat.set_system_prompt(None)
        [c async for c in chat.send_message("third")]
        assert fake_plugin.created[0].requests[-1].messages[0].role is MessageRole.USER


async def test_default_model_of_the_provider(fake_plugins: Plugins) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        assert (chat.session.provider, chat.session.model) == ("fake", "echo")


async def test_chat_modes_change_the_options_sent(fake_plugins: Plugins,
                                                  fake_plugin: Any) -> None:
    async with ChatManager("fake", mode="precise", plugins=fake_plugins) as chat:
        provider = fake_plugin.created[0]

        async def options_sent(**kw: Any) -> dict[str, Any]:
            [c async for c in chat.send_message("hi", **kw)]
            return dict(provider.requests[-1].options.set_values())

        assert await options_sent() == {"temperature": 0.2, "top_p": 0.5}
        chat.set_mode(ChatMode.CREATIVE)
        assert await options_sent() == {"temperature": 1.1, "top_p": 0.98}
        chat.set_mode("balanced")
        assert await options_sent() == {"temperature": 0.7, "top_p": 0.9}
        chat.set_options(temperature=0.0, shout=True)  # explicit options beat the preset
        assert await options_sent() == {"temperature": 0.0, "top_p": 0.9, "shout": True}
        assert await options_sent(options={"max_tokens": 6}) == {
            "temperature": 0.0, "top_p": 0.9, "shout": True, "max_tokens": 6}
        assert chat.history[-1].content == "THE CAPITAL OF FRANCE IS PARIS."
    with pytest.raises(ConfigurationError, match="mode 'wild' is not one of precise"):
        ChatManager(mode="wild")


async def test_bad_options_fail_early_and_clearly(fake_plugins: Plugins,
                                                  fake_plugin: Any) -> None:
    chat = ChatManager("fake", options={"temperature": 5}, plugins=fake_plugins)
    with pytest.raises(OptionsError, match=r"option 'temperature' must be between 0 and 2 \(got 5"):
        await chat.__aenter__()
    await chat.aclose()

    async with ChatManager("fake", options={"temperature": 1}, plugins=fake_plugins) as chat:
        provider = fake_plugin.created[-1]
        with pytest.raises(OptionsError, match=r"top_p.*between 0 and 1"):
            chat.set_options(top_p=1.5)
        with pytest.raises(OptionsError, match=r"max_tokens.*> 0"):
            chat.set_options(max_tokens=0)
        with pytest.raises(OptionsError) as info:
            chat.set_options(temprature=1)
        assert "unknown option 'temprature'" in str(info.value)
        assert "temperature" in str(info.value).split("valid options:")[1]
        assert "shout" in str(info.value)

        with pytest.raises(OptionsError, match="top_p"):
            async for _ in chat.send_message("hi", options={"top_p": 2}):
                pass
        assert provider.requests == []  # nothing was sent
        assert chat.history == []  # nothing was lost or half-added

        [c async for c in chat.send_message("hi")]
        assert provider.requests[-1].options.set_values() == {"temperature": 1}


async def test_get_response_with_meta(fake_plugins: Plugins) -> None:
    async with ChatManager("fake:other", system_prompt="Be brief.",
                           plugins=fake_plugins) as chat:
        meta = await chat.get_response_with_meta("What is the capital of France?")
    assert meta.content == "The capital of France is Paris."
    assert meta.model == meta.model_name == "other"
    assert meta.provider == "fake"
    assert meta.prompt_tokens == 2 + 6  # the fake counts the words it was sent
    assert meta.completion_tokens == 6
    assert meta.token_count == 14
    assert meta.finish_reason == "stop"
    assert meta.usage_estimated is False
    assert meta.time_to_first_token is not None
    assert 0 < meta.time_to_first_token <= meta.latency
    assert meta.reasoning is None
    assert meta.tool_calls == []


async def test_provider_failing_mid_stream(fake_plugins: Plugins) -> None:
    config = {"fake": {"fail_after": 2}}
    async with ChatManager("fake", provider_config=config, plugins=fake_plugins) as chat:
        received: list[str] = []
        with pytest.raises(StreamError) as info:
            async for chunk in chat.send_message("What is the capital of France?"):
                received.append(chunk.content)
        assert received == ["The", " capital"]
        assert info.value.partial_content == "The capital"
        assert [c.content for c in info.value.partial_chunks] == ["The", " capital"]
        assert chat.history == []


async def test_model_not_found_leaves_history_unchanged(fake_plugins: Plugins) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        await chat.get_response_with_meta("first")
        await chat.initialize_model("fake:missing")
        with pytest.raises(ModelNotFoundError):
            await chat.get_response_with_meta("second")
        assert [m.content for m in chat.history] == ["first", "The capital of France is Paris."]


async def test_consumer_stopping_early_keeps_a_partial_answer(fake_plugins: Plugins,
                                                              fake_plugin: Any) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        async with contextlib.aclosing(chat.send_message("Capital of France?")) as stream:
            async for chunk in stream:
                if chunk.content == " capital":
                    break
        provider = fake_plugin.created[0]
        assert provider.streams_closed_early == 1  # the provider's stream was closed at once
        assert provider.streams_finished == 0
        user, partial = chat.history
        assert user.content == "Capital of France?"
        assert partial.role is MessageRole.ASSISTANT
        assert partial.content == "The capital"
        assert partial.metadata == {"partial": True, **FAKE_ECHO}

        # stopping before any text arrived adds nothing
        async with contextlib.aclosing(chat.send_message("again")) as stream:
            pass
        assert len(chat.history) == 2


async def test_history_survives_switching_models(two_providers: Plugins) -> None:
    async with ChatManager("fake", plugins=two_providers) as chat:
        await chat.get_response_with_meta("one")
        session = await chat.initialize_model("other:echo")
        assert (session.provider, session.model) == ("other", "echo")
        assert len(chat.history) == 2
        meta = await chat.get_response_with_meta("two")
        assert meta.provider == "other"
        assert len(chat.history) == 4


async def test_aclose_closes_every_provider(make_plugin: Any) -> None:
    fake, other = make_plugin(provider_name="fake"), make_plugin(provider_name="other")
    plugins = Plugins(load_entrypoints=False)
    plugins.register(fake, name="fake-plugin")
    plugins.register(other, name="other-plugin")
    async with ChatManager("fake", plugins=plugins) as chat:
        await chat.initialize_model("other")
        await chat.initialize_model("fake")  # reuses the open one
        providers = fake.created + other.created
        assert len(providers) == 2
        assert not any(p.closed for p in providers)
        await chat.get_response_with_meta("hi")
    assert all(p.closed for p in providers)
    assert len(chat.history) == 2  # the conversation outlives the providers
    # used again, the manager opens a fresh provider instead of the closed one
    await chat.get_response_with_meta("again")
    assert len(fake.created) == 2
    assert not fake.created[1].closed
    await chat.aclose()
    assert fake.created[1].closed


@pytest.mark.parametrize("text", ["", "   ", "\n"])
async def test_empty_message_is_a_configuration_error(fake_plugins: Plugins, text: str) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        with pytest.raises(ConfigurationError) as info:
            await chat.get_response_with_meta(text)
        assert str(info.value).startswith("message: content must not be empty")
        assert "Value error" not in str(info.value)
        assert chat.history == []


async def test_too_long_message_names_the_limit(fake_plugins: Plugins,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from modelplex.types import ChatMessage

    monkeypatch.setattr(ChatMessage, "max_content_length", 5)
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        with pytest.raises(ConfigurationError, match="maximum of 5"):
            await chat.get_response_with_meta("too long")


async def test_an_answer_longer_than_the_input_limit_is_kept(
        fake_plugins: Plugins, fake_plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 #12: MODELPLEX_MAX_MESSAGE_LENGTH limits what the user sends, never an answer
    that already streamed (it raised a raw pydantic ValidationError after the answer)."""
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "12")
    answer = "The capital of France is Paris."  # 31 characters
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        streamed = "".join([c.content async for c in chat.send_message("Capital?")])
        assert streamed == answer
        meta = await chat.send_message("And again?")
        assert meta.content == answer
        result = await chat.get_response_with_meta("Once more?")
        assert result.content == answer
        assert [m.content for m in chat.history] == [
            "Capital?", answer, "And again?", answer, "Once more?", answer]
        sent = fake_plugin.created[0].requests[-1].messages
        assert [m.content for m in sent][-2:] == [answer, "Once more?"]
        with pytest.raises(ConfigurationError, match="maximum of 12"):
            chat.send_message("This question is too long.")  # the input limit still holds


async def test_an_answer_of_whitespace_is_recorded_as_no_answer(fake_plugins: Plugins) -> None:
    """It raised a raw ValidationError (an assistant message stripped to nothing)."""
    async with ChatManager("fake", plugins=fake_plugins,
                           provider_config={"fake": {"reply": "  "}}) as chat:
        assert "".join([c.content async for c in chat.send_message("one")]).strip() == ""
        assert (await chat.send_message("two")).content.strip() == ""
        assert [m.content for m in chat.history] == ["one", "two"]


async def test_first_message_initializes_the_default_model(fake_plugins: Plugins) -> None:
    chat = ChatManager(plugins=fake_plugins)
    try:
        meta = await chat.get_response_with_meta("hi")
        assert (meta.provider, meta.model) == ("fake", "echo")
    finally:
        await chat.aclose()


async def test_process_wide_plugins_are_used_by_default(modelplex_plugins: Plugins,
                                                        register_plugin: Any,
                                                        fake_plugin: Any) -> None:
    register_plugin(fake_plugin, name="fake-plugin")
    async with ChatManager("fake:echo") as chat:
        assert chat.plugins is modelplex_plugins
        meta = await chat.get_response_with_meta("hi")
    assert meta.content == "The capital of France is Paris."


# -- sync twins ---------------------------------------------------------------------------------
def test_sync_twins_without_a_loop(fake_plugins: Plugins, fake_plugin: Any) -> None:
    with ChatManager("fake:echo", plugins=fake_plugins) as chat:
        meta = chat.get_response_with_meta_sync("What is the capital of France?")
        assert meta.content == "The capital of France is Paris."
        chunks = list(chat.send_message_sync("again"))
        assert "".join(c.content for c in chunks) == meta.content
        assert isinstance(chunks[-1], StreamChunk)
        assert chunks[-1].usage is not None
        session = chat.initialize_model_sync("fake:other")
        assert session.model == "other"
        assert len(chat.history) == 4
    assert fake_plugin.created[0].closed


def test_sync_send_message_stopped_early(fake_plugins: Plugins, fake_plugin: Any) -> None:
    with ChatManager("fake", plugins=fake_plugins) as chat:
        stream = chat.send_message_sync("hi")
        assert next(stream).content == "The"
        stream.close()
        assert fake_plugin.created[0].streams_closed_early == 1
        assert chat.history[-1].metadata == {"partial": True, **FAKE_ECHO}


def test_sync_twins_in_a_plain_thread(fake_plugins: Plugins) -> None:
    results: list[Any] = []

    def work() -> None:
        try:
            with ChatManager("fake", plugins=fake_plugins) as chat:
                results.append(chat.get_response_with_meta_sync("hi").content)
        except BaseException as err:  # reported to the test thread
            results.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert results == ["The capital of France is Paris."]


async def test_sync_twins_inside_a_running_loop_raise_clearly(fake_plugins: Plugins) -> None:
    chat = ChatManager("fake", plugins=fake_plugins)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(ModelplexError) as info:
            chat.get_response_with_meta_sync("hi")
        assert "get_response_with_meta_sync() was called inside a running event loop" in str(
            info.value)
        assert "await chat.get_response_with_meta(" in str(info.value)
        with pytest.raises(ModelplexError, match="initialize_model_sync"):
            chat.initialize_model_sync("fake")
        with pytest.raises(ModelplexError, match="running event loop"), chat:
            pass
    await chat.aclose()


async def test_sync_twins_from_a_worker_thread_of_a_running_loop(fake_plugins: Plugins) -> None:
    """Inside async code, to_thread gives the sync API a thread with no loop: it works."""

    def work() -> str:
        with ChatManager("fake", plugins=fake_plugins) as chat:
            return chat.get_response_with_meta_sync("hi").content

    assert await asyncio.to_thread(work) == "The capital of France is Paris."


async def test_bad_options_at_initialize_are_not_kept(fake_plugins: Plugins) -> None:
    async with ChatManager(plugins=fake_plugins) as chat:
        with pytest.raises(OptionsError, match="temperature"):
            await chat.initialize_model("fake", temperature=9)
        session = await chat.initialize_model("fake", temperature=0.5)
        assert session.temperature == 0.5
        chat.set_mode(ChatMode.PRECISE)
        assert chat.session.temperature == 0.5  # an explicit option beats the preset
        chat.set_options(top_p=0.3, max_tokens=12)
        assert (chat.session.top_p, chat.session.max_tokens) == (0.3, 12)
        [c async for c in chat.send_message("hi")]


async def test_reopens_the_current_model_after_aclose(two_providers: Plugins) -> None:
    chat = ChatManager("fake", plugins=two_providers)
    await chat.initialize_model("other:echo")
    await chat.aclose()
    await chat.get_response_with_meta("hi")
    assert (chat.session.provider, chat.session.model) == ("other", "echo")
    await chat.aclose()


async def test_execute_chain_parses_reasoning_and_solution(fake_plugins: Plugins) -> None:
    from modelplex.prompts import ChainOfThoughtPrompt

    config = {"fake": {"reply": "First think. SOLUTION: Paris"}}
    async with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        result = await chat.execute_chain(ChainOfThoughtPrompt(task="Capital of France?",
                                                               steps=["Recall"]))
    assert result.reasoning == "First think."
    assert result.solution == "Paris"
    assert result.meta.completion_tokens > 0
    assert "Task: Capital of France?" in chat.history[0].content


# -- issue #8/#10: send_message is awaitable, streams never interleave in the history ----------
async def test_awaiting_send_message_returns_the_whole_answer(fake_plugins: Plugins) -> None:
    async with ChatManager(plugins=fake_plugins) as chat:
        response = await chat.send_message("Test message")  # seed 001's own test
        assert response.content == "The capital of France is Paris."
        assert response.model_name == "echo"
        assert [m.content for m in chat.history] == ["Test message", response.content]
        reply = chat.send_message("streamed")
        chunks = [c.content async for c in reply]
        assert chunks[0] == "The"
        with pytest.raises(ModelplexError, match="already being streamed"):
            await reply


def test_send_message_checks_the_text_at_once(fake_plugins: Plugins) -> None:
    chat = ChatManager("fake", plugins=fake_plugins)
    with pytest.raises(ConfigurationError, match="content must not be empty"):
        chat.send_message("  ")  # no await, no iteration: the error comes at the call


async def test_abandoned_stream_is_closed_before_the_next_message(fake_plugins: Plugins,
                                                                  fake_plugin: Any) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        async for chunk in chat.send_message("first"):
            if chunk.content == " capital":
                break  # left without closing: cleanup would run whenever the GC gets to it
        await chat.send_message("second")
        provider = fake_plugin.created[0]
        sent = [m.content for m in provider.requests[1].messages]
        assert sent == ["first", "The capital", "second"]  # the model saw the first turn
        assert [m.content for m in chat.history] == [
            "first", "The capital", "second", "The capital of France is Paris."]
        assert chat.history[1].metadata == {"partial": True, **FAKE_ECHO}
        assert provider.streams_closed_early == 1

        held = chat.send_message("third")  # still referenced: closed by the next message
        async for _ in held:
            break
        await asyncio.sleep(0.01)
        assert provider.streams_closed_early == 1
        await chat.send_message("fourth")
        assert provider.streams_closed_early == 2
        assert [m.content for m in provider.requests[-1].messages][-3:] == [
            "third", "The", "fourth"]


async def test_a_dropped_stream_is_still_closed_promptly(fake_plugins: Plugins,
                                                         fake_plugin: Any) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        async for _ in chat.send_message("first"):
            break  # nobody holds the reply: the event loop finalises it, the upstream stops
        await asyncio.sleep(0.01)
        assert fake_plugin.created[0].streams_closed_early == 1
        assert [m.content for m in chat.history] == ["first", "The"]


async def test_a_concurrent_message_is_refused(fake_plugins: Plugins) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        first_chunk = asyncio.Event()
        go_on = asyncio.Event()

        async def reader() -> str:
            parts = []
            async for chunk in chat.send_message("first"):
                parts.append(chunk.content)
                first_chunk.set()
                await go_on.wait()
            return "".join(parts)

        task = asyncio.create_task(reader())
        await first_chunk.wait()
        with pytest.raises(ChatBusyError, match="still being answered in another task"):
            await chat.send_message("second")
        go_on.set()
        assert await task == "The capital of France is Paris."
        assert len(chat.history) == 2
        await chat.send_message("third")  # once the first is done, the next goes through
        assert len(chat.history) == 4


@pytest.fixture
def stalling_plugins(make_plugin: Any, fake_cls: Any) -> Plugins:
    class Stalling(fake_cls):  # type: ignore[misc, valid-type]
        """Two chunks, then silence; with ``timeout`` it raises the provider's timeout."""

        def __init__(self, timeout: bool = False, **kw: Any) -> None:
            super().__init__(**kw)
            self.timeout = timeout

        async def _stream(self, request: Any) -> Any:
            from modelplex.errors import ProviderTimeoutError

            yield StreamChunk(content="The")
            yield StreamChunk(content=" capital")
            if self.timeout:
                raise ProviderTimeoutError("fake: silent for more than 0.1 s",
                                           phase="between_chunks", timeout=0.1,
                                           provider=self.name)
            await asyncio.sleep(3600)

    plugins = Plugins(load_entrypoints=False)
    plugins.register(make_plugin(provider_name="fake", cls=Stalling), name="stalling")
    return plugins


async def test_timeout_and_cancellation_leave_the_same_history(stalling_plugins: Plugins) -> None:
    from modelplex.errors import ProviderTimeoutError

    async def read(reply: Any) -> None:
        async for _ in reply:
            pass

    histories = []
    for how in ("library timeout", "asyncio timeout", "cancel"):
        config = {"fake": {"timeout": how == "library timeout"}}
        async with ChatManager("fake", provider_config=config, plugins=stalling_plugins) as chat:
            if how == "library timeout":
                with pytest.raises(ProviderTimeoutError):
                    await read(chat.send_message("first"))
            elif how == "asyncio timeout":
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await read(chat.send_message("first"))
            else:
                task = asyncio.create_task(read(chat.send_message("first")))
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            histories.append([(m.content, m.metadata) for m in chat.history])
    assert histories[0] == [("first", {}), ("The capital", {
        "partial": True, **FAKE_ECHO})]
    assert histories[0] == histories[1] == histories[2]


async def test_an_awaited_answer_is_kept_whole_or_not_at_all(stalling_plugins: Plugins) -> None:
    """Awaited, the answer is asked for whole (nothing is received before it): a timeout or a
    cancellation leaves the history as it was, and the next message goes through."""
    from modelplex.errors import ProviderTimeoutError

    for how in ("library timeout", "asyncio timeout", "cancel"):
        config = {"fake": {"timeout": how == "library timeout"}}
        async with ChatManager("fake", provider_config=config, plugins=stalling_plugins) as chat:
            if how == "library timeout":
                with pytest.raises(ProviderTimeoutError):
                    await chat.send_message("first")
            elif how == "asyncio timeout":
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await chat.send_message("first")
            else:
                task = asyncio.create_task(chat.get_response_with_meta("first"))
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert chat.history == []
            async with contextlib.aclosing(chat.send_message("again")) as reply:
                async for chunk in reply:
                    assert chunk.content == "The"
                    break
            assert [m.content for m in chat.history] == ["again", "The"]


async def test_a_message_during_an_awaited_answer_is_refused(stalling_plugins: Plugins) -> None:
    """An answer asked for whole holds the conversation like a stream being read does."""
    async with ChatManager("fake", plugins=stalling_plugins) as chat:
        async def awaited() -> Any:
            return await chat.send_message("first")

        for ask in (awaited, lambda: chat.get_structured("first", "json_dict")):
            task = asyncio.create_task(ask())
            await asyncio.sleep(0.05)
            with pytest.raises(ChatBusyError, match="still being answered in another task"):
                await chat.send_message("second")
            with pytest.raises(ChatBusyError):
                [c async for c in chat.send_message("second")]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert chat.history == []


async def test_streamed_structured_output_is_the_open_answer(fake_plugins: Plugins,
                                                              fake_plugin: Any) -> None:
    """stream_structured follows the one-answer-at-a-time rule of streamed replies: left
    unfinished it is closed by the next message; read by another task, the next is refused."""
    config = {"fake": {"reply": '{"city": "Paris", "country": "France"}'}}
    async with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        async for _ in chat.stream_structured("first", "json_dict"):
            break  # left unfinished
        await chat.send_message("second")
        provider = fake_plugin.created[0]
        assert provider.streams_closed_early == 1
        assert [m.content for m in chat.history] == ["second", config["fake"]["reply"]]

        updates = chat.stream_structured("third", "json_dict")
        go_on = asyncio.Event()

        async def reader() -> Any:
            async for update in updates:
                await go_on.wait()
                if update.done:
                    return update.value
            return None

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        with pytest.raises(ChatBusyError):
            await chat.send_message("fourth")
        go_on.set()
        assert await task == {"city": "Paris", "country": "France"}
        assert len(chat.history) == 4


@pytest.fixture
def counting_plugin(make_plugin: Any, fake_cls: Any) -> Any:
    class Counting(fake_cls):  # type: ignore[misc, valid-type]
        """Answers whole requests without streaming, and keeps both kinds of request."""

        capabilities = Capabilities(streaming=True, tools=True, json_schema=True)

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.whole: list[ChatRequest] = []
            self.streamed: list[ChatRequest] = []

        def _stream(self, request: ChatRequest) -> Any:
            self.streamed.append(request)
            return super()._stream(request)

        async def _complete(self, request: ChatRequest) -> ChatResponse:
            self.whole.append(request)
            return ChatResponse(content=self.reply, model=request.model, provider=self.name,
                                finish_reason="stop",
                                usage=Usage(prompt_tokens=3, completion_tokens=4))

    return make_plugin(provider_name="fake", cls=Counting)


async def test_nobody_reads_the_stream_so_nothing_is_streamed(counting_plugin: Any) -> None:
    """Issue 18 #5: awaited answers, structured output, templates and the tool loop use the
    provider's non-streaming request; only a reply iterated with ``async for`` streams."""
    plugins = Plugins(load_entrypoints=False)
    plugins.register(counting_plugin, name="counting")
    config = {"fake": {"reply": '{"reasoning": "Known.", "solution": "Paris"}'}}
    async with ChatManager("fake", provider_config=config, plugins=plugins) as chat:
        meta = await chat.send_message("one")
        assert (meta.prompt_tokens, meta.completion_tokens, meta.finish_reason) == (3, 4, "stop")
        assert meta.time_to_first_token == meta.latency > 0  # all of it came at once
        assert (meta.provider, meta.model, meta.cache_hit, meta.attempts) == (
            "fake", "echo", False, 1)
        await chat.get_response_with_meta("two")
        assert (await chat.get_structured("three", "json_dict")).value["solution"] == "Paris"
        def shout(text: str) -> str:
            """Upper-case a text."""
            return text.upper()

        await chat.get_response_with_meta("four", tools=[shout])  # no call: one round
        assert (await chat.execute_chain("chain_of_thought", task="five")).solution == "Paris"
        [c async for c in chat.send_message("six")]
    provider = counting_plugin.created[0]
    assert len(provider.whole) == 5
    assert len(provider.streamed) == 1
    assert len(chat.history) == 12
    assert all(r.conversation_id is None for r in provider.whole + provider.streamed)


async def test_requests_carry_the_conversation_id(counting_plugin: Any, tmp_path: Any) -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(counting_plugin, name="counting")
    async with ChatManager("fake", plugins=plugins, conversation="conv-1",
                           logs=tmp_path / "logs.db") as chat:
        await chat.send_message("one")
        [c async for c in chat.send_message("two")]
        chat.clear_history()  # the stored conversation goes on under a new id
        await chat.send_message("three")
        new_id = chat.conversation_id
    provider = counting_plugin.created[0]
    sent = provider.whole + provider.streamed  # the recording layer may stream either
    assert sorted(str(r.conversation_id) for r in sent) == sorted(["conv-1", "conv-1",
                                                                   str(new_id)])
    assert new_id != "conv-1"


# -- modes and constructor checks (issue #8 defect 10, issue #10) ------------------------------
async def test_set_mode_validates_before_storing(fake_plugins: Plugins, fake_plugin: Any) -> None:
    async with ChatManager("fake", options={"top_p": 0.3}, plugins=fake_plugins) as chat:
        with pytest.raises(ConfigurationError, match="mode 'wild'"):
            chat.set_mode("wild")
        chat.set_mode("creative")
        await chat.send_message("hi")
        assert fake_plugin.created[0].requests[-1].options.set_values() == {
            "temperature": 1.1, "top_p": 0.3}


async def test_mode_presets_fit_the_provider_ranges(make_plugin: Any, fake_cls: Any) -> None:
    from pydantic import Field

    from modelplex.provider import CommonOptions

    class NarrowOptions(CommonOptions):
        temperature: float | None = Field(default=None, ge=0.0, le=1.0)

    class Narrow(fake_cls):  # type: ignore[misc, valid-type]
        Options = NarrowOptions

    plugin = make_plugin(provider_name="fake", cls=Narrow)
    plugins = Plugins(load_entrypoints=False)
    plugins.register(plugin, name="narrow")
    async with ChatManager("fake", mode="creative", plugins=plugins) as chat:
        await chat.send_message("hi")  # 1.1 on 0-2 would be rejected by a 0-1 provider
        assert plugin.created[0].requests[-1].options.set_values() == {
            "temperature": 0.55, "top_p": 0.98}
        assert chat.session.temperature == 0.55
        chat.set_mode("precise")
        await chat.send_message("again")
        assert plugin.created[0].requests[-1].options.set_values()["temperature"] == 0.1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "wild"}, "mode 'wild' is not one of precise, balanced, creative"),
    ({"options": [("temperature", 1)]}, "options must map option names to values"),
    ({"system_prompt": "x" * 20}, "system_prompt: content is 20 characters, more than the "
                                  "maximum of 10"),
    ({"system_prompt": 5}, "system_prompt must be text"),
])
def test_bad_manager_arguments_are_configuration_errors(
        fake_plugins: Plugins, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any],
        message: str) -> None:
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "10")
    with pytest.raises(ConfigurationError) as info:
        ChatManager("fake", plugins=fake_plugins, **kwargs)
    assert str(info.value).startswith(message)


def test_booleans_are_not_numbers(fake_plugins: Plugins) -> None:
    with ChatManager("fake", plugins=fake_plugins) as chat, \
            pytest.raises(OptionsError, match="'max_tokens': expected a number, not true/false"):
        chat.set_options(max_tokens=True)
