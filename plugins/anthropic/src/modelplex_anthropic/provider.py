"""The Anthropic Messages API provider.

Built on :mod:`modelplex.http` (one aiohttp session per provider instance), not on the
``anthropic`` SDK. The per-chunk path parses each SSE event with :func:`modelplex.http.loads`
and builds one slotted :class:`StreamChunk` per text or thinking delta; nothing else.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall
from modelplex.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OptionsError,
    ProviderError,
    ProviderStatusError,
    RateLimitError,
    ServerBusyError,
    StreamError,
    redact,
)
from modelplex.finish import normalize_finish_reason
from modelplex.http import (
    Timeouts,
    check_headers,
    error_from_status,
    loads_body,
    parse_retry_after,
    read_body,
)
from modelplex.http_provider import HttpProvider, secret_value
from modelplex.provider import Capabilities, ChatRequest, CommonOptions
from modelplex.streams import sse_json
from modelplex.types import ChatMessage, ModelInfo
from modelplex_anthropic.__about__ import __version__
from modelplex_anthropic.wire import (
    AnthropicChunk,
    encode_messages,
    encode_tool_choice,
    encode_tools,
    parse_arguments,
    response_from,
    usage_from,
)

if TYPE_CHECKING:
    from modelplex.batch.jobs import BatchItem, BatchJob, BatchRequest

__all__ = ["ANTHROPIC_BASE_URL", "ANTHROPIC_VERSION", "AnthropicOptions", "AnthropicProvider"]

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
_COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking")
#: The most tool-use and thinking blocks one streamed answer may hold.
MAX_BLOCKS = 256


class AnthropicOptions(CommonOptions):
    """Options of the Messages API (only those you set are sent).

    ``stop`` and ``stop_sequences`` are the same thing (both are sent as ``stop_sequences``).
    """

    temperature: float | None = Field(default=None, ge=0.0, le=1.0,
                                      description="Sampling temperature, 0 to 1.")
    top_k: int | None = Field(default=None, gt=0,
                              description="Sample from the k likeliest tokens, > 0.")
    stop_sequences: list[str] | None = Field(default=None,
                                             description="Stop sequences (same as stop).")
    thinking: int | Literal["adaptive", "disabled"] | dict[str, Any] | None = Field(
        default=None, description="Extended thinking: a token budget (>= 1024), 'adaptive', "
                                  "'disabled' or the API's own dict.")
    metadata: dict[str, str] | None = Field(default=None,
                                            description="{'user_id': ...}: an opaque id of "
                                                        "the end user.")
    disable_parallel_tool_use: bool | None = Field(default=None,
                                                   description="At most one tool call per "
                                                               "turn.")
    cache_prompt: Literal["system", "messages", "all"] | None = Field(
        default=None, description="Prompt caching: mark the system prompt, the last message, "
                                  "or both, as cache breakpoints.")
    cache_ttl: Literal["5m", "1h"] | None = Field(default=None,
                                                  description="Cache lifetime (default 5m).")
    betas: list[str] | None = Field(default=None,
                                    description="Beta features, sent as anthropic-beta.")
    service_tier: Literal["auto", "standard_only"] | None = Field(
        default=None, description="Priority capacity ('auto') or standard only.")
    extra_body: dict[str, Any] | None = Field(
        default=None, description="Extra JSON body fields sent as given (newer parameters).")

    @field_validator("seed")
    @classmethod
    def _no_seed(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("Anthropic's Messages API has no seed; leave it out")
        return value

    @field_validator("thinking")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value < 1024:
            raise ValueError("a thinking budget must be at least 1024 tokens")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        if value is not None and set(value) - {"user_id"}:
            raise ValueError("metadata takes only 'user_id'")
        return value


class AnthropicProvider(HttpProvider):
    """Anthropic's Messages API, or a server that speaks it (llama.cpp's ``llama-server``).

    Args:
        base_url: the API root, without ``/v1``; defaults to ``$ANTHROPIC_BASE_URL``, else
            ``https://api.anthropic.com``.
        api_key: sent as ``x-api-key``; defaults to ``$ANTHROPIC_API_KEY``.
        auth_token: an OAuth token sent as ``Authorization: Bearer`` instead; defaults to
            ``$ANTHROPIC_AUTH_TOKEN``.
        anthropic_version: the ``anthropic-version`` header (``2023-06-01``).
        betas: beta features for every request, sent as ``anthropic-beta``.
        headers: more headers sent with every request.
        default_model: the model used when only the provider is named.
        default_max_tokens: ``max_tokens`` when the caller sets none (the API requires it).
        timeouts: a number of seconds (the total per request), a mapping of ``connect``,
            ``first_byte``, ``between_chunks`` and ``total`` seconds, or a
            :class:`modelplex.http.Timeouts` (see :meth:`~modelplex.http.Timeouts.parse`).
        verify_tls: verify certificates (default).
    """

    name: str = "anthropic"
    Options: ClassVar[type[CommonOptions]] = AnthropicOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, embeddings=False, tools=True, vision=True, json_mode=True)
    default_model: str | None = "claude-sonnet-4-5"
    default_base_url: ClassVar[str] = ANTHROPIC_BASE_URL
    api_key_header: ClassVar[str] = "x-api-key"
    api_key_prefix: ClassVar[str] = ""
    user_agent: ClassVar[str | None] = f"modelplex-anthropic/{__version__}"
    key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"

    def __init__(self, *, base_url: str | None = None, api_key: str | SecretStr | None = None,
                 auth_token: str | SecretStr | None = None,
                 anthropic_version: str = ANTHROPIC_VERSION, betas: Sequence[str] = (),
                 headers: Mapping[str, str] | None = None, default_model: str | None = None,
                 default_max_tokens: int = 4096,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 verify_tls: bool = True) -> None:
        env = os.environ
        if default_max_tokens < 1:
            raise OptionsError(f"default_max_tokens must be > 0 (got {default_max_tokens})")
        self.default_max_tokens = default_max_tokens
        base = base_url or env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL
        key = secret_value(api_key if api_key is not None else env.get("ANTHROPIC_API_KEY"))
        token = secret_value(auth_token if auth_token is not None
                             else env.get("ANTHROPIC_AUTH_TOKEN"))
        self._has_key = bool(key or token)
        send: dict[str, str] = {"anthropic-version": anthropic_version}
        self.betas = tuple(betas)
        if betas:
            send["anthropic-beta"] = ",".join(betas)
        send.update(check_headers(headers, field=f"{self.name}: headers"))
        if token and not key:  # an OAuth token instead of a key
            send["Authorization"] = f"Bearer {token}"
        super().__init__(base_url=base.rstrip("/").removesuffix("/v1"), api_key=key,
                         headers=send, timeouts=timeouts, verify_tls=verify_tls,
                         default_model=default_model)

    def missing_setting(self) -> str | None:
        """``ANTHROPIC_API_KEY`` when there is neither a key nor an OAuth token and the base
        URL is Anthropic's (a server of the user's, llama-server say, may need none)."""
        return None if self._has_key else super().missing_setting()

    # -- errors -----------------------------------------------------------------------------
    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        # ``body`` arrives with secrets already redacted by HttpClient
        err = error_from_status(status, body, headers, provider=self.name,
                                secrets=self.http.secrets)
        info = body.get("error") if isinstance(body, dict) else None
        kind = info.get("type") if isinstance(info, dict) else None
        request_id = (body.get("request_id") if isinstance(body, dict) else None) or \
            headers.get("request-id")
        text = _noted(str(err), f" (request id {request_id})") if request_id else str(err)
        result: ProviderStatusError
        if status == 401 or kind == "authentication_error":
            hint = ("check the key in ANTHROPIC_API_KEY" if self._has_key else
                    "no API key was sent: set ANTHROPIC_API_KEY to your API key")
            result = AuthenticationError(f"{text}; {hint}", status_code=status, body=body,
                                         provider=self.name)
        elif status == 404 or kind == "not_found_error":
            result = ModelNotFoundError(text, status_code=status, body=body, provider=self.name)
        elif kind == "overloaded_error" or isinstance(err, RateLimitError):
            cls = ServerBusyError if kind == "overloaded_error" or status in (503, 529) \
                else RateLimitError
            retry_after = parse_retry_after(headers)
            limits = {k.lower(): v for k, v in headers.items()
                      if k.lower().startswith("anthropic-ratelimit-")}
            if retry_after is None and limits:
                retry_after = _reset_wait(limits)
            result = cls(text, status_code=status, body=body, retry_after=retry_after,
                         provider=self.name)
            result.rate_limits = limits  # type: ignore[attr-defined]
        else:
            result = type(err)(text, status_code=status, body=body, provider=self.name)
        if kind in ("billing_error", "permission_error", "invalid_request_error"):
            result.retriable = False
        should_retry = headers.get("x-should-retry")
        if should_retry in ("true", "false"):
            result.retriable = should_retry == "true"
        return result

    def _stream_error(self, obj: Any) -> StreamError:
        info = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(info, dict):
            kind = info.get("type") or "error"
            message = f"{kind}: {info.get('message') or ''}".rstrip(": ")
        else:
            kind, message = "error", str(info if info is not None else obj)
        err = StreamError(f"{self.name}: the server reported an error in its answer: "
                          f"{redact(message, *self.http.secrets)}", provider=self.name)
        err.error_type = kind  # type: ignore[attr-defined]
        if kind in ("invalid_request_error", "authentication_error", "permission_error",
                    "billing_error", "not_found_error"):
            err.retriable = False
        return err

    # -- requests ---------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> tuple[dict[str, Any], dict[str, str] | None]:
        """The request body and the per-request headers."""
        system, messages = encode_messages(request.messages)
        options = request.options.set_values()
        extra = options.pop("extra_body", None)
        betas = options.pop("betas", None)
        cache = options.pop("cache_prompt", None)
        ttl = options.pop("cache_ttl", None)
        thinking = options.pop("thinking", None)
        stops = (options.pop("stop", None) or []) + (options.pop("stop_sequences", None) or [])
        parallel = options.pop("disable_parallel_tool_use", None)
        max_tokens = options.pop("max_tokens", None)
        budget = 0
        if isinstance(thinking, int):
            budget = thinking
            thinking = {"type": "enabled", "budget_tokens": thinking}
        elif isinstance(thinking, str):
            thinking = {"type": thinking}
        if max_tokens is None:
            max_tokens = self.default_max_tokens + budget
        elif budget and max_tokens <= budget:
            raise OptionsError(f"option 'max_tokens' ({max_tokens}) must be larger than the "
                               f"thinking budget ({budget}): it counts thinking tokens too")
        body: dict[str, Any] = {"model": request.model, "max_tokens": max_tokens,
                                "messages": messages}
        marker: dict[str, Any] = {"type": "ephemeral"}
        if ttl:
            marker["ttl"] = ttl
        if system:
            text = "\n\n".join(system)
            if cache in ("system", "all"):
                body["system"] = [{"type": "text", "text": text, "cache_control": marker}]
            else:
                body["system"] = text
        if cache in ("messages", "all"):
            last = messages[-1]
            if isinstance(last["content"], str):
                last["content"] = [{"type": "text", "text": last["content"]}]
            last["content"][-1] = {**last["content"][-1], "cache_control": marker}
        if stops:
            body["stop_sequences"] = stops
        if thinking is not None:
            body["thinking"] = thinking
        body.update(options)  # temperature, top_p, top_k, metadata, service_tier
        if request.tools:
            body["tools"] = encode_tools(request.tools)
        choice = request.tool_choice
        # the API refuses tool_choice without tools (a default that stays set)
        if request.tools and (choice is not None or parallel is not None):
            encoded = encode_tool_choice(choice if choice is not None else "auto")
            if parallel is not None:
                encoded["disable_parallel_tool_use"] = parallel
            body["tool_choice"] = encoded
        fmt = request.response_format
        if fmt:
            schema = fmt.get("schema") if fmt.get("type") == "json_schema" else \
                {"type": "object"}
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if extra:
            body.update(extra)
        # a request's betas add to the provider's (the header of the request replaces theirs)
        headers = {"anthropic-beta": ",".join(dict.fromkeys((*self.betas, *betas)))} \
            if betas else None
        return body, headers

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        body, headers = self._body(request)
        body["stream"] = True
        http = self.http
        name = self.name
        usage: dict[str, Any] = {}
        stop: str | None = None
        served: str | None = None
        response_id: Any = None
        blocks: dict[int, dict[str, Any]] = {}  # tool_use and thinking blocks by index
        done = False
        pieces = 0  # deltas received, the estimate when the server reports no output tokens
        async with http.stream("POST", "/v1/messages", body, headers=headers) as resp:
            # message_stop and error events are matched below, after the frequent kinds,
            # which keeps the per-chunk path as short as a hand-written loop
            events = sse_json(resp, provider=name, max_line_bytes=http.max_line_bytes,
                              done=None, require_end=False, error_events=(), error_key=None)
            async for event, obj in events:
                try:
                    kind = event or obj.get("type")
                    if kind == "content_block_delta":
                        delta = obj["delta"]
                        dtype = delta.get("type")
                        pieces += 1
                        if dtype == "text_delta":
                            text = delta["text"]
                            if text:
                                yield StreamChunk(text)
                        elif dtype == "input_json_delta":
                            # a server tool's input (server_tool_use, mcp_tool_use: run by
                            # Anthropic, not by us) streams this way too: its block is untracked
                            entry = blocks.get(obj["index"])
                            if entry is not None:
                                entry["parts"].append(delta.get("partial_json", ""))
                        elif dtype == "thinking_delta":
                            thought = delta["thinking"]
                            blocks[obj["index"]]["parts"].append(thought)
                            if thought:
                                yield StreamChunk("", thought)
                        elif dtype == "signature_delta":
                            blocks[obj["index"]]["signature"] = delta["signature"]
                    elif kind == "content_block_start":
                        block = obj["content_block"]
                        btype = block.get("type")
                        if btype == "text":
                            if block.get("text"):
                                yield StreamChunk(block["text"])
                        elif btype in ("tool_use", "thinking", "redacted_thinking"):
                            if len(blocks) >= MAX_BLOCKS:  # bounded, whatever a server sends
                                raise StreamError(f"{name}: the answer holds more than "
                                                  f"{MAX_BLOCKS} tool-use and thinking "
                                                  "blocks", provider=name)
                            first = block.get("thinking")
                            blocks[obj["index"]] = {"block": block, "parts": [],
                                                    "signature": block.get("signature")}
                            if first:
                                blocks[obj["index"]]["parts"].append(first)
                                yield StreamChunk("", first)
                    elif kind == "message_start":
                        message = obj["message"]
                        served = message.get("model")
                        response_id = message.get("id")
                        usage.update((k, v) for k, v in (message.get("usage") or {}).items()
                                     if v is not None)
                    elif kind == "message_delta":
                        stop = obj["delta"].get("stop_reason") or stop
                        usage.update((k, v) for k, v in (obj.get("usage") or {}).items()
                                     if v is not None)
                    elif kind == "message_stop":
                        done = True
                        break
                    elif kind == "error" or (kind is None and obj.get("error")):
                        # an error event, or an OpenAI-shaped error object (a gateway's, or
                        # llama-server's, sent with HTTP 200)
                        raise self._stream_error(obj)
                    # ping, content_block_stop, message_stop and unknown events carry nothing
                    # we need
                except (KeyError, TypeError, AttributeError) as err:
                    raise StreamError(f"{name}: unexpected event in the stream: "
                                      f"{str(obj)[:200]!r}", provider=name) from err
        if not done:
            raise events.cut_short()
        calls, thinking = _finish_blocks(blocks, name)
        yield AnthropicChunk(finish_reason=normalize_finish_reason(stop), tool_calls=calls or None,
                             usage=usage_from(usage, request.messages, pieces),
                             model=served or request.model,
                             thinking_blocks=thinking or None, stop_reason=stop,
                             response_id=response_id if isinstance(response_id, str) else None)

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        body, headers = self._body(request)
        http = self.http
        async with http.stream("POST", "/v1/messages", body, headers=headers) as resp:
            raw = await read_body(resp, http.max_body_bytes, provider=self.name)
        data = loads_body(raw, provider=self.name)
        if not isinstance(data, dict) or data.get("type") == "error":
            raise self._stream_error(data)
        return response_from(data, model=request.model, provider=self.name)

    # -- Message Batches (modelplex_anthropic.batch) ----------------------------------------
    batch_max_requests: ClassVar[int] = 100_000
    batch_max_bytes: ClassVar[int] = 200 * 1024 * 1024  # estimated; a batch may hold 256 MB

    async def submit_batch(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """``POST /v1/messages/batches`` with ``requests``."""
        from modelplex_anthropic import batch

        return await batch.submit(self, requests)

    async def batch_status(self, job_id: str) -> BatchJob:
        """``GET /v1/messages/batches/{id}``."""
        from modelplex_anthropic import batch

        return await batch.status(self, job_id)

    def batch_results(self, job_id: str) -> AsyncIterator[BatchItem]:
        """The ended job's results, a line at a time."""
        from modelplex_anthropic import batch

        return batch.results(self, job_id)

    async def cancel_batch(self, job_id: str) -> BatchJob:
        """``POST /v1/messages/batches/{id}/cancel``."""
        from modelplex_anthropic import batch

        return await batch.cancel(self, job_id)

    # -- other operations -------------------------------------------------------------------
    async def count_tokens(self, messages: Sequence[ChatMessage | Mapping[str, Any]], *,
                           model: str = "", tools: list[dict[str, Any]] | None = None,
                           options: Mapping[str, Any] | None = None) -> int:
        """The input tokens a request would use (``POST /v1/messages/count_tokens``)."""
        request = self.build_request(messages, model=model, options=options, tools=tools)
        body, headers = self._body(request)
        payload = {k: body[k] for k in _COUNT_KEYS if k in body}
        http = self.http
        async with http.stream("POST", "/v1/messages/count_tokens", payload,
                               headers=headers) as resp:
            data = loads_body(await read_body(resp, http.max_body_bytes, provider=self.name),
                              provider=self.name)
        count = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool):
            raise StreamError(f"{self.name}: /v1/messages/count_tokens gave no input_tokens: "
                              f"{redact(str(data)[:200], *http.secrets)}", provider=self.name)
        return count

    def _model_info(self, item: Mapping[str, Any]) -> ModelInfo:
        model_id = str(item.get("id"))
        details = {k: v for k, v in item.items()
                   if k not in ("id", "type", "object") and v not in (None, [], {})}
        context = item.get("max_input_tokens")
        return ModelInfo(id=model_id, name=model_id, provider=self.name,
                         context_length=context if isinstance(context, int) else None,
                         details=details)

    async def list_models(self) -> list[ModelInfo]:
        """The models of ``GET /v1/models``, every page."""
        models: list[ModelInfo] = []
        path = "/v1/models?limit=1000"
        while True:
            data = await self.http.request_json("GET", path)
            items = data.get("data") if isinstance(data, dict) else None
            models.extend(self._model_info(m) for m in items or [] if isinstance(m, dict))
            if not (isinstance(data, dict) and data.get("has_more") and data.get("last_id")):
                return models
            path = f"/v1/models?limit=1000&after_id={data['last_id']}"


def _noted(text: str, note: str) -> str:
    """``text`` with ``note`` added before the "(retry after N s)" the core puts last."""
    head, sep, tail = text.rpartition(" (retry after ")
    return f"{head}{note}{sep}{tail}" if sep else text + note


def _reset_wait(limits: Mapping[str, str]) -> float | None:
    """Seconds until the first exhausted rate limit resets (RFC 3339 ``*-reset`` headers)."""
    waits = []
    now = datetime.now(UTC)
    for key, value in limits.items():
        if not key.endswith("-remaining") or value.strip() != "0":
            continue
        reset = limits.get(key.removesuffix("-remaining") + "-reset")
        if not reset:
            continue
        try:
            when = datetime.fromisoformat(reset.replace("Z", "+00:00"))
        except ValueError:
            continue
        waits.append(max(0.0, (when - now).total_seconds()))
    return min(waits) if waits else None


def _finish_blocks(blocks: Mapping[int, Mapping[str, Any]], provider: str
                   ) -> tuple[list[ToolCall], list[dict[str, Any]]]:
    """Tool calls and thinking blocks (signatures kept) from the tracked blocks."""
    calls: list[ToolCall] = []
    thinking: list[dict[str, Any]] = []
    for _, entry in sorted(blocks.items()):
        block = entry["block"]
        kind = block.get("type")
        if kind == "tool_use":
            name = block.get("name", "")
            # no input_json_delta: the start block's input stands (compatible servers that
            # send the whole input there)
            raw = "".join(entry["parts"]) or block.get("input")
            calls.append(ToolCall(name=name, id=block.get("id"),
                                  arguments=parse_arguments(name, raw, provider)))
        elif kind == "thinking":
            thinking.append({"type": "thinking", "thinking": "".join(entry["parts"]),
                             "signature": entry["signature"] or ""})
        else:
            thinking.append(dict(block))
    return calls, thinking
