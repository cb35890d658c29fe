"""Text Generation Inference (TGI) through its native API.

Chat messages are rendered into a prompt with the served model's own chat template by the
server (``POST /chat_tokenize``, which also counts the prompt's tokens), then generated with
``/generate_stream`` (SSE, ``data:`` without a space, no ``[DONE]``: the last event carries
``generated_text`` and ``details``) or ``/generate``. ``template="none"`` sends the messages'
text as the prompt instead, for base models without a template.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal

import attrs
from pydantic import Field, SecretStr

from modelplex.chunks import ChatResponse, StreamChunk, Usage
from modelplex.errors import (
    AuthenticationError,
    ConfigurationError,
    ModelNotFoundError,
    ProviderError,
    ServerBusyError,
    ServerError,
    StreamError,
    redact,
)
from modelplex.finish import normalize_finish_reason
from modelplex.http import (
    Timeouts,
    error_from_status,
    loads_body,
    read_body,
)
from modelplex.http_provider import HttpProvider, secret_value
from modelplex.provider import Capabilities, ChatRequest, CommonOptions
from modelplex.streams import sse_json
from modelplex.types import ModelInfo
from modelplex_huggingface.__about__ import __version__
from modelplex_openai.wire import encode_message

__all__ = ["DEFAULT_TGI_URL", "TGIChunk", "TGIOptions", "TGIProvider", "TGIResponse", "noted"]

DEFAULT_TGI_URL = "http://127.0.0.1:8080"
#: Names a request may use for "whatever model the server serves".
_ANY_MODEL = ("", "tgi")

class TGIOptions(CommonOptions):
    """TGI's generation parameters (only those you set are sent).

    ``temperature`` 0 means greedy decoding (TGI itself wants a positive temperature, so 0 is
    sent as ``do_sample: false``); ``top_p`` 1 means no nucleus filtering and is not sent.
    """

    top_k: int | None = Field(default=None, gt=0, description="Sample from the k likeliest "
                                                              "tokens, > 0.")
    repetition_penalty: float | None = Field(default=None, gt=0.0,
                                             description="Penalty for repeated tokens, > 0 "
                                                         "(1 = none).")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0,
                                            description="Penalty by token frequency, -2 to 2.")
    typical_p: float | None = Field(default=None, gt=0.0, lt=1.0,
                                    description="Typical decoding mass, between 0 and 1.")
    do_sample: bool | None = Field(default=None, description="Sample instead of greedy.")
    truncate: int | None = Field(default=None, gt=0,
                                 description="Keep only the last N prompt tokens.")
    top_n_tokens: int | None = Field(default=None, gt=0, le=5,
                                     description="Also return the N likeliest tokens per "
                                                 "step (in details), 1 to 5.")
    watermark: bool | None = Field(default=None, description="Watermark the output.")
    adapter_id: str | None = Field(default=None, description="A LoRA adapter to use.")


@attrs.define(slots=True)
class TGIChunk(StreamChunk):
    """The final chunk of a TGI stream, with the token ids of the answer and TGI's
    ``details`` (``finish_reason``, ``generated_tokens``, ``seed``, ``input_length``)."""

    token_ids: list[int] | None = None
    details: dict[str, Any] | None = None


@attrs.define(slots=True)
class TGIResponse(ChatResponse):
    """A whole answer from ``/generate``, with its token ids and TGI's ``details``."""

    token_ids: list[int] = attrs.Factory(list)
    details: dict[str, Any] = attrs.Factory(dict)


def noted(text: str, note: str) -> str:
    """``text`` with ``note`` added before the "(retry after N s)" the core puts last."""
    head, sep, tail = text.rpartition(" (retry after ")
    return f"{head}{note}{sep}{tail}" if sep else text + note


class TGIProvider(HttpProvider):
    """A Text Generation Inference server (one model per server).

    Args:
        base_url: the server root; defaults to ``$TGI_URL``, else ``http://127.0.0.1:8080``.
        api_key: when the server runs with ``--api-key``; defaults to ``$api_key_env``.
        api_key_env: the variable holding the key (none by default).
        template: ``"server"`` renders messages with the model's chat template on the server;
            ``"none"`` joins their text (for base models).
        headers, default_model, timeouts, verify_tls: as for every HTTP provider.
        name, config_source: set for a named endpoint.
    """

    name: str = "tgi"
    #: "whichever model the server serves" (a TGI server runs one)
    default_model: str | None = "tgi"
    Options: ClassVar[type[CommonOptions]] = TGIOptions
    default_base_url: ClassVar[str] = DEFAULT_TGI_URL
    user_agent: ClassVar[str | None] = f"modelplex-huggingface/{__version__}"
    connect_hint: ClassVar[str | None] = (
        "No TGI server answers there: start one (text-generation-launcher or its Docker "
        "image) or set TGI_URL (or the endpoint's base_url) to where it runs")
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, embeddings=False, tools=False, vision=False, json_mode=True)

    def __init__(self, *, name: str | None = None, base_url: str | None = None,
                 api_key: str | SecretStr | None = None, api_key_env: str | None = None,
                 template: Literal["server", "none"] = "server",
                 headers: Mapping[str, str] | None = None, default_model: str | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 verify_tls: bool = True, config_source: str | None = None) -> None:
        if name is not None:
            self.name = name
        if template not in ("server", "none"):
            raise ConfigurationError(f"template must be 'server' or 'none' (got {template!r})")
        self.template = template
        self.config_source = config_source
        self.api_key_env = api_key_env
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env) or None
        self._has_key = bool(secret_value(api_key))
        url = base_url or (os.environ.get("TGI_URL") if name in (None, "tgi") else None)
        super().__init__(base_url=url, api_key=api_key, headers=headers, timeouts=timeouts,
                         verify_tls=verify_tls, default_model=default_model)
        self._served: str | None = None

    # -- errors -----------------------------------------------------------------------------
    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        err = error_from_status(status, body, headers, provider=self.name,
                                secrets=self.http.secrets)
        kind = body.get("error_type") if isinstance(body, dict) else None
        text = noted(str(err), f" ({kind})") if kind else str(err)
        if status == 401:
            where = f"${self.api_key_env}" if self.api_key_env else "api_key"
            hint = (f"check the key in {where}" if self._has_key else
                    "the server runs with --api-key: give the key as api_key or api_key_env")
            return AuthenticationError(f"{text}; {hint}", status_code=status, body=body,
                                       provider=self.name)
        if status == 429 or kind == "overloaded":
            return ServerBusyError(text, status_code=status, body=body,
                                   retry_after=getattr(err, "retry_after", None),
                                   provider=self.name)
        if status == 424:  # TGI's "generation" errors: the model failed on this request
            return ServerError(text, status_code=status, body=body, provider=self.name)
        err.args = (text,)
        return err

    def _stream_error(self, obj: Any) -> StreamError:
        message = obj.get("error") if isinstance(obj, dict) else obj
        kind = obj.get("error_type") if isinstance(obj, dict) else None
        if isinstance(message, dict):  # the Messages API shape, just in case
            message = message.get("message")
        err = StreamError(f"{self.name}: the server reported an error in its answer: "
                          f"{redact(str(message), *self.http.secrets)}"
                          + (f" ({kind})" if kind else ""), provider=self.name)
        err.error_type = kind  # type: ignore[attr-defined]
        if kind in ("validation", "template_error", "missing_template_variable"):
            err.retriable = False
        return err

    # -- requests ---------------------------------------------------------------------------
    async def _served_model(self) -> str:
        if self._served is None:
            info = await self.http.request_json("GET", "/info")
            self._served = str((info or {}).get("model_id") or "")
        return self._served

    async def _check_model(self, model: str) -> str:
        if model in _ANY_MODEL:
            return model or "tgi"
        served = await self._served_model()
        if model != served:
            raise ModelNotFoundError(
                f"{self.name}: the server at {self.base_url} serves {served!r}, not {model!r} "
                "(a TGI server runs one model; use its id, or 'tgi' for whichever it serves)",
                status_code=404, provider=self.name)
        return model

    async def _prompt(self, request: ChatRequest) -> tuple[str, int | None]:
        """The prompt text and its token count (when the server counted it)."""
        if self.template == "none":
            return "\n\n".join(m.content for m in request.messages), None
        payload = {"model": "tgi", "messages": [encode_message(m) for m in request.messages]}
        try:
            data = await self.http.request_json("POST", "/chat_tokenize", payload)
        except ModelNotFoundError as err:  # a 404 for the route: no model is named here
            raise ConfigurationError(
                f"{self.name}: the server at {self.http.display_url} has no /chat_tokenize "
                "(TGI before 2.0.4, or a server that speaks only TGI's generate API): give "
                "the endpoint template = \"none\" to send the messages' text as the prompt, or "
                "use the server's OpenAI-compatible /v1 route") from err
        if not isinstance(data, dict) or not isinstance(data.get("templated_text"), str):
            raise StreamError(f"{self.name}: /chat_tokenize gave no templated_text: "
                              f"{str(data)[:200]!r}", provider=self.name)
        tokens = data.get("tokenize_response")
        return data["templated_text"], len(tokens) if isinstance(tokens, list) else None

    def _parameters(self, request: ChatRequest) -> dict[str, Any]:
        options = request.options.set_values()
        params: dict[str, Any] = {"details": True}
        temperature = options.pop("temperature", None)
        if temperature == 0:
            params["do_sample"] = False
        elif temperature is not None:
            params["temperature"] = temperature
        top_p = options.pop("top_p", None)
        if top_p is not None and 0 < top_p < 1:
            params["top_p"] = top_p
        max_tokens = options.pop("max_tokens", None)
        if max_tokens is not None:
            params["max_new_tokens"] = max_tokens
        params.update(options)  # stop, seed, top_k, ... have TGI's names already
        fmt = request.response_format
        if fmt:
            schema = fmt.get("schema") if fmt.get("type") == "json_schema" else \
                {"type": "object"}
            params["grammar"] = {"type": "json", "value": schema}
        return params

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        model = await self._check_model(request.model)
        prompt, prompt_tokens = await self._prompt(request)
        body = {"inputs": prompt, "parameters": self._parameters(request)}
        http = self.http
        name = self.name
        ids: list[int] = []
        append = ids.append
        final: dict[str, Any] | None = None
        async with http.stream("POST", "/generate_stream", body) as resp:
            # the event with generated_text is the last; error objects raise
            events = sse_json(resp, provider=name, max_line_bytes=http.max_line_bytes,
                              done=None, require_end=False, error_events=(),
                              error=self._stream_error)
            async for _event, obj in events:
                try:
                    token = obj["token"]
                    append(token["id"])
                    if not token["special"] and token["text"]:
                        yield StreamChunk(token["text"])
                    if obj["generated_text"] is not None:
                        final = obj
                        break
                except (KeyError, TypeError):
                    raise StreamError(f"{name}: unexpected event in the stream: "
                                      f"{str(obj)[:200]!r}", provider=name) from None
        if final is None:
            raise events.cut_short()
        details = final.get("details") or {}
        usage = Usage(prompt_tokens=int(details.get("input_length") or prompt_tokens or 0),
                      completion_tokens=int(details.get("generated_tokens") or len(ids)))
        yield TGIChunk(finish_reason=normalize_finish_reason(details.get("finish_reason")),
                       usage=usage, model=model, token_ids=ids, details=details)

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        model = await self._check_model(request.model)
        prompt, prompt_tokens = await self._prompt(request)
        body = {"inputs": prompt, "parameters": self._parameters(request)}
        http = self.http
        async with http.stream("POST", "/generate", body) as resp:
            header = resp.headers.get("x-prompt-tokens")
            raw = await read_body(resp, http.max_body_bytes, provider=self.name)
        data = loads_body(raw, provider=self.name)
        if isinstance(data, list) and data:  # the compat route answers a one-item list
            data = data[0]
        if not isinstance(data, dict) or "generated_text" not in data:
            raise self._stream_error(data)
        details = data.get("details") or {}
        tokens = [t for t in details.get("tokens") or [] if isinstance(t, dict)]
        if header and header.isdigit():
            prompt_tokens = int(header)
        usage = Usage(prompt_tokens=prompt_tokens or 0,
                      completion_tokens=int(details.get("generated_tokens") or len(tokens)))
        return TGIResponse(content=str(data["generated_text"]), model=model, provider=self.name,
                           finish_reason=normalize_finish_reason(details.get("finish_reason")),
                           usage=usage, token_ids=[int(t["id"]) for t in tokens],
                           details=details)

    # -- models -----------------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        """The server's ``/info``: model id, limits, version."""
        data = await self.http.request_json("GET", "/info")
        return data if isinstance(data, dict) else {}

    async def list_models(self) -> list[ModelInfo]:
        """The one model the server serves, from ``/info``."""
        info = await self.info()
        model_id = str(info.get("model_id") or "tgi")
        self._served = model_id
        context = info.get("max_total_tokens")
        details = {k: v for k, v in info.items() if k != "model_id" and v is not None}
        return [ModelInfo(id=model_id, name=model_id, provider=self.name,
                          context_length=context if isinstance(context, int) else None,
                          capabilities=["completion"], details=details)]
