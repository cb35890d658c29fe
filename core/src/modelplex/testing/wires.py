"""The built-in wires of the test upstream: OpenAI SSE, Ollama NDJSON, Anthropic's named
events and Text Generation Inference's token stream, each a :class:`~modelplex.testing.wire.Wire`.

``WIRES`` maps their names to them; :func:`get_wire` takes a name or a wire of your own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from modelplex.testing.wire import Answer, Reply, Wire, arguments_object, arguments_text

__all__ = ["ANTHROPIC", "OLLAMA", "OPENAI", "TGI", "WIRES", "AnthropicWire", "OllamaWire",
           "OpenAIWire", "TGIWire", "get_wire"]


class OpenAIWire(Wire):
    """OpenAI's chat completions: SSE ``data:`` chunks, then a usage chunk and ``[DONE]``."""

    name = "openai"
    paths: ClassVar[Mapping[str, bool | None]] = {"/v1/chat/completions": None,
                                                  "/chat/completions": None}
    default_error = "the model crashed"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self.event({"id": "chatcmpl-fault", "object": "chat.completion.chunk",
                           "created": 1, "model": "fault", "choices": [
                               {"index": 0, "delta": delta, "finish_reason": finish}]})

    def start(self, answer: Answer) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def piece(self, answer: Answer, index: int) -> bytes:
        return self._chunk({"content": answer.piece_text(index)})

    def end(self, answer: Answer) -> list[bytes]:
        n, prompt = answer.completion_tokens, answer.prompt_tokens
        usage = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
                 "model": "fault", "choices": [],
                 "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                           "total_tokens": n + prompt, **answer.usage}}
        calls = []
        for i, call in enumerate(answer.calls):  # id and name, then the arguments in 2 parts
            args = arguments_text(call)
            half = len(args) // 2
            calls.append(self._chunk({"tool_calls": [{
                "index": i, "id": call["id"], "type": "function",
                "function": {"name": call["name"], "arguments": args[:half]}}]}))
            calls.append(self._chunk({"tool_calls": [{
                "index": i, "function": {"arguments": args[half:]}}]}))
        return [*calls, self._chunk({}, self.finish_word(answer)), self.event(usage),
                b"data: [DONE]\n\n"]

    def error_body(self, status: int, message: str) -> Any:
        code = {404: "model_not_found", 401: "invalid_api_key"}.get(status)
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": code}}

    def whole(self, answer: Answer) -> Any:
        n, prompt = answer.completion_tokens, answer.prompt_tokens
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.calls:
            message["content"] = answer.text or None
            message["tool_calls"] = [{"id": call["id"], "type": "function", "function": {
                "name": call["name"], "arguments": arguments_text(call)}}
                for call in answer.calls]
        return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1,
                "model": "fault", "choices": [{"index": 0, "message": message,
                                               "finish_reason": self.finish_word(answer)}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                          "total_tokens": n + prompt, **answer.usage}}


class OllamaWire(Wire):
    """Ollama's ``/api/chat``: a JSON object per line, the last with ``"done": true``."""

    name = "ollama"
    paths: ClassVar[Mapping[str, bool | None]] = {"/api/chat": None}
    stream_default = True
    framing = "ndjson"
    stop_field = "options.stop"
    default_error = "an error was encountered while running the model"

    def _line(self, message: dict[str, Any], done: bool = False) -> dict[str, Any]:
        return {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", **message}, "done": done}

    def _calls(self, answer: Answer) -> list[dict[str, Any]]:
        """Ollama's calls carry their arguments as an object (text is sent as it is given)."""
        return [{"id": call["id"], "function": {
            "index": i, "name": call["name"], "arguments": call.get("arguments", {})}}
            for i, call in enumerate(answer.calls)]

    def _counts(self, answer: Answer) -> dict[str, Any]:
        return {"done_reason": self.finish_word(answer),
                "prompt_eval_count": answer.prompt_tokens,
                "eval_count": answer.completion_tokens}

    def piece(self, answer: Answer, index: int) -> bytes:
        return self.event(self._line({"content": answer.piece_text(index)}))

    def end(self, answer: Answer) -> list[bytes]:
        calls = [self.event(self._line({"content": "", "tool_calls": self._calls(answer)}))
                 ] if answer.calls else []  # every call whole, in one chunk before the last
        last = {**self._line({"content": ""}, done=True), **self._counts(answer),
                "total_duration": 1000, "eval_duration": 500}
        return [*calls, self.event(last)]

    def error_event(self, answer: Answer, message: str) -> bytes:
        return self.event({"error": message})

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def whole(self, answer: Answer) -> Any:
        message: dict[str, Any] = {"content": answer.text}
        if answer.calls:
            message["tool_calls"] = self._calls(answer)
        return {**self._line(message, done=True), **self._counts(answer)}


class AnthropicWire(Wire):
    """Anthropic's Messages API: named SSE events from ``message_start`` to ``message_stop``."""

    name = "anthropic"
    paths: ClassVar[Mapping[str, bool | None]] = {"/v1/messages": None}
    finish_words: ClassVar[Mapping[str, str]] = {
        "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
    stop_field = "stop_sequences"
    default_error = "Overloaded"

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        return self.event({"type": name, **data}, name)

    def start(self, answer: Answer) -> list[bytes]:
        return [self._event("message_start", {"message": {
            "id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
            "content": [], "stop_reason": None,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1,
                      **answer.usage}}}),
            self._event("content_block_start", {
                "index": 0, "content_block": {"type": "text", "text": ""}})]

    def piece(self, answer: Answer, index: int) -> bytes:
        return self._event("content_block_delta", {
            "index": 0, "delta": {"type": "text_delta", "text": answer.piece_text(index)}})

    def end(self, answer: Answer) -> list[bytes]:
        events = [self._event("content_block_stop", {"index": 0})]
        for i, call in enumerate(answer.calls, start=1):  # input in two input_json_delta parts
            args = arguments_text(call)
            half = len(args) // 2
            events.append(self._event("content_block_start", {"index": i, "content_block": {
                "type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}}))
            for part in (args[:half], args[half:]):
                events.append(self._event("content_block_delta", {
                    "index": i, "delta": {"type": "input_json_delta", "partial_json": part}}))
            events.append(self._event("content_block_stop", {"index": i}))
        return [*events, self._event("message_delta", {
            "delta": {"stop_reason": self.finish_word(answer)},
            "usage": {"output_tokens": answer.completion_tokens}}),
            self._event("message_stop", {})]

    def error_event(self, answer: Answer, message: str) -> bytes:
        return self._event("error", {"error": {"type": "overloaded_error", "message": message}})

    def error_body(self, status: int, message: str) -> Any:
        kind = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def whole(self, answer: Answer) -> Any:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] \
            if answer.text else []
        blocks += [{"type": "tool_use", "id": call["id"], "name": call["name"],
                    "input": arguments_object(call)} for call in answer.calls]
        return {"id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                "content": blocks, "stop_reason": self.finish_word(answer),
                "usage": {"input_tokens": answer.prompt_tokens,
                          "output_tokens": answer.completion_tokens, **answer.usage}}


class TGIWire(Wire):
    """Text Generation Inference's native API: one token per event, ``generated_text`` last.

    A TGI server serves one model and takes no model name (:meth:`model_of` is ``None``).
    """

    name = "tgi"
    paths: ClassVar[Mapping[str, bool | None]] = {"/generate_stream": True, "/generate": False}
    finish_words: ClassVar[Mapping[str, str]] = {"stop": "eos_token"}
    stop_field = "parameters.stop"
    default_error = "out of memory"

    @staticmethod
    def _token(index: int, text: str, *, special: bool = False, generated: str | None = None,
               details: dict[str, Any] | None = None) -> bytes:
        body = {"index": index, "token": {"id": 100 + index, "text": text, "logprob": -0.5,
                                          "special": special},
                "generated_text": generated, "details": details}
        return b"data:" + json.dumps(body).encode() + b"\n\n"  # TGI writes no space after data:

    def model_of(self, body: Any) -> str | None:
        return None

    def expected_usage(self, reply: Reply) -> tuple[int, int] | None:
        answer = Answer(reply)
        return answer.prompt_tokens, self._generated(answer)

    def _generated(self, answer: Answer) -> int:
        n = answer.completion_tokens
        return n + 1 if answer.finish == "stop" else n  # the end-of-sequence token counts

    def piece(self, answer: Answer, index: int) -> bytes:
        return self._token(index, answer.piece_text(index))

    def end(self, answer: Answer) -> list[bytes]:  # the end-of-sequence token ends it
        return [self._token(answer.chunks, "</s>", special=True, generated=answer.text,
                            details={"finish_reason": self.finish_word(answer),
                                     "generated_tokens": self._generated(answer), "seed": None,
                                     "input_length": answer.prompt_tokens})]

    def error_event(self, answer: Answer, message: str) -> bytes:
        return b"data:" + json.dumps({
            "error": f"Request failed during generation: Server error: {message}",
            "error_type": "generation"}, separators=(",", ":")).encode() + b"\n\n"

    def error_body(self, status: int, message: str) -> Any:
        kind = {422: "validation", 424: "generation", 429: "overloaded"}.get(
            status, "incomplete_generation")
        return {"error": message, "error_type": kind}

    def whole(self, answer: Answer) -> Any:
        return {"generated_text": answer.text, "details": {
            "finish_reason": self.finish_word(answer),
            "generated_tokens": self._generated(answer), "seed": None, "prefill": [],
            "tokens": [{"id": 100 + i, "text": piece, "logprob": -0.5, "special": False}
                       for i, piece in enumerate(answer.pieces)]}}


OPENAI = OpenAIWire()
OLLAMA = OllamaWire()
ANTHROPIC = AnthropicWire()
TGI = TGIWire()

#: The built-in wires by name.
WIRES: dict[str, Wire] = {wire.name: wire for wire in (OPENAI, OLLAMA, ANTHROPIC, TGI)}


def get_wire(wire: str | Wire) -> Wire:
    """The wire named ``wire`` (a built-in), or ``wire`` itself if it is a :class:`Wire`."""
    if isinstance(wire, Wire):
        return wire
    try:
        return WIRES[wire]
    except KeyError:
        raise ValueError(f"no built-in wire named {wire!r}: use one of {sorted(WIRES)}, or "
                         "pass a Wire instance of your own (modelplex.testing.Wire)") from None
