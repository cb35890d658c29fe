"""``ChatManager``: a conversation with any installed provider.

::

    async with ChatManager("llamacpp:smollm2", system_prompt="Be brief.") as chat:
        async for chunk in chat.send_message("What is the capital of France?"):
            print(chunk.content, end="")
        meta = await chat.send_message("And of Italy?")  # the whole answer
        print(meta.content, meta.completion_tokens, meta.latency)

It keeps the history, the mode and the public API (with ``_sync`` twins for scripts); the
request path is :class:`~modelplex.layers.ManagerLayers`'s and each exchange a
:class:`~modelplex.exchange.Turn` (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelplex import structured
from modelplex._blocking import Blocking, blocking, blocking_close, blocking_iter
from modelplex._modes import MODE_PRESETS, ChatMode, Sampling
from modelplex.batch import answer_each
from modelplex.errors import ConfigurationError
from modelplex.exchange import Turn, answered, checked_system_prompt, owned, streamed, user_message
from modelplex.layers import ManagerLayers
from modelplex.mcp import McpHub
from modelplex.parsers import resolve_output
from modelplex.plugins import Plugins
from modelplex.prompts import PromptTemplate
from modelplex.provider import CommonOptions, Provider
from modelplex.reply import Reply, ResponseWithMeta, Turns
from modelplex.specs import create_provider, model_and_options, parse_model_spec
from modelplex.structured import StructuredResult, StructuredUpdate
from modelplex.tools import ToolBox, run_tools
from modelplex.types import ChatMessage, ChatSession, ModelConfig

if TYPE_CHECKING:
    import os

    from modelplex.caches import Cache, CacheConfig
    from modelplex.config import Config
    from modelplex.mcp import Confirm
    from modelplex.pool import ProviderPool
    from modelplex.store.logs import LogStore

ChainResult = StructuredResult  # the result of execute_chain (reasoning, solution, parsed)

__all__ = ["MODE_PRESETS", "ChainResult", "ChatManager", "ChatMode", "Reply", "ResponseWithMeta",
           "create_provider", "parse_model_spec"]


class ChatManager:
    """A conversation with one model at a time, over any installed provider.

    ``model`` is ``"provider:model"``, a provider or named model, a bare model name, a
    :class:`~modelplex.types.ModelConfig`, ``"auto"`` (by the ``select`` criteria) or ``None``
    for the default; docs/python-api.md describes every argument.
    """

    def __init__(self, model: str | ModelConfig | None = None, *, system_prompt: str | None = None,
                 mode: ChatMode | str | None = None, options: Mapping[str, Any] | None = None,
                 provider_config: Mapping[str, Mapping[str, Any]] | None = None,
                 plugins: Plugins | None = None, select: Any = None,
                 config: Config | None = None, pool: ProviderPool | None = None,
                 cache: Cache | CacheConfig | str | Mapping[str, Any] | bool | None = None,
                 conversation: str | bool | None = None,
                 logs: LogStore | str | os.PathLike[str] | None = None,
                 retries: int | None = None, mcp: Sequence[str] | None = None,
                 confirm: Confirm | None = None) -> None:
        self.model_config = model if isinstance(model, ModelConfig) else None
        """The :class:`~modelplex.types.ModelConfig` given, if any."""
        self._model_spec, options = model_and_options(model, options)
        self._sampling = Sampling(options, mode)
        self._system_prompt = checked_system_prompt(system_prompt)
        self._layers = ManagerLayers(cache=cache, conversation=conversation, logs=logs,
                                     config=config, pool=pool, plugins=plugins, select=select,
                                     provider_config=provider_config, retries=retries)
        self._mcp_names = (mcp,) if isinstance(mcp, str) else tuple(mcp or ())  # one name
        if confirm is not None and not callable(confirm):
            raise ConfigurationError("ChatManager: confirm must be a function that is asked "
                                     f"before each MCP tool call (got {type(confirm).__name__})")
        self._confirm = confirm
        self._hub: McpHub | None = None  # made on first use (see _mcp)
        self._provider: Provider | None = None
        self._session: ChatSession | None = None
        self._toolbox: ToolBox | None = None  # made when function calling is enabled
        self._turns = Turns()  # one answer at a time

    @property
    def plugins(self) -> Plugins:
        """The plugins this manager draws providers from."""
        return self._layers.plugins

    # -- what a plain conversation never uses: made on first use -----------------------------
    @property
    def _mcp(self) -> McpHub:
        """The MCP servers (they start on the first message that uses them)."""
        if self._hub is None:
            self._hub = McpHub(self._layers.config, confirm=self._confirm)
        return self._hub

    @functools.cached_property
    def _blocking(self) -> Blocking:
        """The sync twins' event loop (:mod:`modelplex._blocking`)."""
        return Blocking("ChatManager", "chat")

    def _tools_for(self, tools: Sequence[Any] | None) -> ToolBox | None:
        """:meth:`ToolBox.for_message` of the enabled tools (``None``: a plain exchange)."""
        if self._toolbox is None:  # no tools enabled: a box only for a message's own
            return ToolBox().with_tools(tools) if tools else None
        return self._toolbox.for_message(tools)

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> ChatManager:
        if self._model_spec is not None:
            await self.initialize_model(self._model_spec)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def initialize(self) -> ChatSession:
        """Open the constructor's model (or the default), as ``async with`` does."""
        return await self.initialize_model(self._model_spec)

    async def aclose(self) -> None:
        """Close an unfinished answer, give back the providers (closed when no other manager
        uses them) and stop the MCP servers."""
        if self._turns.open:  # an answer left unfinished (nothing to close otherwise)
            with contextlib.suppress(Exception):
                await self._turns.aclose()
        self._provider = None
        await self._layers.aclose()
        if self._hub is not None:
            await self._hub.aclose()

    cleanup = aclose  # the name seed code uses

    # -- configuration ----------------------------------------------------------------------
    async def initialize_model(self, model: str | None = None, **options: Any) -> ChatSession:
        """Choose the model (``"provider:model"``, a named model, or ``"auto"`` to select one
        by the ``select`` criteria); the history is kept across switches."""
        lease = await self._layers.open(model)
        name, provider_name = lease.model, lease.provider_name
        history, system = ((self._session.messages, None) if self._session
                           else self._layers.history())  # a stored conversation's
        prompt = system or None if self._system_prompt is None else self._system_prompt
        sampling = self._sampling
        before = sampling.options, sampling.mode
        kept = sampling.keep(lease.provider, None, options)  # fails before it is kept
        assert kept is not None  # a provider was given
        try:  # the session shows the options (set here, not assigned one by one)
            session = ChatSession(model=name, provider=provider_name, messages=history,
                                  system_prompt=prompt, temperature=kept.temperature,
                                  top_p=kept.top_p, max_tokens=kept.max_tokens)
        except BaseException:
            sampling.options, sampling.mode = before
            raise
        self._provider, self._session, self._system_prompt = lease.provider, session, prompt
        self._model_spec = (name if provider_name == name  # a named model
                            else f"{provider_name}:{name}")  # reopened after aclose()
        return session

    @property
    def mcp_servers(self) -> tuple[str, ...]:
        """The MCP servers whose tools every message may call (``mcp=``)."""
        return self._mcp_names

    @property
    def conversation_id(self) -> str | None:
        """The id of the stored conversation (``conversation=``), else ``None``."""
        return self._layers.conversation_id

    def set_mode(self, mode: ChatMode | str | None) -> None:
        """Use a sampling preset (precise, balanced, creative or ``None``), fitted to the model."""
        self._sampling.keep(self._provider, self._session, mode=mode)

    def set_system_prompt(self, text: str | None) -> None:
        """Set or clear the system prompt."""
        self._system_prompt = text = checked_system_prompt(text)
        if self._session is not None:
            self._session.system_prompt = text

    def set_options(self, **options: Any) -> None:
        """Set provider options for the following messages."""
        self._sampling.keep(self._provider, self._session, options)

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

    async def _turn(self, options: Mapping[str, Any] | None = None,
                    cache: bool | None = None) -> Turn:
        """The next exchange: the model (initialised if needed) and validated options."""
        if self._provider is None or self._session is None:
            await self.initialize_model(self._model_spec)
        provider, session = self._provider, self._session
        assert provider is not None
        assert session is not None
        return Turn(provider, session, self._sampling.check(provider, options), cache=cache,
                    conversation_id=self.conversation_id)

    async def request_context(self, options: Mapping[str, Any] | None = None
                              ) -> tuple[Provider, ChatSession, CommonOptions]:
        """The provider, session and validated options the next request would use (an
        earlier answer left unfinished is closed first, so the history is complete)."""
        await self._turns.settle()
        turn = await self._turn(options)
        return turn.provider, turn.session, turn.options

    # -- talking ----------------------------------------------------------------------------
    def send_message(self, text: str, *, options: Mapping[str, Any] | None = None,
                     images: Sequence[str | bytes] | None = None,
                     cache: bool | None = None) -> Reply[ResponseWithMeta]:
        """Send ``text``; ``async for`` the reply to stream it, or ``await`` it for the whole
        answer (a :class:`ResponseWithMeta`). Both join the history by the rules of
        :mod:`modelplex.exchange`; ``cache=False`` skips the cache, ``cache=True`` caches even a
        sampled answer. An answer another task still reads raises
        :class:`~modelplex.errors.ChatBusyError`."""
        user = user_message(text, images)
        start = (self._turn if options is None and cache is None  # its defaults
                 else functools.partial(self._turn, options, cache))
        return Reply(streamed(self._turns, start, user),
                     functools.partial(answered, self._turns, start, user))

    async def get_response_with_meta(self, text: str, *,
                                     options: Mapping[str, Any] | None = None,
                                     images: Sequence[str | bytes] | None = None,
                                     tools: Sequence[Any] | None = None,
                                     mcp: Sequence[str] | None = None,
                                     resources: Sequence[str] | None = None,
                                     cache: bool | None = None) -> ResponseWithMeta:
        """The whole answer to ``text``. With tools (``tools``: functions, Tools or JSON specs;
        :meth:`enable_function_calling`'s; MCP servers', ``mcp`` adding to the manager's) the
        model's calls are run until it answers (:func:`modelplex.tools.run_tools`);
        ``resources`` (``"SERVER:URI"``) put MCP resources before ``text`` as context."""
        if self._mcp_names or mcp or resources:  # the MCP servers' tools and resources
            text, images, tools = await self._mcp.inputs(self, text, images, tools, mcp,
                                                         resources)
        box = self._tools_for(tools)
        if box is None:
            return await self.send_message(text, options=options, images=images, cache=cache)
        async with self._turns.hold():
            return await run_tools(await self._turn(options, cache), text, box, images=images)

    async def execute_chain(self, prompt: PromptTemplate | str, *,
                            options: Mapping[str, Any] | None = None, mode: str | None = None,
                            max_retries: int = 2, keep_attempts: bool = False,
                            **fields: Any) -> ChainResult:
        """Send a prompt template (an instance, or a registered name with its fields as
        keywords) and read the answer with its parser, like :meth:`get_structured` (chain of
        thought gives ``result.reasoning`` and ``result.solution``)."""
        template = structured.resolve_template(prompt, fields, self.plugins)
        parser, text = template.output_parser(), await template.arender(self)
        if parser is None:
            meta = await self.get_response_with_meta(text, options=options)
            return structured.chain_result(template, meta)
        return await self.get_structured(text, parser, mode=mode, options=options,
                                         max_retries=max_retries, keep_attempts=keep_attempts)

    # -- structured output, batches and tools (modelplex.structured, .batch, .tools) -------
    async def get_structured(self, text: str, output: Any, *,
                             options: Mapping[str, Any] | None = None,
                             **kw: Any) -> StructuredResult:
        """The answer to ``text`` validated by ``output`` (a parser or its name, a pydantic
        model class or a JSON schema); ``kw``: :func:`modelplex.structured.get_structured`."""
        parser = resolve_output(output, self.plugins)
        async with self._turns.hold():
            return await structured.get_structured(await self._turn(options), text, parser, **kw)

    def stream_structured(self, text: str, output: Any, *,
                          options: Mapping[str, Any] | None = None,
                          **kw: Any) -> AsyncGenerator[StructuredUpdate, None]:
        """Like :meth:`get_structured`, yielding the partial value as the JSON streams in (the
        last update has ``done=True``); the conversation's open answer while it is read."""
        parser = resolve_output(output, self.plugins)
        return owned(self._turns, functools.partial(self._turn, options),
                     lambda turn: structured.stream_structured(turn, text, parser, **kw))

    async def process_message_batch(self, messages: Sequence[str], *, max_concurrent: int = 5,
                                    options: Mapping[str, Any] | None = None,
                                    return_exceptions: bool = False) -> list[ResponseWithMeta]:
        """Answer each of ``messages`` with this conversation's settings, not its history
        (unchanged), in order: :func:`modelplex.batch.answer_each`."""
        return await answer_each(await self._turn(options), messages,
                                 max_concurrent=max_concurrent, return_exceptions=return_exceptions)

    def enable_function_calling(self, tools: Sequence[Any] = (), *, max_steps: int = 5,
                                raise_tool_errors: bool = False) -> None:
        """Let the model call ``tools`` (functions, Tools or JSON specs), ``max_steps`` rounds a
        message at most; a tool's error goes to the model unless ``raise_tool_errors``."""
        if self._toolbox is None:
            self._toolbox = ToolBox()
        self._toolbox.enable(tools, max_steps=max_steps, raise_errors=raise_tool_errors)

    def disable_function_calling(self) -> None:
        """Stop offering tools to the model."""
        self._toolbox = None

    # -- sync twins (modelplex._blocking) --------------------------------------------------
    initialize_model_sync = blocking(initialize_model)
    get_response_with_meta_sync = blocking(get_response_with_meta)
    get_structured_sync = blocking(get_structured)
    execute_chain_sync = blocking(execute_chain)
    process_message_batch_sync = blocking(process_message_batch)
    send_message_sync = blocking_iter(send_message)
    close_sync = blocking_close(aclose)

    def __enter__(self) -> ChatManager:
        if self._model_spec is not None:
            self.initialize_model_sync(self._model_spec)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()
