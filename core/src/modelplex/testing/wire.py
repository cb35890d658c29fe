"""Bring your own wire: how the test upstream writes one API's answers.

A :class:`Wire` says where an API's chat requests arrive (its ``paths``, which may hold the
model, as in ``/v1beta/models/{model}:streamGenerateContent``) and how an answer is written on
it: each streamed piece, the end of the stream, an in-stream error, an error body and a whole
(non-streaming) answer. :class:`~modelplex.testing.FaultyUpstream` does the rest the same way
for every wire: faults (stalls, resets, cut streams, malformed and oversized lines, statuses),
scripts, unknown models, ``max_tokens`` cuts and request recording. The built-in wires
(:mod:`modelplex.testing.wires`: ``openai``, ``ollama``, ``anthropic``, ``tgi``) are
instances of it; a new one is a subclass of about forty lines (docs/writing-a-provider.md
shows a Gemini-style wire: SSE without ``[DONE]``, the model in the path).

What a subclass sets and writes (the rest has defaults):

``name``, ``paths``, ``framing``, ``stream_default``, ``finish_words``, ``stop_field``
    class attributes (see :class:`Wire`).
``piece(answer, index)``, ``end(answer)``, ``whole(answer)``
    the bytes of one streamed piece, the bytes that end a stream, the JSON of a whole answer.
``error_event(answer, message)``, ``error_body(status, message)``, ``start(answer)``,
``max_tokens(body)``, ``model_of(body)``, ``models(names)``, ``expected_usage(reply)``
    defaults: ``{"error": {"message": ...}}`` as an event and as a body, nothing before the
    first piece, the usual spellings of the token limit, the body's ``model``, an
    OpenAI-style listing (served at ``models_path`` if set), the reply's token counts.

``answer`` is an :class:`Answer`: the pieces, tool calls, finish reason and token counts of
the one answer being written, from the scripted :class:`Reply`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

__all__ = ["PIECE", "Answer", "Reply", "Wire", "find_max_tokens"]

PIECE = "tok "
"""The text of each streamed piece of a normal answer."""

#: The message of an in-stream error when the :class:`Reply` sets none.
IN_STREAM_ERROR = "the model crashed"

_STATUS_MESSAGES = {400: "invalid request", 401: "invalid API key", 403: "forbidden",
                    404: "model not found", 429: "rate limit exceeded", 500: "internal error",
                    503: "server busy, please try again.", 529: "Overloaded"}


@attrs.define
class Reply:
    """One scripted answer: text, tool calls, a fault, and how they are sent.

    ``Reply("The sum is 3.")`` streams that text in three pieces;
    ``Reply(tool_calls=[{"name": "add", "arguments": {"a": 1, "b": 2}}])`` asks for a tool
    call; ``Reply(fault="429")`` answers with that fault.

    Attributes:
        content: the answer's text, streamed in ``pieces`` parts (3 when ``pieces`` is not
            set).
        tool_calls: ``{"name", "arguments", "id"?}`` dicts (``arguments`` as a dict, or as
            the exact text to send), in the wire's own shape: OpenAI's streamed name then
            arguments in two parts, Ollama's whole calls in one chunk, Anthropic's
            ``tool_use`` blocks.
        pieces: the streamed text pieces, or how many pieces to cut ``content`` into
            (default without ``content``: the upstream's ``chunks`` times :data:`PIECE`).
        finish: the modelplex finish reason; the wire sends its own word for it
            (``length`` is ``max_tokens`` on the Anthropic wire). Default: ``tool_calls``
            with tool calls, else ``stop``.
        prompt_tokens / completion_tokens: the usage sent (default: 3 / the piece count).
        usage: more fields merged into the wire's usage object, in the wire's own shape
            (OpenAI: ``{"prompt_tokens_details": {"cached_tokens": 2}}``; Anthropic:
            ``{"cache_read_input_tokens": 2}``, sent in ``message_start``).
        delay: seconds between pieces.
        fault: a fault to apply to this answer (see the module docs), default ``"ok"``.
        message: for a status fault, the error message in the body (e.g. one that echoes
            the API key, as some servers do); for ``error_event``, the in-stream error's
            message.
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] = attrs.Factory(list)
    pieces: list[str] | int | None = None
    finish: str | None = None
    prompt_tokens: int = 3
    completion_tokens: int | None = None
    delay: float = 0.0
    fault: str = "ok"
    message: str | None = None
    usage: dict[str, Any] = attrs.Factory(dict)

    def texts(self, chunks: int) -> list[str]:
        """The streamed text pieces (``chunks``: the upstream's default piece count)."""
        if isinstance(self.pieces, list):
            return self.pieces
        if self.content is not None:
            return _split(self.content, self.pieces or 3)
        if self.tool_calls:
            return []
        return [PIECE] * (self.pieces if self.pieces is not None else chunks)


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(pieces, 1)))
    return [text[i:i + size] for i in range(0, len(text), size)]


def find_max_tokens(body: Any) -> int | None:
    """The answer-length limit a request asks for, in any built-in wire's spelling."""
    if not isinstance(body, dict):
        return None
    for key in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        if isinstance(body.get(key), int):
            return int(body[key])
    parameters = body.get("parameters")  # TGI's native API
    if isinstance(parameters, dict) and isinstance(parameters.get("max_new_tokens"), int):
        return int(parameters["max_new_tokens"])
    options = body.get("options")
    if isinstance(options, dict) and isinstance(options.get("num_predict"), int):
        return int(options["num_predict"])
    return None


class Answer:
    """The one answer a wire is writing: built from a :class:`Reply`, cut by ``max_tokens``.

    Attributes:
        pieces: the streamed text pieces (``text`` is them joined).
        calls: the tool calls, each ``{"name", "arguments", "id"}`` (ids filled in).
        finish: the modelplex finish reason (``stop``, ``length``, ``tool_calls``, ...);
            :meth:`Wire.finish_word` gives the wire's own word for it.
        prompt_tokens / completion_tokens: the usage to report.
        usage: more usage fields, in the wire's own shape (:attr:`Reply.usage`).
        model: the model asked for (from the body or the path), or ``None``.
        message: the message the reply scripted for an error (``None``: the wire's own).
    """

    def __init__(self, reply: Reply | None = None, chunks: int = 5,
                 model: str | None = None) -> None:
        reply = reply or Reply()
        self.pieces = reply.texts(chunks)
        self.calls = [{**call, "id": call.get("id") or f"call_{i}"}
                      for i, call in enumerate(reply.tool_calls)]
        self.finish = reply.finish or ("tool_calls" if self.calls else "stop")
        self.prompt_tokens = reply.prompt_tokens
        self.completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                                  else len(self.pieces))
        self.model = model
        self.message = reply.message
        self.usage: dict[str, Any] = dict(reply.usage)

    @property
    def chunks(self) -> int:
        """How many pieces are streamed."""
        return len(self.pieces)

    @property
    def text(self) -> str:
        """The whole answer's text."""
        return "".join(self.pieces)

    def piece_text(self, index: int) -> str:
        """The text of piece ``index`` (:data:`PIECE` past the scripted ones)."""
        return self.pieces[index] if index < len(self.pieces) else PIECE

    def cut(self, limit: int) -> None:
        """Answer only ``limit`` pieces, ended by the token limit."""
        if limit < self.chunks:
            self.pieces = self.pieces[:limit]
            self.completion_tokens = limit
            self.finish = "length"


def arguments_text(call: Mapping[str, Any]) -> str:
    """A tool call's arguments as the JSON text a wire sends (text is sent as it is)."""
    args = call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def arguments_object(call: Mapping[str, Any]) -> Any:
    """A tool call's arguments as an object, for a wire that sends one."""
    args = call.get("arguments", {})
    if not isinstance(args, str):
        return args
    try:
        return json.loads(args)
    except (ValueError, RecursionError):
        return args


class Wire:
    """How the test upstream speaks one API. Subclass it for a wire of your own.

    Class attributes:
        name: the wire's name (``ConformanceBase.wire`` and ``FaultyUpstream(routes=...)``
            accept it for the built-in wires; pass the instance for your own).
        paths: the chat paths, each mapped to whether it streams: ``True`` (always),
            ``False`` (a whole answer) or ``None`` (the body's ``stream`` field says, else
            ``stream_default``). A path may hold ``{model}``: the model is then read from
            the path instead of the body.
        stream_default: whether a request without ``stream`` streams (Ollama's do).
        framing: ``"sse"`` (``data: ...`` events) or ``"ndjson"`` (one JSON per line): how
            :meth:`event` writes an object, and how the ``malformed`` and ``oversize``
            faults frame their lines.
        finish_words: the wire's own word for a modelplex finish reason (``{"stop":
            "STOP", "length": "MAX_TOKENS"}``); reasons not listed are sent as they are.
        stop_field: where the API takes stop sequences in a request body, dotted
            (``"stop"``, ``"options.stop"``, ``"generationConfig.stopSequences"``): the
            conformance suite checks the provider puts them there.
        default_error: the message of :meth:`error_event` when the reply sets none.
        models_path: where the API lists its models (``GET``), answered by :meth:`models`
            (``None``: the upstream's usual listing routes only).
    """

    name: ClassVar[str] = ""
    paths: ClassVar[Mapping[str, bool | None]] = {}
    stream_default: ClassVar[bool] = False
    framing: ClassVar[str] = "sse"
    finish_words: ClassVar[Mapping[str, str]] = {}
    stop_field: ClassVar[str] = "stop"
    default_error: ClassVar[str | None] = None
    models_path: ClassVar[str | None] = None

    # -- what a subclass writes ---------------------------------------------------------------
    def start(self, answer: Answer) -> list[bytes]:
        """What comes before the first piece (nothing by default)."""
        return []

    def piece(self, answer: Answer, index: int) -> bytes:
        """One streamed piece: the text ``answer.piece_text(index)``."""
        raise NotImplementedError(f"{type(self).__name__}.piece(answer, index)")

    def end(self, answer: Answer) -> list[bytes]:
        """What ends a stream: tool calls, finish reason, usage, the end marker if any."""
        raise NotImplementedError(f"{type(self).__name__}.end(answer)")

    def whole(self, answer: Answer) -> Any:
        """The JSON body of a whole (non-streaming) answer."""
        raise NotImplementedError(f"{type(self).__name__}.whole(answer)")

    def error_event(self, answer: Answer, message: str) -> bytes:
        """An error reported inside a stream, carrying ``message``."""
        return self.event({"error": {"message": message, "type": "server_error"}})

    def error_body(self, status: int, message: str) -> Any:
        """The JSON body of an error status."""
        return {"error": {"code": status, "message": message}}

    def max_tokens(self, body: Any) -> int | None:
        """The answer-length limit the request asks for (cuts the answer), or ``None``."""
        return find_max_tokens(body)

    def models(self, names: list[str]) -> Any:
        """The JSON body of the model listing at :attr:`models_path`."""
        return {"object": "list", "data": [{"id": name, "object": "model"} for name in names]}

    def model_of(self, body: Any) -> str | None:
        """The model a request body names (``None``: the server serves one model)."""
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    # -- helpers ------------------------------------------------------------------------------
    def finish_word(self, answer: Answer) -> str:
        """The wire's word for the answer's finish reason."""
        return self.finish_words.get(answer.finish, answer.finish)

    def event(self, obj: Any, name: str | None = None) -> bytes:
        """``obj`` framed as one event: ``event: NAME`` (if given) and ``data: JSON`` for SSE,
        a line of JSON for NDJSON."""
        data = json.dumps(obj).encode()
        if self.framing == "ndjson":
            return data + b"\n"
        head = f"event: {name}\n".encode() if name else b""
        return head + b"data: " + data + b"\n\n"

    def frame(self, raw: bytes) -> bytes:
        """Raw bytes framed as one event (the ``malformed`` fault sends text that is no JSON)."""
        return raw + b"\n" if self.framing == "ndjson" else b"data: " + raw + b"\n\n"

    @property
    def line_prefix(self) -> bytes:
        """What starts a line of data (the ``oversize`` fault's line starts with it)."""
        return b"" if self.framing == "ndjson" else b"data: "

    @property
    def content_type(self) -> str:
        """The streamed body's content type."""
        return "application/x-ndjson" if self.framing == "ndjson" else "text/event-stream"

    def error_message(self, status: int, message: str | None = None) -> str:
        """The message of an error status: ``message``, else a usual one for the status."""
        return message or _STATUS_MESSAGES.get(status, "error")

    def stream_error_message(self, answer: Answer) -> str:
        """The message of an in-stream error: the reply's, else :attr:`default_error`."""
        return answer.message or self.default_error or IN_STREAM_ERROR

    def expected_usage(self, reply: Reply) -> tuple[int, int] | None:
        """``(prompt_tokens, completion_tokens)`` a correct provider reports for a streamed
        ``reply`` (``None`` for a wire that reports no usage)."""
        answer = Answer(reply)
        return answer.prompt_tokens, answer.completion_tokens

    def stop_value(self, body: Any) -> Any:
        """What the request body holds at :attr:`stop_field` (``None`` if nothing)."""
        value = body
        for part in self.stop_field.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
