"""The OpenAI Chat Completions provider, for OpenAI and every compatible server.

Built on :mod:`modelplex.http` (one aiohttp session per provider instance), not on the
``openai`` SDK. The per-chunk path parses each SSE event with :func:`modelplex.http.loads`
and builds one slotted :class:`StreamChunk`; nothing else (no validation, no logging).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from array import array
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ModelNotFoundError,
    OptionsError,
    ProviderError,
    RateLimitError,
    StreamError,
    mask_url,
)
from modelplex.finish import normalize_finish_reason
from modelplex.http import (
    Timeouts,
    check_headers,
    error_from_status,
)
from modelplex.http_provider import HttpProvider
from modelplex.provider import Capabilities, ChatRequest, CommonOptions
from modelplex.registry import is_local_provider
from modelplex.streams import sse_json, stream_error
from modelplex.types import HealthStatus, ModelInfo
from modelplex_openai.__about__ import __version__
from modelplex_openai.wire import (
    build_tool_calls,
    content_parts,
    encode_messages,
    first_choice,
    merge_tool_deltas,
    response_format,
    response_from,
    usage_from,
)

if TYPE_CHECKING:
    import aiohttp

    from modelplex.batch.jobs import BatchItem, BatchJob, BatchRequest

__all__ = ["OpenAIOptions", "OpenAIProvider"]

log = logging.getLogger("modelplex.openai")

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: The timeouts OpenAI's and Azure's hosted APIs start from: 600 s of silence between chunks
HOSTED_TIMEOUTS = Timeouts(between_chunks=600.0)
#: why ``n`` other than 1 is refused, and what to do instead
ONE_CHOICE = ("modelplex returns one answer per request, so n must be 1 (or left out); for "
              "several answers send several requests, or a batch (modelplex batch)")


class OpenAIOptions(CommonOptions):
    """Options of the Chat Completions API (only those you set are sent)."""

    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0,
                                           description="Penalty for tokens already present, "
                                                       "-2 to 2.")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0,
                                            description="Penalty by token frequency, -2 to 2.")
    logit_bias: dict[str, float] | None = Field(default=None,
                                                description="Token id -> bias, -100 to 100.")
    user: str | None = Field(default=None, description="An end-user id for abuse monitoring.")
    max_completion_tokens: int | None = Field(default=None, gt=0,
                                              description="Most tokens to generate, reasoning "
                                                          "included (newer OpenAI models).")
    parallel_tool_calls: bool | None = Field(default=None,
                                             description="Allow several tool calls at once.")
    extra_body: dict[str, Any] | None = Field(
        default=None, description="Extra JSON body fields sent as given, for parameters a "
                                  "compatible server adds (top_k, chat_template_kwargs, ...).")
    n: int | None = Field(default=None, exclude=True,
                          description="Choices per request: only 1 (modelplex returns one "
                                      "answer); never sent.")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError(ONE_CHOICE)
        return value

    @field_validator("extra_body")
    @classmethod
    def _no_choices(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        n = value.get("n") if value else None
        if n is not None and (type(n) is not int or n != 1):
            raise ValueError(f"n={n!r} in extra_body: {ONE_CHOICE}")
        return value

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _bias(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            value = {str(k): v for k, v in value.items()}
            for token, bias in value.items():
                if isinstance(bias, int | float) and not -100 <= bias <= 100:
                    raise ValueError(f"bias of token {token} must be between -100 and 100")
        return value


class OpenAIProvider(HttpProvider):
    """OpenAI's Chat Completions API, or any server that speaks it.

    Args:
        name: the provider name (``openai``, or a named endpoint such as ``vllm``).
        base_url: the API root including ``/v1``. For the class's own name it defaults to
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        api_key: the key, sent as ``Authorization: Bearer``. Defaults to ``$api_key_env``.
        api_key_env: the variable holding the key (``OPENAI_API_KEY`` for ``openai``).
        organization, project: ``OpenAI-Organization`` / ``OpenAI-Project`` headers; for
            ``openai`` they default to ``$OPENAI_ORG_ID`` (or ``$OPENAI_ORGANIZATION``) and
            ``$OPENAI_PROJECT_ID``.
        headers: more headers sent with every request (treated as credentials: masked in
            errors, dropped on a redirect to another host).
        default_model: the model used when only the provider is named.
        timeouts: a number of seconds (the total per request), a mapping of ``connect``,
            ``first_byte``, ``between_chunks`` and ``total`` seconds, or a
            :class:`modelplex.http.Timeouts` (see :meth:`~modelplex.http.Timeouts.parse`).
        verify_tls: verify certificates (default).
        config_source: where the endpoint was configured (used in error messages).
        json_schema_style: how a JSON schema is sent: ``"json_schema"`` (OpenAI's
            ``response_format``, the default) or ``"json_object"`` (``{"type":
            "json_object", "schema": ...}``, for llama-cpp-python's server).
    """

    name: str = "openai"
    Options: ClassVar[type[CommonOptions]] = OpenAIOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, embeddings=True, tools=True, vision=True, json_mode=True,
        json_schema=True)

    user_agent: ClassVar[str | None] = f"modelplex-openai/{__version__}"
    #: Defaults applied when the provider is created under the class's own name.
    default_base_url: ClassVar[str] = OPENAI_BASE_URL
    base_url_env: ClassVar[str | None] = "OPENAI_BASE_URL"
    default_api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    organization_envs: ClassVar[tuple[str, ...]] = ("OPENAI_ORG_ID", "OPENAI_ORGANIZATION")
    project_envs: ClassVar[tuple[str, ...]] = ("OPENAI_PROJECT_ID",)
    #: Texts per embeddings request.
    embed_batch_size: ClassVar[int] = 512

    def __init__(self, *, name: str | None = None, base_url: str | None = None,
                 api_key: str | SecretStr | None = None, api_key_env: str | None = None,
                 organization: str | None = None, project: str | None = None,
                 headers: Mapping[str, str] | None = None, default_model: str | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 verify_tls: bool = True, config_source: str | None = None,
                 json_schema_style: str = "json_schema") -> None:
        cls = type(self)
        if json_schema_style not in ("json_schema", "json_object"):
            raise OptionsError("json_schema_style must be 'json_schema' or 'json_object' "
                               f"(got {json_schema_style!r})")
        self.json_schema_style = json_schema_style
        own = name is None or name == cls.name
        if name is not None and not own:
            self.name = name  # one instance per named endpoint
        env = os.environ
        if api_key_env is None and own:
            api_key_env = cls.default_api_key_env
        if api_key is None and api_key_env:
            api_key = env.get(api_key_env) or None
        self.api_key_env = api_key_env
        self.config_source = config_source
        send: dict[str, str] = {}
        if own:
            organization = organization or next(
                (env[v] for v in cls.organization_envs if env.get(v)), None)
            project = project or next((env[v] for v in cls.project_envs if env.get(v)), None)
        if organization:
            send["OpenAI-Organization"] = organization
        if project:
            send["OpenAI-Project"] = project
        send.update(check_headers(headers, field=f"{self.name}: headers"))
        resolved = self._resolve_base_url(base_url, own)
        host = (urlsplit(resolved).hostname or "").lower()
        if host == "api.openai.com" or host.endswith(".openai.azure.com"):
            # their reasoning models send nothing while they think, often for minutes: allow
            # the silence the official SDK allows (600 s), unless the user chose
            timeouts = Timeouts.parse(timeouts, base=HOSTED_TIMEOUTS,
                                      field=f"{self.name}: timeouts")
        super().__init__(base_url=resolved, api_key=api_key, headers=send,
                         timeouts=timeouts, verify_tls=verify_tls, default_model=default_model)
        #: whether streams ask for the usage chunk (``stream_options``); turned off for a
        #: server that refuses the field
        self.stream_usage = True
        #: models that refused ``max_tokens`` for ``max_completion_tokens``
        self._completion_tokens_models: set[str] = set()

    def missing_setting(self) -> str | None:
        """The key's variable (``OPENAI_API_KEY``) when there is no key and the base URL is
        the class's hosted default; None for a server of the user's (``base_url``)."""
        if self.api_key is not None or self.base_url != type(self).default_base_url.rstrip("/"):
            return None
        if is_local_provider(self):  # a local server (LM Studio's default, say)
            return None
        return self.api_key_env or type(self).default_api_key_env or f"{self.name}'s api_key"

    def _resolve_base_url(self, base_url: str | None, own: bool) -> str:
        cls = type(self)
        if base_url is None and own and cls.base_url_env:
            base_url = os.environ.get(cls.base_url_env) or None
        return (base_url or cls.default_base_url).rstrip("/")

    # -- errors -----------------------------------------------------------------------------
    def _key_hint(self) -> str:
        if self.api_key_env:
            if self.api_key is None:
                return f"no API key was sent: set {self.api_key_env} to your API key"
            return f"check the API key in {self.api_key_env}"
        where = self.config_source or "the endpoint configuration"
        return (f"set api_key_env for endpoint {self.name!r} in {where} to the environment "
                "variable that holds its key")

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        # ``body`` arrives with secrets already redacted by HttpClient
        err = error_from_status(status, body, headers, provider=self.name,
                                secrets=self.http.secrets)
        info = body.get("error") if isinstance(body, dict) else None
        code = type_ = None
        if isinstance(info, dict):
            code, type_ = info.get("code"), info.get("type")
        if status == 401:
            return AuthenticationError(f"{err}; {self._key_hint()}", status_code=status,
                                       body=body, provider=self.name)
        if code in ("model_not_found", "model_not_supported") or (
                status == 404 and type_ == "invalid_request_error"):
            return ModelNotFoundError(str(err), status_code=status, body=body,
                                      provider=self.name)
        if status == 404:
            return ModelNotFoundError(
                f"{err} (is {mask_url(self.base_url)} the right base URL? OpenAI-compatible "
                "servers usually serve under /v1)", status_code=status, body=body,
                provider=self.name)
        if isinstance(err, RateLimitError) and "insufficient_quota" in (code, type_):
            err.retriable = False  # out of credit: waiting does not help
        return err

    def _stream_error(self, obj: Any) -> StreamError:
        err = stream_error(obj if isinstance(obj, dict) else str(obj), provider=self.name,
                           secrets=self.http.secrets)
        if "Unexpected endpoint or method" in str(err):  # LM Studio, for a path it lacks
            err.args = (f"{err} (is {mask_url(self.base_url)} the right base URL? "
                        "OpenAI-compatible servers usually serve under /v1)",)
            err.retriable = False
        return err

    # -- chat -------------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model,
                                "messages": encode_messages(request.messages)}
        options = request.options.set_values()
        extra = options.pop("extra_body", None)
        body.update(options)
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        else:  # OpenAI and Azure refuse these without tools (a default that stays set)
            body.pop("parallel_tool_calls", None)
        if request.response_format:
            body["response_format"] = response_format(request.response_format,
                                                      self.json_schema_style)
        if extra:
            body.update(extra)
        if request.model in self._completion_tokens_models and "max_tokens" in body and \
                "max_completion_tokens" not in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
        return body

    def _mend(self, err: BadRequestError, body: dict[str, Any]) -> bool:
        """Change ``body`` for a field the server refused; whether asking again is worth it.

        ``stream_options`` (strict gateways, older vLLM and Azure builds) is dropped and no
        longer sent; ``max_tokens`` is sent as ``max_completion_tokens`` when the server says
        to (OpenAI's reasoning models: o-series, gpt-5), from then on for that model.
        """
        text = f"{err} {err.body}"
        if "stream_options" in body and "stream_options" in text:
            log.info("%s refuses stream_options: asking without it (usage is then read from "
                     "the server's chunks or estimated)", self.name)
            self.stream_usage = False
            del body["stream_options"]
            return True
        if "max_tokens" in body and "max_completion_tokens" not in body and \
                "max_completion_tokens" in text:
            if len(self._completion_tokens_models) < 256:  # bounded; beyond, ask each time
                self._completion_tokens_models.add(body["model"])
            body["max_completion_tokens"] = body.pop("max_tokens")
            return True
        return False

    async def _send(self, body: dict[str, Any], stack: contextlib.AsyncExitStack | None = None
                    ) -> Any:
        """``POST /chat/completions``: the streamed response (entered on ``stack``), or the
        whole answer's JSON; asked again when :meth:`_mend` mends a refused field."""
        while True:  # each mend removes what it mends: at most two more tries
            try:
                if stack is None:
                    return await self.http.request_json("POST", "/chat/completions", body)
                return await stack.enter_async_context(
                    self.http.stream("POST", "/chat/completions", body))
            except BadRequestError as err:
                if not self._mend(err, body):
                    raise

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        body = self._body(request)
        body["stream"] = True
        if self.stream_usage:  # extra_body may set its own, or null to send none
            body.setdefault("stream_options", {"include_usage": True})
        if body.get("stream_options") is None:
            body.pop("stream_options", None)
        http = self.http
        name = self.name
        finish: str | None = None
        usage: Any = None
        timings: Any = None
        served: str | None = None
        response_id: Any = None
        calls: dict[int, list[Any]] = {}
        refused = False
        tokens = 0
        async with contextlib.AsyncExitStack() as stack:
            resp: aiohttp.ClientResponse = await self._send(body, stack)
            # [DONE] ends it; an error event or member raises; a cut stream is judged below
            events = sse_json(resp, provider=name, max_line_bytes=http.max_line_bytes,
                              require_end=False, error=self._stream_error, objects_only=True)
            async for _event, obj in events:
                choices = obj.get("choices")
                if choices:
                    choice = choices[0]
                    if choice.get("index"):  # a server sending several choices: read 0's
                        choice = first_choice(choices)
                if choices and choice:
                    # "message": a server that answered with the whole completion at once
                    delta = choice.get("delta") or choice.get("message")
                    if delta:
                        content = delta.get("content")
                        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                        if type(content) is list:  # parts: Mistral's thinking, say
                            content, thought = content_parts(content)
                            reasoning = (reasoning or "") + thought
                        refusal = delta.get("refusal")
                        if refusal:
                            refused = True
                            content = (content or "") + refusal
                        tool_deltas = delta.get("tool_calls")
                        if tool_deltas:
                            merge_tool_deltas(calls, tool_deltas, provider=name)
                            tokens += 1
                        if content is not None and (content or "role" not in delta):
                            tokens += 1
                        if content or reasoning:
                            yield StreamChunk(content or "", reasoning or None)
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = normalize_finish_reason(reason)
                elif obj.get("object") == "error":  # vLLM's error shape, unwrapped
                    raise self._stream_error(obj)
                if served is None:
                    served = obj.get("model")
                    response_id = obj.get("id")
                if obj.get("usage"):
                    usage = obj["usage"]
                elif "x_groq" in obj:  # Groq: usage (and errors) in a member of its own
                    groq = obj["x_groq"] if isinstance(obj["x_groq"], dict) else {}
                    if groq.get("error"):
                        raise self._stream_error({"error": groq["error"]})
                    usage = groq.get("usage") or usage
                if obj.get("timings"):
                    timings = obj["timings"]
        if finish is None:  # a finish reason or [DONE] is the end; without either, a cut
            if not events.ended:
                raise events.cut_short()
            finish = "stop"
        if refused and finish == "stop":
            finish = "refusal"
        elif calls and finish == "stop":  # Gemini ends its tool calls with "stop"
            finish = "tool_calls"
        yield StreamChunk(
            finish_reason=finish,
            tool_calls=build_tool_calls(calls, name) if calls else None,
            usage=usage_from(usage, timings, request.messages, tokens),
            model=served or request.model,
            response_id=response_id if isinstance(response_id, str) else None,
        )

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        body = self._body(request)
        body.pop("stream_options", None)  # servers refuse it without "stream": true
        data = await self._send(body)
        # an error with HTTP 200: {"error": ...}, or vLLM's {"object": "error", "message"}
        if not isinstance(data, dict) or data.get("error") is not None or \
                data.get("object") == "error":
            raise self._stream_error(data)
        return response_from(data, model=request.model, provider=self.name,
                             messages=request.messages)

    # -- the Batch API (modelplex_openai.batch) ---------------------------------------------
    batch_max_requests: ClassVar[int] = 50_000
    batch_max_bytes: ClassVar[int] = 150 * 1024 * 1024  # estimated; the file may hold 200 MB

    async def submit_batch(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """Upload ``requests`` (``POST /files``, purpose ``batch``) and create a job of them
        (``POST /batches``, ``/v1/chat/completions``, 24 h)."""
        from modelplex_openai import batch

        return await batch.submit(self, requests)

    async def batch_status(self, job_id: str) -> BatchJob:
        """``GET /batches/{id}``."""
        from modelplex_openai import batch

        return await batch.status(self, job_id)

    def batch_results(self, job_id: str) -> AsyncIterator[BatchItem]:
        """The ended job's output file, then its error file, a line at a time."""
        from modelplex_openai import batch

        return batch.results(self, job_id)

    async def cancel_batch(self, job_id: str) -> BatchJob:
        """``POST /batches/{id}/cancel``."""
        from modelplex_openai import batch

        return await batch.cancel(self, job_id)

    # -- embeddings -------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """One vector per text, sent in batches of ``batch_size`` (default 512).

        Options: ``dimensions`` (models that can shorten their vectors), ``user``,
        ``batch_size`` and ``extra_body``.
        """
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"dimensions", "user", "batch_size", "extra_body"})
        if unknown:
            raise OptionsError(f"unknown embedding option(s) {', '.join(map(repr, unknown))} "
                               f"for provider {self.name!r}; valid options: batch_size, "
                               "dimensions, extra_body, user")
        batch_size = opts.pop("batch_size", self.embed_batch_size)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise OptionsError(f"option 'batch_size' must be > 0 (got {batch_size!r})")
        extra = opts.pop("extra_body", None) or {}
        vectors: list[list[float]] = []
        texts = list(texts)
        for start in range(0, len(texts), batch_size):
            payload = {"model": model or self.default_model or "",
                       "input": texts[start:start + batch_size], **opts, **extra}
            data = await self.http.request_json("POST", "/embeddings", payload)
            items = sorted(data.get("data") or [], key=lambda item: item.get("index", 0))
            if len(items) != len(payload["input"]):
                raise StreamError(f"{self.name}: asked for {len(payload['input'])} embeddings, "
                                  f"got {len(items)}", provider=self.name)
            for item in items:
                vector = item["embedding"]
                if isinstance(vector, str):  # encoding_format=base64
                    vector = array("f", base64.b64decode(vector)).tolist()
                vectors.append(vector)
        return vectors

    # -- models -----------------------------------------------------------------------------
    def _model_info(self, item: Mapping[str, Any]) -> ModelInfo:
        model_id = str(item.get("id"))
        meta: dict[str, Any] = item["meta"] if isinstance(item.get("meta"), dict) else {}
        context = item.get("max_model_len") or item.get("context_length") or \
            meta.get("n_ctx_train")
        details = {k: v for k, v in item.items()
                   if k not in ("id", "object", "meta") and v not in (None, [], {})}
        return ModelInfo(id=model_id, name=model_id, provider=self.name,
                         context_length=context if isinstance(context, int) else None,
                         parameter_count=meta.get("n_params"), size_bytes=meta.get("size"),
                         details=details)

    async def _openai_models(self) -> list[ModelInfo]:
        data = await self.http.request_json("GET", "/models")
        items = data.get("data") if isinstance(data, dict) else data
        return [self._model_info(item) for item in items or [] if isinstance(item, dict)]

    async def list_models(self) -> list[ModelInfo]:
        """The models of ``GET /models``."""
        return await self._openai_models()

    async def health(self) -> HealthStatus:
        """Healthy when ``GET /models`` answers (or ``/health`` at the root, if /models 404s)."""
        start = time.perf_counter()
        count: int | None = None
        try:
            try:
                count = len(await self._openai_models())
            except ModelNotFoundError:
                url = urlsplit(self.base_url)
                await self.http.request_json("GET", f"{url.scheme}://{url.netloc}/health")
        except ProviderError as err:
            return HealthStatus(provider=self.name, healthy=False, detail=str(err))
        return HealthStatus(provider=self.name, healthy=True, model_count=count,
                            latency_ms=(time.perf_counter() - start) * 1000,
                            detail=mask_url(self.base_url))
