"""The OpenAPI 3.1 description of the server, served at ``/openapi.json``.

Request bodies are the JSON schemas of the pydantic models that validate them
(:mod:`modelplex_server.schemas`), so the description cannot drift from the validation.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from modelplex.http import dumps
from modelplex.types import ModelInfo
from modelplex_server.__about__ import __version__
from modelplex_server.anthropic_api import CountTokensRequest, MessagesRequest
from modelplex_server.batches_api import BatchCreate
from modelplex_server.completions_api import CompletionRequest
from modelplex_server.keys import KeyCreate
from modelplex_server.responses_items import ResponsesRequest
from modelplex_server.schemas import (
    ChatCompletionRequest,
    ConversationCreate,
    ConversationUpdate,
    EmbeddingRequest,
    RestChatRequest,
)

__all__ = ["ROUTES", "build_openapi", "openapi_handler"]

_JSON = "application/json"
_SSE = "text/event-stream"

#: (method, path, tag, summary, request body model, response description, streams)
ROUTES: list[tuple[str, str, str, str, type[BaseModel] | None, str, bool]] = [
    ("post", "/v1/chat/completions", "OpenAI", "Chat completion, streamed (SSE) with "
     "`stream: true`; tools, response_format, stream_options.include_usage.",
     ChatCompletionRequest, "A chat.completion object, or chat.completion.chunk events "
     "ending with `data: [DONE]`.", True),
    ("get", "/v1/models", "OpenAI", "The model ids: named models, then provider:model for "
     "every provider's models.", None, "`{object: list, data: [{id, object, created, "
     "owned_by}]}`", False),
    ("get", "/v1/models/{model}", "OpenAI", "One model id.", None, "A model object.", False),
    ("post", "/v1/embeddings", "OpenAI", "Embeddings (encoding_format float or base64).",
     EmbeddingRequest, "`{object: list, data: [{object: embedding, index, embedding}], "
     "model, usage}`", False),
    ("post", "/v1/responses", "OpenAI", "Responses API: input (a string or message, "
     "function_call and function_call_output items), instructions, function tools, "
     "text.format, max_output_tokens; `stream: true` gives the typed events (response.created "
     "... response.completed); `store` keeps it for previous_response_id.", ResponsesRequest,
     "A response object, or its events.", True),
    ("get", "/v1/responses/{id}", "OpenAI", "A stored response.", None, "A response object.",
     False),
    ("delete", "/v1/responses/{id}", "OpenAI", "Forget a stored response.", None,
     "`{id, object: response.deleted, deleted: true}`", False),
    ("get", "/v1/responses/{id}/input_items", "OpenAI", "The input items of a stored "
     "response (`order`, `after`, `limit`).", None, "`{object: list, data: [items], "
     "first_id, last_id, has_more}`", False),
    ("post", "/v1/completions", "OpenAI", "Legacy completions: one prompt answered by the "
     "model's chat; streamed (SSE) with `stream: true`, stream_options.include_usage.",
     CompletionRequest, "A text_completion object, or text_completion chunks ending with "
     "`data: [DONE]`.", True),
    ("post", "/v1/files", "OpenAI", "Upload a batch's input file: a multipart form with "
     "`purpose=batch` and `file` (JSONL, at most [server] max_file_bytes).", None,
     "A file object.", False),
    ("get", "/v1/files", "OpenAI", "The caller's files (`after`, `limit`, `order`, "
     "`purpose`).", None, "`{object: list, data: [files], first_id, last_id, has_more}`",
     False),
    ("get", "/v1/files/{file_id}", "OpenAI", "One file.", None, "A file object.", False),
    ("delete", "/v1/files/{file_id}", "OpenAI", "Delete a file.", None,
     "`{id, object: file, deleted: true}`", False),
    ("get", "/v1/files/{file_id}/content", "OpenAI", "A file's bytes: an upload, or a "
     "batch's output or error lines.", None, "JSONL.", False),
    ("post", "/v1/batches", "OpenAI", "Run an uploaded file's requests in the background "
     "(endpoint /v1/chat/completions, /v1/embeddings or /v1/completions; completion_window "
     "24h).", BatchCreate,
     "A batch object (status validating).", False),
    ("get", "/v1/batches", "OpenAI", "The caller's batches, newest first (`after`, "
     "`limit`).", None, "`{object: list, data: [batches], first_id, last_id, has_more}`",
     False),
    ("get", "/v1/batches/{batch_id}", "OpenAI", "A batch: status, request_counts, "
     "output_file_id, error_file_id, errors.", None, "A batch object.", False),
    ("post", "/v1/batches/{batch_id}/cancel", "OpenAI", "Cancel a batch (cancelling, then "
     "cancelled with the results so far).", None, "A batch object.", False),
    ("post", "/v1/messages", "Anthropic", "Anthropic Messages API: system, content blocks "
     "(text, base64 image, tool_use, tool_result), tools, tool_choice, stop_sequences, "
     "max_tokens (required), output_config.format; `stream: true` gives Anthropic's events. "
     "The key may be sent as `x-api-key`.", MessagesRequest, "A message object, or the events "
     "message_start, ping, content_block_start/delta/stop, message_delta, message_stop.",
     True),
    ("post", "/v1/messages/count_tokens", "Anthropic", "The input tokens of a Messages "
     "request (the provider's count, else an estimate).", CountTokensRequest,
     "`{input_tokens}`", False),
    ("get", "/api/models", "Models", "Every model grouped by provider (`?refresh=true` to "
     "fetch now).", None, "`{models: {provider: [ModelInfo]}, total, errors: {provider: "
     "message}}`", False),
    ("get", "/api/models/search", "Models", "Search: `q` (words), `provider`, `capability` "
     "(repeatable), `min_context`, `max_size` (bytes), `local` (true/false).", None,
     "`{models: [ModelInfo], total}`", False),
    ("post", "/api/models/refresh", "Models", "Fetch the model lists now (`?provider=` for "
     "one).", None, "`{providers: {name: listing}}`", False),
    ("get", "/api/models/{provider}", "Models", "One provider's models.", None,
     "`{provider, models: [ModelInfo], error}`", False),
    ("get", "/api/models/{provider}/{model}", "Models", "One model's details.", None,
     "A ModelInfo.", False),
    ("get", "/api/providers", "Providers", "Every provider with its listing, capabilities "
     "and health.", None, "`{providers: [...]}`", False),
    ("get", "/api/providers/health", "Providers", "Every provider's last health check "
     "(`?refresh=true` to check now).", None, "`{provider: health}`", False),
    ("get", "/api/models/providers", "Providers", "The same as `/api/providers` (seed 003's "
     "path).", None, "`{providers: [...]}`", False),
    ("get", "/api/models/providers/health", "Providers", "The same as `/api/providers/health` "
     "(seed 003's path).", None, "`{provider: health}`", False),
    ("get", "/api/providers/{name}/health", "Providers", "Check one provider now.", None,
     "`{provider, status, available, error, latency_ms, checked_at, ...}`", False),
    ("post", "/api/chat", "Chat", "Send a message to a conversation or a model; the answer "
     "streams as SSE events `chunk` ({content, reasoning?, tool_calls?}), then `done` "
     "({finish_reason, usage, conversation_id, model}) or `error` ({error}).",
     RestChatRequest, "Server-Sent Events.", True),
    ("post", "/api/conversations", "Conversations", "Create a conversation with a model.",
     ConversationCreate, "201 with the conversation.", False),
    ("get", "/api/conversations", "Conversations", "Every conversation (no messages), most "
     "recent first.", None, "`{conversations: [...]}`", False),
    ("get", "/api/conversations/{id}", "Conversations", "A conversation with its messages.",
     None, "The conversation.", False),
    ("patch", "/api/conversations/{id}", "Conversations", "Change title, model or "
     "system_prompt.", ConversationUpdate, "The conversation.", False),
    ("delete", "/api/conversations/{id}", "Conversations", "Delete a conversation.", None,
     "204.", False),
    ("get", "/ws", "Chat", "WebSocket chat: send `send_message`, `stop`, `ping` (and `auth` "
     "first when keys are configured and no header can be sent); receive `chunk`, `done`, "
     "`stopped`, `error`, `pong`.", None, "101 Switching Protocols.", False),
    ("get", "/ollama/api/version", "Ollama", "Ollama-compatible: the version.", None,
     "`{version}`", False),
    ("get", "/ollama/api/tags", "Ollama", "Ollama-compatible: the model ids as Ollama models.",
     None, "`{models: [{name, model, modified_at, size, digest, details, capabilities}]}`",
     False),
    ("post", "/ollama/api/show", "Ollama", "Ollama-compatible: one model (`{model}`).", None,
     "`{details, model_info, capabilities, modified_at}`", False),
    ("post", "/ollama/api/chat", "Ollama", "Ollama-compatible chat (`{model, messages, tools?, "
     "format?, options?, stream?}`), NDJSON when streaming (the default).", None,
     "Ollama chat objects; usage in the last (`done: true`).", True),
    ("post", "/ollama/api/generate", "Ollama", "Ollama-compatible generate (`{model, prompt, "
     "system?, format?, options?, stream?}`).", None, "Ollama generate objects.", True),
    ("post", "/ollama/api/embed", "Ollama", "Ollama-compatible embeddings (`{model, input, "
     "dimensions?}`).", None, "`{model, embeddings, total_duration}`", False),
    ("post", "/ollama/api/embeddings", "Ollama", "Ollama's legacy embeddings (`{model, "
     "prompt}`).", None, "`{embedding}`", False),
    ("get", "/ollama/", "Ollama", "Ollama-compatible: the server is up.", None,
     "`Ollama is running`", False),
    ("get", "/ollama", "Ollama", "Ollama-compatible: the server is up.", None,
     "`Ollama is running`", False),
    ("get", "/ollama/api/ps", "Ollama", "Ollama-compatible: loaded models (none are listed).",
     None, "`{models: []}`", False),
    ("post", "/ollama/api/pull", "Ollama", "Ollama-compatible pull (`{model, stream?}`): a "
     "served model is there already; an unknown one is a 404.", None,
     "`{status: success}`", False),
    ("post", "/ollama/api/push", "Ollama", "Refused (501): modelplex does not push models.",
     None, "501 `{error}`", False),
    ("post", "/ollama/api/create", "Ollama", "Refused (501): modelplex does not create "
     "models.", None, "501 `{error}`", False),
    ("post", "/ollama/api/copy", "Ollama", "Refused (501): modelplex does not copy models.",
     None, "501 `{error}`", False),
    ("delete", "/ollama/api/delete", "Ollama", "Refused (501): modelplex does not delete "
     "models.", None, "501 `{error}`", False),
    ("post", "/ollama/api/blobs/{digest}", "Ollama", "Refused (501): modelplex does not "
     "store blobs.", None, "501 `{error}`", False),
    ("get", "/health", "Server", "The server is up (no key needed).", None,
     "`{status: ok, version, in_flight}`", False),
    ("get", "/api/keys/me", "Keys", "The caller's key: models, limits, budget and this "
     "period's spend.", None, "`{name, models, rate_limit, tpm, concurrency, admin, source, "
     "budget: {amount, unit, period, spent, remaining, resets_at, ...}}`", False),
    ("get", "/api/keys", "Keys", "Every key (admin key only).", None, "`{keys: [...]}`",
     False),
    ("post", "/api/keys", "Keys", "Make a key (admin key only); the key is in the answer, "
     "once.", KeyCreate, "`{key, name, models, rate_limit, tpm, concurrency, budget, admin, "
     "created_at}`", False),
    ("delete", "/api/keys/{name}", "Keys", "Revoke a key kept in the store (admin key only).",
     None, "No content.", False),
    ("get", "/healthz", "Server", "Liveness: the process lives (no key needed).", None,
     "`{status: ok, pid}`", False),
    ("get", "/readyz", "Server", "Readiness: config, store, state and providers (no key "
     "needed); 503 when not ready.", None, "`{ready, checks: {config, store, state, "
     "providers}}`", False),
    ("get", "/openapi.json", "Server", "This description.", None, "OpenAPI 3.1.", False),
    ("get", "/metrics", "Server", "Prometheus metrics (modelplex_server.metrics).", None,
     "The Prometheus text format.", False),
    ("get", "/", "Web", "The web chat page (no key needed; it calls this API).", None,
     "text/html.", False),
    ("get", "/ui/{name}", "Web", "A script, style sheet or image of the web chat page.",
     None, "The file.", False),
]

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]},
                   "code": {"type": ["string", "null"]}}}}}


_ANTHROPIC_ERROR = {"type": "object", "required": ["type", "error"], "properties": {
    "type": {"const": "error"}, "request_id": {"type": "string"},
    "error": {"type": "object", "required": ["type", "message"],
              "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}}


def _error_schema(path: str) -> str:
    """The error body a route answers with: Anthropic's on its API, else OpenAI's."""
    return "AnthropicError" if path.startswith("/v1/messages") else "Error"


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document."""
    models: list[type[BaseModel]] = [ChatCompletionRequest, EmbeddingRequest, RestChatRequest,
                                     ConversationCreate, ConversationUpdate, ModelInfo,
                                     KeyCreate, MessagesRequest, CountTokensRequest,
                                     ResponsesRequest, CompletionRequest, BatchCreate]
    refs, defs = models_json_schema([(m, "validation") for m in models],
                                    ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = _ERROR
    schemas["AnthropicError"] = _ANTHROPIC_ERROR
    paths: dict[str, dict[str, Any]] = {}
    for method, path, tag, summary, body, reply, streams in ROUTES:
        name = path.strip("/").replace("/", "_") or "page"
        empty = method == "delete" and reply.startswith("204")  # no body
        op: dict[str, Any] = {"tags": [tag], "summary": summary,
                              "operationId": f"{method}_{name}"
                              .replace("{", "").replace("}", "") or method,
                              "responses": {
                                  "204" if empty else "200": {"description": reply}
                                  if empty else {
                                      "description": reply,
                                      "content": {(_SSE if streams else _JSON): {}}},
                                  "default": {"description": "An error.", "content": {
                                      _JSON: {"schema": {"$ref": "#/components/schemas/"
                                                                 + _error_schema(path)}}}},
                              }}
        params = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True,
                                 "schema": {"type": "string"}} for p in params]
        if body is not None:
            op["requestBody"] = {"required": True, "content": {
                _JSON: {"schema": refs[(body, "validation")]}}}
        if path not in ("/health", "/healthz", "/readyz", "/openapi.json", "/") \
                and not path.startswith("/ui/"):
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    paths["/v1/files"]["post"]["requestBody"] = {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["purpose", "file"], "properties": {
                "purpose": {"const": "batch"},
                "file": {"type": "string", "format": "binary"}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelplex server", "version": __version__,
                 "description": "An OpenAI-compatible gateway (/v1) and a REST and WebSocket "
                                "API (/api, /ws) over every modelplex provider. Errors are "
                                "`{error: {message, type, param, code}}`."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A key from `modelplex server-key`; needed only when "
                                      "the server has keys configured."}}},
    }


_cached: bytes | None = None


async def openapi_handler(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    global _cached
    if _cached is None:
        _cached = dumps(build_openapi())
    return web.Response(body=_cached, content_type="application/json")
