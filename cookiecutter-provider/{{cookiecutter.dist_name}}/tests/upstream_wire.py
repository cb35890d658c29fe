{%- set cls = cookiecutter.class_prefix -%}
"""How the core's test upstream speaks {{ cookiecutter.display_name }}'s API: a
:class:`modelplex.testing.Wire` of its own (SSE without an end marker, the model in the path).

The conformance suites (tests/test_conformance.py) then run every check on it: faults,
statuses, scripts and recording work as on the built-in wires. Change it where the real API
differs (field names, finish words, the error body).
"""

from __future__ import annotations

from typing import Any, ClassVar

from modelplex.testing import Answer, Wire

#: The API's status word for an HTTP status, in its error bodies.
_STATUS_WORDS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE"}


class {{ cls }}Wire(Wire):
    """SSE events without ``[DONE]``: the event with a ``finishReason`` is the last."""

    name = "{{ cookiecutter.provider_name }}"
    paths: ClassVar[dict[str, bool | None]] = {
        "/v1beta/models/{model}:streamGenerateContent": True,
        "/v1beta/models/{model}:generateContent": False}
    models_path = "/v1beta/models"
    finish_words: ClassVar[dict[str, str]] = {"stop": "STOP", "length": "MAX_TOKENS"}
    stop_field = "generationConfig.stopSequences"

    def max_tokens(self, body: Any) -> int | None:
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        return limit if isinstance(limit, int) else None

    def _response(self, text: str, answer: Answer | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]},
                                     "index": 0}
        response: dict[str, Any] = {"candidates": [candidate], "modelVersion": "test-001"}
        if answer is not None:  # the last event: the finish reason and the usage
            candidate["finishReason"] = self.finish_word(answer)
            response["usageMetadata"] = {
                "promptTokenCount": answer.prompt_tokens,
                "candidatesTokenCount": answer.completion_tokens,
                "totalTokenCount": answer.prompt_tokens + answer.completion_tokens}
        return response

    def piece(self, answer: Answer, index: int) -> bytes:
        return self.event(self._response(answer.piece_text(index)))

    def end(self, answer: Answer) -> list[bytes]:
        return [self.event(self._response("", answer))]

    def whole(self, answer: Answer) -> Any:
        return self._response(answer.text, answer)

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message,
                          "status": _STATUS_WORDS.get(status, "UNKNOWN")}}

    def models(self, names: list[str]) -> Any:
        return {"models": [{"name": f"models/{name}", "displayName": name} for name in names]}
