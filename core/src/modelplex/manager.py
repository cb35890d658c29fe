"""``ChatManager``: a conversation with any installed provider.

::

    async with ChatManager("llamacpp:smollm2", system_prompt="Be brief.") as chat:
        async for chunk in chat.send_message("What is the capital of France?"):
            print(chunk.content, end="")
        meta = await chat.send_message("And of Italy?")  # the whole answer
        print(meta.content, meta.completion_tokens, meta.latency)

The manager owns the providers it opens and closes them on exit. Every method has a ``_sync``
twin for scripts (``with ChatManager() as chat: chat.get_response_with_meta_sync("hi")``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from pydantic import ValidationError

from modelplex._modes import MODE_PRESETS, ChatMode, fit_preset, parse_mode
from modelplex.chunks import StreamChunk, ToolCall
from modelplex.errors import (
    ConfigurationError,
    ModelplexError,
    ProviderError,
    ProviderTimeoutError,
)
from modelplex.layers import ManagerLayers
from modelplex.plugins import Plugins, get_plugins
from modelplex.prompts import PromptTemplate
from modelplex.provider import ChatRequest, CommonOptions, Provider
from modelplex.reply import Reply, Turns
from modelplex.specs import create_provider, parse_model_spec
from modelplex.structured import StructuredResult, StructuredUpdate
from modelplex.types import ChatMessage, ChatSession, MessageRole

if TYPE_CHECKING:
    import os

    from modelplex.caches import Cache, CacheConfig
    from modelplex.config import Config
    from modelplex.pipeline import Lease
    from modelplex.pool import ProviderPool
    from modelplex.store.logs import LogStore

ChainResult = StructuredResult  # the result of execute_chain (reasoning, solution, parsed)

__all__ = ["MODE_PRESETS", "ChainResult", "ChatManager", "ChatMode", "Reply", "ResponseWithMeta",
           "create_provider", "parse_model_spec"]

T = TypeVar("T")



@attrs.define
class ResponseWithMeta:
    """An answer with what it cost: tokens, latency and time to first token (seconds).

    Through a named model, ``provider`` and ``model`` say what answered, ``deployment`` its
    label and ``attempts`` how many tries it took (retries and fallbacks included).
    """

    content: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    latency: float
    time_to_first_token: float | None
    finish_reason: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = attrs.Factory(list)
    usage_estimated: bool = False
    cache_hit: bool = False
    steps: list[Any] = attrs.Factory(list)  # tool-calling rounds (modelplex.tools.ToolStep)
    deployment: str | None = None
    attempts: int = 1

    @property
    def token_count(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def model_name(self) -> str:
        """The model that answered (alias of ``model``)."""
        return self.model

    @classmethod
    def from_chunks(cls, chunks: Sequence[StreamChunk], *, latency: float,
                    time_to_first_token: float | None, model: str,
                    provider: str) -> ResponseWithMeta:
        """The meta of one answer from its chunks.

        ``model`` and ``provider`` are used where neither the chunks nor a router (the first
        chunk's ``route``) say what answered.
        """
        last = chunks[-1] if chunks else StreamChunk()
        usage = last.usage
        route = chunks[0].route if chunks else None  # set by a router: who answered
        return cls(
            content="".join(c.content for c in chunks),
            model=last.model or (route.provider_model if route else model),
            provider=route.provider if route else provider,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency=latency,
            time_to_first_token=time_to_first_token,
            finish_reason=last.finish_reason,
            reasoning="".join(c.reasoning for c in chunks if c.reasoning) or None,
            tool_calls=[call for c in chunks if c.tool_calls for call in c.tool_calls],
            usage_estimated=usage.estimated if usage else True,
            deployment=route.deployment if route else None,
            attempts=route.attempts if route else 1,
            cache_hit=bool(usage and usage.cached),
        )


def _checked_system_prompt(text: Any) -> str | None:
    """``text`` if it can be sent as a system message; a ConfigurationError otherwise."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ConfigurationError(f"system_prompt must be text (got {type(text).__name__})")
    if text.strip():
        try:
            ChatMessage.system(text)
        except ValidationError as err:
            detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ConfigurationError(f"system_prompt: {detail}") from None
    return text


class ChatManager:
    """A conversation with one model at a time, over any installed provider.

    Args:
        model: ``"provider:model"``, a provider name alone, a named model of the config
            (``"fast"``), or ``None`` for the default.
        system_prompt: sent first in every request.
        mode: a :class:`ChatMode` preset for temperature and top_p.
        options: provider options applied to every message (validated by the provider).
        provider_config: keyword configuration per provider name, e.g.
            ``{"ollama": {"host": "http://gpu-box:11434"}}``.
        plugins: a :class:`Plugins` to use instead of the process-wide one.
        select: criteria (:class:`~modelplex.selection.ModelCriteria` or its fields) for
            choosing the model when it is ``"auto"`` or not given.
        config: a :class:`~modelplex.config.Config` instead of the config file.
        pool: a :class:`~modelplex.pool.ProviderPool` instead of the process-wide one
            (managers share providers with the same name and configuration through it).
        cache: a response cache for every message (off by default): a
            :class:`~modelplex.caches.Cache`, a backend name (``"memory"``, ``"sqlite"``,
            ``"redis"``), or a :class:`~modelplex.caches.CacheConfig` or its dict; by default the
            config file's ``cache`` section, if any.
        conversation: store every exchange in the log database: ``True`` starts a new
            conversation, an id continues that one (its history is loaded) or starts it.
        logs: the :class:`~modelplex.store.logs.LogStore` (or its path) for ``conversation``;
            default ``~/.local/share/modelplex/logs.db``.
        retries: for a plain ``provider:model``, the retries after a first failed attempt
            (``0``: none); default the config's ``[retries]``, else one (named models use
            their own, see docs/routing.md).
    """

    def __init__(self, model: str | None = None, *, system_prompt: str | None = None,
                 mode: ChatMode | str | None = None, options: Mapping[str, Any] | None = None,
                 provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                 plugins: Plugins | None = None, select: Any = None,
                 config: Config | None = None, pool: ProviderPool | None = None,
                 cache: Cache | CacheConfig | str | Mapping[str, Any] | bool | None = None,
                 conversation: str | bool | None = None,
                 logs: LogStore | str | os.PathLike[str] | None = None,
                 retries: int | None = None) -> None:
        self._model_spec = model
        self._select = select
        self._plugins = plugins
        self._config = config
        self._pool = pool
        self._provider_config = {k: dict(v) for k, v in (provider_config or {}).items()}
        self._leases: dict[tuple[str, str], Lease] = {}
        self._retries = retries
        self._provider: Provider | None = None
        if options is not None and not isinstance(options, Mapping):
            raise ConfigurationError("options must map option names to values, e.g. "
                                     f"{{'temperature': 0.2}} (got {type(options).__name__})")
        self._options: dict[str, Any] = dict(options or {})
        self._mode: ChatMode | None = parse_mode(mode or None)
        self._system_prompt = _checked_system_prompt(system_prompt)
        self._session: ChatSession | None = None
        self._runner: asyncio.Runner | None = None
        self._toolbox: Any = None  # modelplex.tools.ToolBox once function calling is enabled
        self._turns = Turns()  # one answer at a time
        self._layers = ManagerLayers(cache=cache, conversation=conversation, logs=logs)

    @property
    def plugins(self) -> Plugins:
        """The plugins this manager draws providers from."""
        return self._plugins or get_plugins()

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> ChatManager:
        if self._model_spec is not None:
            await self.initialize_model(self._model_spec)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the answer still being streamed, if any, and give back every provider opened
        (closed when no other manager uses it)."""
        with contextlib.suppress(Exception):
            await self._turns.aclose()
        leases, self._leases = list(self._leases.values()), {}
        self._provider = None
        for lease in leases:
            with contextlib.suppress(Exception):
                await lease.release()
        await self._layers.aclose()

    async def _open_provider(self, model: str | None) -> tuple[Provider, str, str]:
        """The stack serving ``model`` from the request pipeline (its top), the model name to
        send and the provider name to show."""
        from modelplex.config import get_config
        from modelplex.pipeline import open_model

        config = self._config or get_config()
        cache = self._layers.cache_layer(self.plugins, default=config.cache)
        lease = await open_model(
            model, config=config, pool=self._pool, plugins=self._plugins,
            provider_config=self._provider_config, cache=cache or False,
            logs=self._layers.log_store(), conversation_id=self._layers.conversation_id,
            retries=self._retries, caller="chat")
        key = (lease.provider_name, lease.model)
        held = self._leases.pop(key, None)
        self._leases[key] = lease  # the fresh stack (current conversation id) replaces it
        if held is not None:
            with contextlib.suppress(Exception):
                await held.release()
        return lease.provider, lease.model, lease.provider_name

    # -- configuration ----------------------------------------------------------------------
    async def initialize_model(self, model: str | None = None,
                               **options: Any) -> ChatSession:
        """Choose the model (``"provider:model"``, a named model, or ``"auto"`` to select one
        by the ``select`` criteria); the history is kept across switches."""
        if model == "auto" or (model is None and self._select is not None):
            model = await self._select_model()
        provider, model_name, provider_name = await self._open_provider(model)
        merged = {**self._options, **options}
        validated = provider.parse_options(self._merged(merged, provider))  # fail before storing
        self._options = merged
        self._provider = provider
        self._model_spec = (model_name if provider_name == model_name  # a named model
                            else f"{provider_name}:{model_name}")  # reopened after aclose()
        history = self._session.messages if self._session else self._stored_history()
        self._session = ChatSession(model=model_name, provider=provider_name,
                                    system_prompt=self._system_prompt, messages=history,
                                    temperature=validated.temperature, top_p=validated.top_p,
                                    max_tokens=validated.max_tokens)
        return self._session

    async def _select_model(self) -> str:
        from modelplex.selection import select_model_spec

        return await select_model_spec(self._select or {}, plugins=self.plugins)

    # -- cache and stored conversation (modelplex.layers) ------------------------------------
    @property
    def conversation_id(self) -> str | None:
        """The id of the stored conversation (``conversation=``), else ``None``."""
        return self._layers.conversation_id

    def _stored_history(self) -> list[ChatMessage]:
        messages, system = self._layers.history()
        if self._system_prompt is None and system:
            self._system_prompt = system
        return messages

    def _update_session_settings(self) -> None:
        if self._provider is None or self._session is None:
            return
        validated = self._provider.parse_options(self._merged(self._options))
        self._session.temperature = validated.temperature
        self._session.top_p = validated.top_p
        self._session.max_tokens = validated.max_tokens

    def set_mode(self, mode: ChatMode | str | None) -> None:
        """Use a sampling preset (precise, balanced or creative; ``None`` for none).

        The preset is fitted to the provider's option ranges and checked before it is kept.
        """
        chosen = parse_mode(mode)
        if self._provider is not None:
            self._provider.parse_options(self._merged(self._options, mode=chosen))
        self._mode = chosen
        self._update_session_settings()

    def set_system_prompt(self, text: str | None) -> None:
        """Set or clear the system prompt."""
        self._system_prompt = text = _checked_system_prompt(text)
        if self._session is not None:
            self._session.system_prompt = text

    def set_options(self, **options: Any) -> None:
        """Set provider options for the following messages."""
        merged = {**self._options, **options}
        if self._provider is not None:
            self._provider.parse_options(self._merged(merged))
        self._options = merged
        self._update_session_settings()

    @property
    def session(self) -> ChatSession:
        """The current session (model, provider, history)."""
        if self._session is None:
            raise ConfigurationError("no model initialized: call initialize_model() first")
        return self._session

    @property
    def history(self) -> list[ChatMessage]:
        """The messages exchanged so far."""
        return self._session.messages if self._session else []

    def clear_history(self) -> None:
        """Forget the conversation so far (a stored conversation goes on under a new id)."""
        if self._session is not None:
            self._session.messages = []
        self._layers.restart_conversation(self._provider)

    def _merged(self, options: Mapping[str, Any], provider: Provider | None = None, *,
                mode: ChatMode | bool | None = True) -> dict[str, Any]:
        """The mode's preset (fitted to ``provider``, else the current one) under ``options``."""
        chosen = self._mode if mode is True else mode
        provider = provider or self._provider
        merged: dict[str, Any] = {}
        if isinstance(chosen, ChatMode):
            merged = fit_preset(chosen, provider.Options) if provider is not None \
                else dict(MODE_PRESETS[chosen])
        merged.update(options)
        return merged

    def _merged_options(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._merged({**self._options, **(extra or {})})

    async def _ensure_model(self) -> tuple[Provider, ChatSession]:
        if self._provider is None or self._session is None:
            await self.initialize_model(self._model_spec)
        assert self._provider is not None
        assert self._session is not None
        return self._provider, self._session

    def _user_message(self, text: str, images: Sequence[str | bytes] | None) -> ChatMessage:
        try:
            return ChatMessage(role=MessageRole.USER, content=text, images=tuple(images or ()))
        except ValidationError as err:
            detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ConfigurationError(f"message: {detail}") from None

    # -- talking ----------------------------------------------------------------------------
    def send_message(self, text: str, *, options: Mapping[str, Any] | None = None,
                     images: Sequence[str | bytes] | None = None,
                     cache: bool | None = None) -> Reply[ResponseWithMeta]:
        """Send ``text``; ``async for`` the reply to stream it, or ``await`` it for the whole
        answer as a :class:`ResponseWithMeta`. Both are added to the history.

        ``cache=False`` skips the manager's cache for this message; ``cache=True`` caches it
        even when it is sampled (temperature > 0 without a seed).

        The message is checked at once. If the provider fails, the history is unchanged and the
        error keeps the partial answer. If you stop reading early, or the reading is cancelled,
        or a timeout of the provider expires, the history keeps what you received, marked
        partial. Sending the next message first closes a previous answer left unfinished, so
        the history always holds what the model saw; a previous answer still being read by
        another task raises :class:`~modelplex.errors.ChatBusyError` instead.
        """
        user = self._user_message(text, images)
        itself: list[AsyncGenerator[StreamChunk, None]] = []
        stream = self._exchange(user, options, itself, cache)
        itself.append(stream)
        return Reply(stream, self._collect)

    async def _exchange(self, user: ChatMessage, options: Mapping[str, Any] | None,
                        itself: list[AsyncGenerator[StreamChunk, None]],
                        cache: bool | None = None) -> AsyncGenerator[StreamChunk, None]:
        turn = await self._turns.take(itself.pop())
        user_and_answer: list[ChatMessage] = []
        session: ChatSession | None = None
        parts: list[str] = []
        calls: list[dict[str, Any]] = []
        finished = failed = False
        try:
            provider, session = await self._ensure_model()
            messages: list[ChatMessage] = []
            if session.system_prompt:
                messages.append(ChatMessage.system(session.system_prompt))
            messages.extend(session.messages)
            messages.append(user)
            request = ChatRequest(model=session.model, messages=messages,
                                  options=provider.parse_options(self._merged_options(options)),
                                  cache=cache)
            async with contextlib.aclosing(provider.stream_request(request)) as stream:
                async for chunk in stream:
                    parts.append(chunk.content)
                    if chunk.tool_calls:
                        calls.extend(call.to_dict() for call in chunk.tool_calls)
                    yield chunk
            finished = True
        except ProviderError as err:
            # a timeout is the caller giving up, like a cancellation: both keep the partial
            failed = not isinstance(err, ProviderTimeoutError)
            raise
        finally:
            if session is not None and not failed and (finished or parts):
                user_and_answer.append(user)
                content = "".join(parts)
                if content or calls:
                    user_and_answer.append(ChatMessage(
                        role=MessageRole.ASSISTANT, content=content, tool_calls=tuple(calls),
                        metadata={} if finished else {"partial": True}))
                session.messages = [*session.messages, *user_and_answer]
            self._turns.release(turn)

    async def _collect(self, stream: AsyncGenerator[StreamChunk, None]) -> ResponseWithMeta:
        start = time.perf_counter()
        first: float | None = None
        chunks: list[StreamChunk] = []
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                if first is None and (chunk.content or chunk.reasoning or chunk.tool_calls):
                    first = time.perf_counter() - start
                chunks.append(chunk)
        session = self.session
        return ResponseWithMeta.from_chunks(
            chunks, latency=time.perf_counter() - start, time_to_first_token=first,
            model=session.model, provider=session.provider or "")

    async def get_response_with_meta(self, text: str, *,
                                     options: Mapping[str, Any] | None = None,
                                     images: Sequence[str | bytes] | None = None,
                                     tools: Sequence[Any] | None = None,
                                     cache: bool | None = None) -> ResponseWithMeta:
        """Send ``text`` and return the whole answer with token counts and timings (without
        tools, the same as ``await chat.send_message(text)``).

        With ``tools`` (functions, :class:`~modelplex.tools.Tool` objects or JSON specs), or
        after :meth:`enable_function_calling`, the model's tool calls are run and answered
        until it gives a final answer (see :func:`modelplex.tools.run_tools`). ``cache=False``
        skips the manager's cache for this message, ``cache=True`` caches it even if sampled.
        """
        if tools or (self._toolbox is not None and self._toolbox.tools):
            from modelplex import tools as tools_module

            return await tools_module.respond(self, text, tools, options=options, images=images)
        return await self.send_message(text, options=options, images=images, cache=cache)

    async def execute_chain(self, prompt: PromptTemplate | str, *,
                            options: Mapping[str, Any] | None = None,
                            **kw: Any) -> ChainResult:
        """Send a prompt template and read the answer with the template's parser.

        ``prompt`` is a template instance, or a registered name with its fields as keywords
        (``chat.execute_chain("chain_of_thought", task="...")``). Templates that declare a
        parser are run like :meth:`get_structured` (``mode``, ``max_retries``,
        ``keep_attempts``); chain of thought gives ``result.reasoning`` and
        ``result.solution``. See :func:`modelplex.structured.execute_chain`.
        """
        from modelplex import structured

        return await structured.execute_chain(self, prompt, options=options, **kw)

    # -- structured output and tools (modelplex.structured, modelplex.tools) ----------------
    async def request_context(self, options: Mapping[str, Any] | None = None
                              ) -> tuple[Provider, ChatSession, CommonOptions]:
        """The provider, session and validated options the next request would use (an
        earlier answer left unfinished is closed first, so the history is complete)."""
        await self._turns.settle()
        provider, session = await self._ensure_model()
        return provider, session, provider.parse_options(self._merged_options(options))

    async def get_structured(self, text: str, output: Any, **kw: Any) -> StructuredResult:
        """Ask ``text`` and return the answer validated by ``output``.

        ``output`` is a parser name (``"json_dict"``), a :class:`~modelplex.parsers.Parser`,
        a pydantic model class or a JSON schema dict. Keywords: ``mode`` (``"native"``,
        ``"tool"`` or ``"prompted"``; chosen from the provider's capabilities by default),
        ``max_retries`` (re-asks after a bad answer, default 2), ``options``, ``images``,
        ``keep_attempts`` (keep the failed attempts in the history). Raises
        :class:`~modelplex.errors.ParseError` with every raw answer when none is valid.
        See :func:`modelplex.structured.get_structured`.
        """
        from modelplex import structured

        return await structured.get_structured(self, text, output, **kw)

    def stream_structured(self, text: str, output: Any,
                          **kw: Any) -> AsyncGenerator[StructuredUpdate, None]:
        """Like :meth:`get_structured`, yielding the partial value as the JSON streams in.

        The last update has ``done=True`` and the validated value.
        """
        from modelplex import structured

        return structured.stream_structured(self, text, output, **kw)

    def enable_function_calling(self, tools: Sequence[Any] = (), *, max_steps: int = 5,
                                raise_tool_errors: bool = False) -> None:
        """Let the model call ``tools`` (functions, Tools or JSON specs) from now on.

        :meth:`get_response_with_meta` then runs the model's calls, at most ``max_steps``
        rounds; a tool that raises is reported to the model unless ``raise_tool_errors``.
        """
        from modelplex.tools import ToolBox

        if self._toolbox is None:
            self._toolbox = ToolBox()
        self._toolbox.add(tools)
        self._toolbox.max_steps = max_steps
        self._toolbox.raise_errors = raise_tool_errors

    def disable_function_calling(self) -> None:
        """Stop offering tools to the model."""
        self._toolbox = None

    # -- sync twins -------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], name: str) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise ModelplexError(
                f"ChatManager.{name}_sync() was called inside a running event loop; "
                f"use `await chat.{name}(...)` there instead")
        if self._runner is None:  # the thread's shared loop: sync managers share providers
            from modelplex.pool import sync_runner

            self._runner = sync_runner()
        return self._runner.run(coro)

    def __enter__(self) -> ChatManager:
        if self._model_spec is not None:
            self.initialize_model_sync(self._model_spec)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        """Give back the providers (closed when no other manager uses them)."""
        if self._runner is not None:
            self._run(self.aclose(), "aclose")
            self._runner = None

    def initialize_model_sync(self, model: str | None = None, **options: Any) -> ChatSession:
        """Blocking :meth:`initialize_model`."""
        return self._run(self.initialize_model(model, **options), "initialize_model")

    def get_response_with_meta_sync(self, text: str, **kw: Any) -> ResponseWithMeta:
        """Blocking :meth:`get_response_with_meta`."""
        return self._run(self.get_response_with_meta(text, **kw), "get_response_with_meta")

    def get_structured_sync(self, text: str, output: Any, **kw: Any) -> StructuredResult:
        """Blocking :meth:`get_structured`."""
        return self._run(self.get_structured(text, output, **kw), "get_structured")

    def execute_chain_sync(self, prompt: PromptTemplate | str, **kw: Any) -> ChainResult:
        """Blocking :meth:`execute_chain`."""
        return self._run(self.execute_chain(prompt, **kw), "execute_chain")

    def send_message_sync(self, text: str, **kw: Any) -> Iterator[StreamChunk]:
        """Blocking :meth:`send_message`: iterate the chunks as they arrive."""
        stream = self.send_message(text, **kw)

        async def next_chunk() -> StreamChunk | None:
            try:
                return await anext(stream)
            except StopAsyncIteration:
                return None

        try:
            while (chunk := self._run(next_chunk(), "send_message")) is not None:
                yield chunk
        finally:
            if self._runner is not None:
                self._runner.run(stream.aclose())
