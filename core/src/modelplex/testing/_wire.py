"""How the test upstream writes each wire format: OpenAI-style SSE, Ollama NDJSON, Anthropic's
named SSE events and TGI's token stream, with each wire's own finish words, tool calls and
error bodies.

Private to :mod:`modelplex.testing.upstream`, which re-exports :data:`PIECE` and
:class:`Reply`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

__all__ = ["PIECE", "Reply", "Wire", "find_max_tokens"]

PIECE = "tok "
"""The text of each streamed piece of a normal answer."""

#: The wire's own word for each modelplex finish reason.
_NATIVE_FINISH = {
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"},
    "tgi": {"stop": "eos_token"},
}


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
        delay: seconds between pieces.
        fault: a fault to apply to this answer (see the module docs), default ``"ok"``.
        message: for a status fault, the error message in the body (e.g. one that echoes
            the API key, as some servers do).
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


def _object(arguments: Any) -> Any:
    """Arguments as an object for a wire that sends one (text that is no JSON as it is)."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments


def _arguments(call: dict[str, Any]) -> str:
    args = call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def find_max_tokens(body: Any) -> int | None:
    """The answer-length limit a request asks for, in any wire's spelling."""
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


def _openai_event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
            "model": "fault", "choices": [{"index": 0, "delta": delta,
                                           "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _ollama_line(content: str, done: bool = False, n: int = 0, reason: str = "stop",
                 prompt: int = 3) -> bytes:
    body: dict[str, Any] = {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                            "message": {"role": "assistant", "content": content}, "done": done}
    if done:
        body.update(done_reason=reason, prompt_eval_count=prompt, eval_count=n,
                    total_duration=1000, eval_duration=500)
    return json.dumps(body).encode() + b"\n"


def _ollama_calls_line(calls: list[dict[str, Any]]) -> bytes:
    """Ollama sends every call whole, in one chunk before the last."""
    body = {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "", "tool_calls": calls},
            "done": False}
    return json.dumps(body).encode() + b"\n"


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _tgi_event(index: int, text: str, *, special: bool = False,
               generated: str | None = None, details: dict[str, Any] | None = None) -> bytes:
    body = {"index": index, "token": {"id": 100 + index, "text": text, "logprob": -0.5,
                                      "special": special},
            "generated_text": generated, "details": details}
    return b"data:" + json.dumps(body).encode() + b"\n\n"  # TGI writes no space after data:


class Wire:
    """How one provider family frames an answer."""

    def __init__(self, kind: str, chunks: int, reply: Reply | None = None) -> None:
        self.kind = kind
        reply = reply or Reply()
        self.pieces = reply.texts(chunks)
        self.chunks = len(self.pieces)
        self.calls = [{**call, "id": call.get("id") or f"call_{i}"}
                      for i, call in enumerate(reply.tool_calls)]
        finish = reply.finish or ("tool_calls" if self.calls else "stop")
        self.finish = _NATIVE_FINISH.get(kind, {}).get(finish, finish)
        self.prompt_tokens = reply.prompt_tokens
        self.completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                                  else self.chunks)

    def cut(self, limit: int) -> None:
        """Answer only ``limit`` pieces, ended by the token limit."""
        if limit < self.chunks:
            self.pieces = self.pieces[:limit]
            self.chunks = self.completion_tokens = limit
            self.finish = _NATIVE_FINISH.get(self.kind, {}).get("length", "length")

    @property
    def content_type(self) -> str:
        return "application/x-ndjson" if self.kind == "ollama" else "text/event-stream"

    def start(self) -> list[bytes]:
        if self.kind == "openai":
            return [_openai_event({"role": "assistant", "content": ""})]
        if self.kind == "anthropic":
            return [_anthropic_event("message_start", {"type": "message_start", "message": {
                "id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                "content": [], "stop_reason": None,
                "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1}}}),
                    _anthropic_event("content_block_start", {
                        "type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})]
        return []

    def piece(self, i: int = 0) -> bytes:
        text = self.pieces[i] if i < len(self.pieces) else PIECE
        if self.kind == "openai":
            return _openai_event({"content": text})
        if self.kind == "anthropic":
            return _anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}})
        if self.kind == "tgi":
            return _tgi_event(i, text)
        return _ollama_line(text)

    def end(self) -> list[bytes]:
        n, prompt = self.completion_tokens, self.prompt_tokens
        if self.kind == "openai":
            usage = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
                     "model": "fault", "choices": [],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                               "total_tokens": n + prompt}}
            return [*self._openai_calls(), _openai_event({}, self.finish),
                    b"data: " + json.dumps(usage).encode() + b"\n\n", b"data: [DONE]\n\n"]
        if self.kind == "anthropic":
            return [_anthropic_event("content_block_stop", {"type": "content_block_stop",
                                                            "index": 0}),
                    *self._anthropic_calls(),
                    _anthropic_event("message_delta", {
                        "type": "message_delta", "delta": {"stop_reason": self.finish},
                        "usage": {"output_tokens": n}}),
                    _anthropic_event("message_stop", {"type": "message_stop"})]
        if self.kind == "tgi":  # the end-of-sequence token carries the text and details
            eos = self.finish == "eos_token"
            return [_tgi_event(self.chunks, "</s>", special=True,
                               generated="".join(self.pieces), details={
                                   "finish_reason": self.finish,
                                   "generated_tokens": n + 1 if eos else n, "seed": None,
                                   "input_length": prompt})]
        calls = [_ollama_calls_line(self._ollama_calls())] if self.calls else []
        return [*calls, _ollama_line("", done=True, n=n, reason=self.finish, prompt=prompt)]

    def _openai_calls(self) -> list[bytes]:
        """Each call's id and name, then its arguments in two parts, as OpenAI streams them."""
        events = []
        for i, call in enumerate(self.calls):
            args = _arguments(call)
            half = len(args) // 2
            events.append(_openai_event({"tool_calls": [{
                "index": i, "id": call["id"], "type": "function",
                "function": {"name": call["name"], "arguments": args[:half]}}]}))
            events.append(_openai_event({"tool_calls": [{
                "index": i, "function": {"arguments": args[half:]}}]}))
        return events

    def _ollama_calls(self) -> list[dict[str, Any]]:
        """Ollama's calls carry their arguments as an object (text is sent as it is given)."""
        return [{"id": call["id"], "function": {
            "index": i, "name": call["name"], "arguments": call.get("arguments", {})}}
            for i, call in enumerate(self.calls)]

    def _anthropic_calls(self) -> list[bytes]:
        """A ``tool_use`` block per call, its input in two ``input_json_delta`` parts."""
        events = []
        for i, call in enumerate(self.calls, start=1):
            args = _arguments(call)
            half = len(args) // 2
            events.append(_anthropic_event("content_block_start", {
                "type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}}))
            for part in (args[:half], args[half:]):
                events.append(_anthropic_event("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": part}}))
            events.append(_anthropic_event("content_block_stop", {
                "type": "content_block_stop", "index": i}))
        return events

    def error_event(self) -> bytes:
        if self.kind == "openai":
            return b'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n'
        if self.kind == "anthropic":
            return _anthropic_event("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
        if self.kind == "tgi":
            return (b'data:{"error":"Request failed during generation: Server error: '
                    b'out of memory","error_type":"generation"}\n\n')
        return b'{"error": "an error was encountered while running the model"}\n'

    def error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        message = message or {
            400: "invalid request", 401: "invalid API key", 403: "forbidden",
            404: "model not found", 429: "rate limit exceeded", 500: "internal error",
            503: "server busy, please try again.", 529: "Overloaded"}.get(status, "error")
        if self.kind == "ollama":
            return {"error": message}
        if self.kind == "tgi":
            kind = {422: "validation", 424: "generation", 429: "overloaded"}.get(
                status, "incomplete_generation")
            return {"error": message, "error_type": kind}
        if self.kind == "anthropic":
            kind = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                    529: "overloaded_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": message}}
        code = {404: "model_not_found", 401: "invalid_api_key"}.get(status)
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": code}}

    def whole(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        n, prompt = self.completion_tokens, self.prompt_tokens
        if self.kind == "tgi":
            eos = self.finish == "eos_token"
            return {"generated_text": text, "details": {
                "finish_reason": self.finish, "generated_tokens": n + 1 if eos else n,
                "seed": None, "prefill": [],
                "tokens": [{"id": 100 + i, "text": piece, "logprob": -0.5, "special": False}
                           for i, piece in enumerate(self.pieces)]}}
        if self.kind == "ollama":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.calls:
                message["tool_calls"] = self._ollama_calls()
            return {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                    "message": message, "done": True,
                    "done_reason": self.finish, "prompt_eval_count": prompt, "eval_count": n}
        if self.kind == "anthropic":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            blocks += [{"type": "tool_use", "id": call["id"], "name": call["name"],
                        "input": _object(call.get("arguments", {}))} for call in self.calls]
            return {"id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                    "content": blocks, "stop_reason": self.finish,
                    "usage": {"input_tokens": prompt, "output_tokens": n}}
        answer: dict[str, Any] = {"role": "assistant", "content": text}
        if self.calls:
            answer["content"] = text or None
            answer["tool_calls"] = [{"id": call["id"], "type": "function", "function": {
                "name": call["name"], "arguments": _arguments(call)}} for call in self.calls]
        return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1,
                "model": "fault", "choices": [{"index": 0, "message": answer,
                                               "finish_reason": self.finish}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                          "total_tokens": n + prompt}}


