"""A hostile user against every route of ``modelplex serve``: a deterministic table of bad
bodies, path parameters, query parameters and ``/ws`` frames (plus a seeded mutation of good
bodies, so a failure reproduces), each answered with a 4xx in its API's own error shape (or a
2xx where the input is legitimately acceptable), never a 5xx, a traceback, a server-local path
or a hang, and the server still answers a good request afterwards.

The routes come from the app's router (:func:`test_every_route_is_in_the_table` fails when a
route is added without a case here).
"""

from __future__ import annotations

import json
import random
from typing import Any

from yarl import URL

from modelplex_server.app import AppServer

USER = [{"role": "user", "content": "hi"}]
MODEL = "fault:fault"
LIMIT = 64 * 1024  # the servers of the probes (conftest's HOSTILE_LIMIT): max_body_bytes

# -- the bodies every JSON route gets: (case, raw body, content type) ---------------------------
DEEP = b'{"a": ' * 5000 + b"1" + b"}" * 5000
DEEP_LIST = b"[" * 20000 + b"]" * 20000
GENERIC: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{not json", "application/json"),
    ("truncated JSON", b'{"model": "fault:fault", "messages": [', "application/json"),
    ("empty body", b"", "application/json"),
    ("a list", b"[1, 2]", "application/json"),
    ("a string", b'"hello"', "application/json"),
    ("null", b"null", "application/json"),
    ("a number", b"42", "application/json"),
    ("true", b"true", "application/json"),
    ("empty object", b"{}", "application/json"),
    ("NaN literal", b'{"model": NaN, "messages": [], "max_tokens": NaN}', "application/json"),
    ("Infinity literal", b'{"model": "fault:fault", "max_tokens": Infinity, '
                         b'"temperature": -Infinity}', "application/json"),
    ("1e309", b'{"model": "fault:fault", "max_tokens": 1e309, "temperature": 1e309}',
     "application/json"),
    ("2**64", b'{"model": "fault:fault", "max_tokens": 18446744073709551616}',
     "application/json"),
    ("huge integer", b'{"model": "fault:fault", "n": 1' + b"0" * 5000 + b"}",
     "application/json"),
    ("deeply nested object", DEEP, "application/json"),
    ("deeply nested list", DEEP_LIST, "application/json"),
    ("lone surrogate", b'{"model": "\\ud800", "name": "\\udfff", "prompt": "\\ud800"}',
     "application/json"),
    ("NUL characters", b'{"model": "fault\\u0000", "name": "a\\u0000b"}', "application/json"),
    ("invalid UTF-8", b'{"model": "\xff\xfe\xc3"}', "application/json"),
    ("UTF-8 BOM", b'\xef\xbb\xbf{"model": "fault:fault"}', "application/json"),
    ("duplicate keys", b'{"model": "x", "model": 5, "model": {"a": 1}}', "application/json"),
    ("very long model", json.dumps({"model": "m" * 60000}).encode(), "application/json"),
    ("wrong content type", b'{"model": "fault:fault"}', "text/plain"),
    ("form content type", b"model=fault:fault&messages=hi", "application/x-www-form-urlencoded"),
    ("oversize body", b'{"model": "' + b"a" * (LIMIT + 10) + b'"}', "application/json"),
    ("object where string", b'{"model": {"$ne": null}, "name": [1], "input": {"a": 1}}',
     "application/json"),
]


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": USER, **fields}


def _image(url: str) -> dict[str, Any]:
    return _chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": url}}]}])


#: the generic cases no route may accept (each is a 4xx on every route but the refresh, which
#: reads no body)
MUST_REFUSE = {"not JSON", "truncated JSON", "empty body", "a list", "a string", "null",
               "a number", "true", "NaN literal", "huge integer", "deeply nested object",
               "deeply nested list", "invalid UTF-8", "oversize body", "wrong content type",
               "form content type", "2**64"}
#: cases refused with a 400 naming the field (``param``, or in the message): defects found
REFUSED = {("POST /v1/chat/completions", "stop a huge list"): "stop",
           ("POST /v1/chat/completions", "image: data URL of text"): "messages.0.content.1",
           ("POST /v1/completions", "stop a huge list"): "stop",
           ("POST /v1/chat/completions", "huge integer"): "out of range",
           ("POST /v1/messages", "huge integer"): "out of range",
           ("POST /ollama/api/chat", "huge integer"): "out of range",
           # stop sequences: counted and measured on every API (OpenAI's 4, others 16)
           ("POST /v1/chat/completions", "stop sequence huge"): "at most 500 characters",
           ("POST /v1/chat/completions", "options.stop a huge list"): "options.stop",
           ("POST /v1/completions", "stop sequence huge"): "at most 500 characters",
           ("POST /v1/messages", "stop_sequences huge"): "at most 16 stop sequences",
           ("POST /v1/messages", "stop sequence huge"): "stop_sequences",
           ("POST /ollama/api/chat", "options.stop a huge list"): "at most 16 stop sequences",
           ("POST /ollama/api/chat", "stop sequence huge"): "options.stop",
           ("POST /ollama/api/generate", "options.stop a huge list"): "options.stop",
           ("POST /ollama/api/generate", "stop sequence huge"): "at most 500 characters",
           ("POST /api/chat", "options.stop a huge list"): "options.stop",
           # Ollama's fields modelplex cannot honour: refused, no longer ignored
           ("POST /ollama/api/generate", "raw true"): "raw",
           ("POST /ollama/api/generate", "template"): "template",
           ("POST /ollama/api/generate", "context foreign"): "context",
           ("POST /ollama/api/generate", "context of huge numbers"): "context",
           ("POST /ollama/api/generate", "context deeply nested"): "context",
           ("POST /ollama/api/generate", "logprobs true"): "logprobs",
           ("POST /ollama/api/chat", "logprobs true"): "logprobs",
           ("POST /ollama/api/embed", "truncate false"): "truncate",
           # counts: OpenAI's 128 tools and 2048 embedding inputs, on every API
           ("POST /v1/chat/completions", "tools two hundred"): "at most 128 tools",
           ("POST /v1/responses", "tools two hundred"): "at most 128 tools",
           ("POST /v1/messages", "tools two hundred"): "at most 128 tools",
           ("POST /v1/messages/count_tokens", "tools two hundred"): "at most 128 tools",
           ("POST /ollama/api/chat", "tools two hundred"): "at most 128 tools",
           ("POST /v1/embeddings", "input 3000 texts"): "at most 2048 inputs",
           # the Responses API's stateful fields it does not serve: refused, not ignored
           ("POST /v1/responses", "conversation"): "conversation",
           ("POST /v1/messages", "server tool"): "one of Anthropic's own tools",
           ("POST /v1/messages", "mcp_servers"): "mcp_servers",
           # a tool choice asking for a tool that is not there (a forced call to nothing)
           ("POST /v1/chat/completions", "tool_choice not among tools"): "not among tools",
           ("POST /v1/chat/completions", "tool_choice required, no tools"): "no tools",
           ("POST /v1/responses", "tool_choice not among tools"): "not among tools",
           ("POST /v1/messages", "tool_choice not among tools"): "not among tools",
           ("POST /v1/messages/count_tokens", "tool_choice not among tools"): "not among tools",
           # images per request: OpenAI's 500 on its APIs, Anthropic's 100 elsewhere
           ("POST /v1/chat/completions", "501 images"): "at most 500 images",
           ("POST /v1/responses", "501 images"): "at most 500 images",
           ("POST /v1/messages", "101 images"): "at most 100 images",
           ("POST /ollama/api/chat", "101 images"): "at most 100 images",
           ("POST /ollama/api/generate", "101 images"): "at most 100 images",
           ("POST /v1/chat/completions", "audio output"): "audio",
           ("POST /v1/chat/completions", "legacy functions"): "functions",
           ("POST /v1/chat/completions", "web search"): "web_search_options",
           ("POST /v1/responses", "include logprobs"): "include",
           ("POST /v1/messages/count_tokens", "server tool"): "one of Anthropic's own tools",
           ("POST /v1/responses", "prompt template"): "prompt",
           ("POST /v1/responses", "top_logprobs"): "top_logprobs",
           ("POST /ollama/api/embed", "input 3000 texts"): "at most 2048 inputs"}
FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

#: per route, bodies of the right top-level type with hostile fields: (case, JSON body)
OPENAI_CHAT: list[tuple[str, Any]] = [
    ("missing messages", {"model": MODEL}),
    ("missing model", {"messages": USER}),
    ("empty messages", _chat(messages=[])),
    ("unknown role", _chat(messages=[{"role": "hacker", "content": "hi"}])),
    ("message not an object", _chat(messages=["hi", 3, None])),
    ("content a number", _chat(messages=[{"role": "user", "content": 5}])),
    ("content part of unknown type", _chat(messages=[{"role": "user", "content": [
        {"type": "hologram", "data": "x"}]}])),
    ("content part without type", _chat(messages=[{"role": "user", "content": [{"text": "a"}]}])),
    ("messages an object", _chat(messages={"role": "user", "content": "hi"})),
    ("max_tokens a string", _chat(max_tokens="ten")),
    ("max_tokens -1", _chat(max_tokens=-1)),
    ("max_tokens 2**63", _chat(max_tokens=2**63)),
    ("n a billion", _chat(n=10**9)),
    ("temperature an object", _chat(temperature={"a": 1})),
    ("stop a huge list", _chat(stop=["x"] * 10000)),
    ("stop sequence huge", _chat(stop="x" * 20000)),
    ("options.stop a huge list", _chat(options={"stop": ["x"] * 10000})),
    ("tools an object", _chat(tools={"type": "function"})),
    ("tool of unknown type", _chat(tools=[{"type": "rocket"}])),
    ("tools two hundred", _chat(tools=[FUNCTION] * 200)),
    ("audio output", _chat(modalities=["text", "audio"], audio={"voice": "alloy"})),
    ("legacy functions", _chat(functions=[{"name": "f", "parameters": {}}])),
    ("web search", _chat(web_search_options={})),
    ("tool_choice not among tools", _chat(tools=[FUNCTION], tool_choice={
        "type": "function", "function": {"name": "nope"}})),
    ("tool_choice required, no tools", _chat(tool_choice="required")),
    ("501 images", _chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/a.png"}}] * 501}])),
    ("tool_choice garbage", _chat(tool_choice=42)),
    ("response_format unknown", _chat(response_format={"type": "xml"})),
    ("logit_bias garbage", _chat(logit_bias={"abc": "def"})),
    ("stream_options a string", _chat(stream=True, stream_options="yes")),
    ("image: invalid base64", _image("data:image/png;base64,!!!not-base64***")),
    ("image: data URL without comma", _image("data:image/png;base64")),
    ("image: data URL of text", _image("data:text/html;base64,PGgxPmhpPC9oMT4=")),
    ("image: local file", _image("file:///etc/passwd")),
    ("image: path traversal", _image("../../etc/passwd")),
    ("image: metadata address", _image("http://169.254.169.254/latest/meta-data/")),
    ("image: empty url", _image("")),
    ("lone surrogate content", _chat(messages=[{"role": "user", "content": "\ud800 and \udfff"}])),
    ("NUL content", _chat(messages=[{"role": "user", "content": "a\x00b"}])),
    ("long content", _chat(messages=[{"role": "user", "content": "é" * 20000}])),
    ("many messages", _chat(messages=USER * 2000)),
    ("metadata huge", _chat(metadata={f"k{i}": "v" for i in range(2000)})),
    ("user an object", _chat(user={"id": 1})),
    ("seed 2**64", _chat(seed=2**64)),
]
COMPLETIONS: list[tuple[str, Any]] = [
    ("missing prompt", {"model": MODEL}),
    ("prompt an object", {"model": MODEL, "prompt": {"a": 1}}),
    ("prompt tokens of garbage", {"model": MODEL, "prompt": [[1, "a", None]]}),
    ("prompt a huge token list", {"model": MODEL, "prompt": list(range(20000))}),
    ("prompt negative tokens", {"model": MODEL, "prompt": [-1, -2**40]}),
    ("empty prompt list", {"model": MODEL, "prompt": []}),
    ("stop a huge list", {"model": MODEL, "prompt": "a", "stop": ["x"] * 10000}),
    ("stop sequence huge", {"model": MODEL, "prompt": "a", "stop": ["x" * 20000]}),
    ("best_of a billion", {"model": MODEL, "prompt": "a", "best_of": 10**9}),
    ("logprobs 1e6", {"model": MODEL, "prompt": "a", "logprobs": 10**6}),
    ("echo a string", {"model": MODEL, "prompt": "a", "echo": "yes"}),
    ("suffix a list", {"model": MODEL, "prompt": "a", "suffix": [1]}),
    ("lone surrogate prompt", {"model": MODEL, "prompt": "\ud800"}),
]
EMBEDDINGS: list[tuple[str, Any]] = [
    ("missing input", {"model": MODEL}),
    ("empty input list", {"model": MODEL, "input": []}),
    ("input an object", {"model": MODEL, "input": {"a": 1}}),
    ("input of nulls", {"model": MODEL, "input": [None, None]}),
    ("input a huge list", {"model": MODEL, "input": ["a"] * 50000}),
    ("input 3000 texts", {"model": MODEL, "input": ["a"] * 3000}),
    ("dimensions -1", {"model": MODEL, "input": "a", "dimensions": -1}),
    ("encoding_format unknown", {"model": MODEL, "input": "a", "encoding_format": "hex"}),
    ("lone surrogate input", {"model": MODEL, "input": "\ud800"}),
]
RESPONSES: list[tuple[str, Any]] = [
    ("missing input", {"model": MODEL}),
    ("empty input list", {"model": MODEL, "input": []}),
    ("input a number", {"model": MODEL, "input": 3}),
    ("input item of unknown type", {"model": MODEL, "input": [{"type": "hologram"}]}),
    ("unknown role", {"model": MODEL, "input": [{"role": "hacker", "content": "hi"}]}),
    ("content part of unknown type", {"model": MODEL, "input": [
        {"role": "user", "content": [{"type": "hologram"}]}]}),
    ("image: invalid base64", {"model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,!!!"}]}]}),
    ("previous_response_id traversal", {"model": MODEL, "input": "hi",
                                        "previous_response_id": "../../etc/passwd"}),
    ("previous_response_id huge", {"model": MODEL, "input": "hi",
                                   "previous_response_id": "r" * 50000}),
    ("max_output_tokens -1", {"model": MODEL, "input": "hi", "max_output_tokens": -1}),
    ("tools an object", {"model": MODEL, "input": "hi", "tools": {"a": 1}}),
    ("tools two hundred", {"model": MODEL, "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object"}}] * 200}),
    ("instructions a list", {"model": MODEL, "input": "hi", "instructions": [1]}),
    ("reasoning garbage", {"model": MODEL, "input": "hi", "reasoning": {"effort": "galaxy"}}),
    ("text format unknown", {"model": MODEL, "input": "hi", "text": {"format": {"type": "x"}}}),
    ("conversation", {"model": MODEL, "input": "hi", "conversation": "conv_123"}),
    ("prompt template", {"model": MODEL, "input": "hi", "prompt": {"id": "pmpt_1"}}),
    ("top_logprobs", {"model": MODEL, "input": "hi", "top_logprobs": 5}),
    ("include logprobs", {"model": MODEL, "input": "hi",
                          "include": ["message.output_text.logprobs"]}),
    ("tool_choice not among tools", {"model": MODEL, "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "nope"}}),
    ("501 images", {"model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://x/a.png"}] * 501}]}),
]
ANTHROPIC: list[tuple[str, Any]] = [
    ("missing max_tokens", {"model": MODEL, "messages": USER}),
    ("missing messages", {"model": MODEL, "max_tokens": 10}),
    ("empty messages", {"model": MODEL, "max_tokens": 10, "messages": []}),
    ("unknown role", {"model": MODEL, "max_tokens": 10,
                      "messages": [{"role": "system", "content": "hi"}]}),
    ("block of unknown type", {"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "hologram"}]}]}),
    ("max_tokens -1", {"model": MODEL, "max_tokens": -1, "messages": USER}),
    ("max_tokens a string", {"model": MODEL, "max_tokens": "ten", "messages": USER}),
    ("max_tokens 2**63", {"model": MODEL, "max_tokens": 2**63, "messages": USER}),
    ("image: invalid base64", {"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "!!!not base64"}}]}]}),
    ("image: unknown media type", {"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "text/html", "data": "aGk="}}]}]}),
    ("image: local url", {"model": MODEL, "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {
            "type": "url", "url": "file:///etc/passwd"}}]}]}),
    ("system a number", {"model": MODEL, "max_tokens": 10, "messages": USER, "system": 5}),
    ("tools an object", {"model": MODEL, "max_tokens": 10, "messages": USER, "tools": {}}),
    ("server tool", {"model": MODEL, "max_tokens": 10, "messages": USER, "tools": [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
    ("mcp_servers", {"model": MODEL, "max_tokens": 10, "messages": USER, "mcp_servers": [
        {"type": "url", "url": "http://169.254.169.254/", "name": "x"}]}),
    ("tool_choice not among tools", {"model": MODEL, "max_tokens": 10, "messages": USER,
                                     "tools": [{"name": "f", "input_schema": {}}],
                                     "tool_choice": {"type": "tool", "name": "nope"}}),
    ("101 images", {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "aGk="}}] * 101}]}),
    ("tools two hundred", {"model": MODEL, "max_tokens": 10, "messages": USER, "tools": [
        {"name": "f", "input_schema": {"type": "object"}}] * 200}),
    ("stop_sequences huge", {"model": MODEL, "max_tokens": 10, "messages": USER,
                             "stop_sequences": ["x"] * 10000}),
    ("stop sequence huge", {"model": MODEL, "max_tokens": 10, "messages": USER,
                            "stop_sequences": ["x" * 20000]}),
    ("lone surrogate", {"model": MODEL, "max_tokens": 10,
                        "messages": [{"role": "user", "content": "\ud800"}]}),
]
OLLAMA_CHAT: list[tuple[str, Any]] = [
    ("missing model", {"messages": USER}),
    ("messages a string", {"model": MODEL, "messages": "hi"}),
    ("unknown role", {"model": MODEL, "messages": [{"role": "hacker", "content": "hi"}]}),
    ("images invalid base64", {"model": MODEL, "messages": [
        {"role": "user", "content": "hi", "images": ["!!!not base64"]}]}),
    ("images a string", {"model": MODEL, "messages": [
        {"role": "user", "content": "hi", "images": "abc"}]}),
    ("options garbage", {"model": MODEL, "messages": USER,
                         "options": {"num_predict": "ten", "temperature": {"a": 1}}}),
    ("options num_predict 2**63", {"model": MODEL, "messages": USER,
                                   "options": {"num_predict": 2**63}}),
    ("options a list", {"model": MODEL, "messages": USER, "options": [1]}),
    ("format unknown", {"model": MODEL, "messages": USER, "format": 5}),
    ("keep_alive garbage", {"model": MODEL, "messages": USER, "keep_alive": "forever!"}),
    ("options.stop a huge list", {"model": MODEL, "messages": USER,
                                  "options": {"stop": ["x"] * 10000}}),
    ("stop sequence huge", {"model": MODEL, "messages": USER,
                            "options": {"stop": ["x" * 20000]}}),
    ("logprobs true", {"model": MODEL, "messages": USER, "logprobs": True}),
    ("tools two hundred", {"model": MODEL, "messages": USER, "tools": [FUNCTION] * 200}),
    ("101 images", {"model": MODEL, "messages": [
        {"role": "user", "content": "hi", "images": ["aGk="] * 101}]}),
    ("top_logprobs a thousand", {"model": MODEL, "messages": USER, "top_logprobs": 1000}),
    ("lone surrogate", {"model": MODEL, "messages": [{"role": "user", "content": "\ud800"}]}),
]
OLLAMA_GENERATE: list[tuple[str, Any]] = [
    ("missing model", {"prompt": "hi"}),
    ("prompt an object", {"model": MODEL, "prompt": {"a": 1}}),
    ("images invalid base64", {"model": MODEL, "prompt": "hi", "images": ["!!!"]}),
    ("context garbage", {"model": MODEL, "prompt": "hi", "context": ["a", None]}),
    ("options garbage", {"model": MODEL, "prompt": "hi", "options": {"seed": 2**70}}),
    ("options.stop a huge list", {"model": MODEL, "prompt": "hi",
                                  "options": {"stop": ["x"] * 10000}}),
    ("stop sequence huge", {"model": MODEL, "prompt": "hi", "options": {"stop": ["x" * 20000]}}),
    ("raw true", {"model": MODEL, "prompt": "<|im_start|>user\nhi", "raw": True}),
    ("template", {"model": MODEL, "prompt": "hi", "template": "{{ .Prompt }}"}),
    ("context foreign", {"model": MODEL, "prompt": "hi", "context": [128000, 9906, 13]}),
    ("context of huge numbers", {"model": MODEL, "prompt": "hi", "context": [2**40, -1]}),
    ("context deeply nested", {"model": MODEL, "prompt": "hi",
                               "context": list(b"mpx1" + b"[" * 5000 + b"]" * 5000)}),
    ("logprobs true", {"model": MODEL, "prompt": "hi", "logprobs": True, "top_logprobs": 5}),
    ("101 images", {"model": MODEL, "prompt": "hi", "images": ["aGk="] * 101}),
]
OLLAMA_EMBED: list[tuple[str, Any]] = [
    ("missing input", {"model": MODEL}),
    ("input an object", {"model": MODEL, "input": {"a": 1}}),
    ("input of nulls", {"model": MODEL, "input": [None]}),
    ("truncate a string", {"model": MODEL, "input": "a", "truncate": "yes"}),
    ("truncate false", {"model": MODEL, "input": "a", "truncate": False}),
    ("input 3000 texts", {"model": MODEL, "input": ["a"] * 3000}),
    ("options garbage", {"model": MODEL, "input": "a", "options": {"stop": 5, "seed": "x"}}),
]
OLLAMA_EMBEDDINGS: list[tuple[str, Any]] = [
    ("missing model", {"prompt": "hi"}),
    ("prompt an object", {"model": MODEL, "prompt": {"a": 1}}),
    ("prompt a list", {"model": MODEL, "prompt": ["a", "b"]}),
    ("lone surrogate prompt", {"model": MODEL, "prompt": "\ud800"}),
]
OLLAMA_PULL: list[tuple[str, Any]] = [
    ("missing model", {}),
    ("model traversal", {"model": "../../etc/passwd"}),
    ("model a URL", {"model": "http://169.254.169.254/latest"}),
    ("stream a string", {"model": MODEL, "stream": "yes"}),
]
OLLAMA_SHOW: list[tuple[str, Any]] = [
    ("missing model", {}),
    ("model traversal", {"model": "../../etc/passwd"}),
    ("model a list", {"model": ["a"]}),
]
REST_CHAT: list[tuple[str, Any]] = [
    ("missing message", {"model": MODEL}),
    ("conversation traversal", {"model": MODEL, "message": "hi",
                                "conversation_id": "../../etc/passwd"}),
    ("conversation a number", {"model": MODEL, "message": "hi", "conversation_id": 5}),
    ("message an object", {"model": MODEL, "message": {"a": 1}}),
    ("message NUL", {"model": MODEL, "message": "a\x00b"}),
    ("title NUL", {"model": MODEL, "message": "hi", "title": "a\x00b"}),
    ("options.stop a huge list", {"model": MODEL, "message": "hi",
                                  "options": {"stop": ["x"] * 10000}}),
]
CONVERSATIONS: list[tuple[str, Any]] = [
    ("title an object", {"title": {"a": 1}}),
    ("title huge", {"title": "t" * 60000}),
    ("title NUL", {"model": MODEL, "title": "a\x00b", "system_prompt": "\x00"}),
    ("messages garbage", {"messages": [1, 2, 3]}),
    ("unknown role", {"messages": [{"role": "hacker", "content": "hi"}]}),
    ("id traversal", {"id": "../../etc/passwd", "title": "x"}),
]
BATCHES: list[tuple[str, Any]] = [
    ("missing input_file_id", {"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    ("input_file_id traversal", {"input_file_id": "../../etc/passwd",
                                 "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
    ("unknown endpoint", {"input_file_id": "file-x", "endpoint": "/admin/shutdown",
                          "completion_window": "24h"}),
    ("completion_window garbage", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                                   "completion_window": "forever"}),
    ("metadata huge", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                       "completion_window": "24h",
                       "metadata": {f"k{i}": "v" * 600 for i in range(40)}}),
    ("metadata a list", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                         "completion_window": "24h", "metadata": [1]}),
]
KEYS: list[tuple[str, Any]] = [
    ("missing name", {}),
    ("name traversal", {"name": "../../etc/passwd"}),
    ("name huge", {"name": "k" * 60000}),
    ("name NUL", {"name": "a\x00b"}),
    ("budget negative", {"name": "k", "budget": -1}),
    ("models an object", {"name": "k", "models": {"a": 1}}),
    ("rpm 2**64", {"name": "k", "rpm": 2**64}),
]

#: every JSON route of the server: (method, path) -> its specific cases
JSON_ROUTES: dict[tuple[str, str], list[tuple[str, Any]]] = {
    ("POST", "/v1/chat/completions"): OPENAI_CHAT,
    ("POST", "/v1/completions"): COMPLETIONS,
    ("POST", "/v1/embeddings"): EMBEDDINGS,
    ("POST", "/v1/responses"): RESPONSES,
    ("POST", "/v1/messages"): ANTHROPIC,
    ("POST", "/v1/messages/count_tokens"): ANTHROPIC,
    ("POST", "/v1/batches"): BATCHES,
    ("POST", "/ollama/api/chat"): OLLAMA_CHAT,
    ("POST", "/ollama/api/generate"): OLLAMA_GENERATE,
    ("POST", "/ollama/api/embed"): OLLAMA_EMBED,
    ("POST", "/ollama/api/show"): OLLAMA_SHOW,
    ("POST", "/ollama/api/embeddings"): OLLAMA_EMBEDDINGS,
    ("POST", "/ollama/api/pull"): OLLAMA_PULL,
    ("POST", "/api/chat"): REST_CHAT,
    ("POST", "/api/conversations"): CONVERSATIONS,
    ("PATCH", "/api/conversations/{id}"): CONVERSATIONS,
    ("POST", "/api/keys"): KEYS,
    ("POST", "/api/models/refresh"): [("an object", {"provider": "../../etc"})],
}
#: hostile values for the path parameters (sent escaped, so they reach the handler as such)
TRAVERSAL = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%00", "a\x00b", "\ud800",
             "x" * 5000, "..", "~root", "/etc/passwd", "C:\\Windows\\win.ini", "' OR 1=1 --"]
PATH_ROUTES: list[tuple[str, str]] = [
    ("GET", "/v1/models/{}"), ("GET", "/v1/responses/{}"), ("DELETE", "/v1/responses/{}"),
    ("GET", "/v1/responses/{}/input_items"), ("GET", "/v1/files/{}"),
    ("DELETE", "/v1/files/{}"), ("GET", "/v1/files/{}/content"), ("GET", "/v1/batches/{}"),
    ("POST", "/v1/batches/{}/cancel"), ("GET", "/api/models/{}"),
    ("GET", "/api/models/{}/x"), ("GET", "/api/models/openai/{}"),
    ("GET", "/api/providers/{}/health"), ("GET", "/api/conversations/{}"),
    ("DELETE", "/api/conversations/{}"), ("PATCH", "/api/conversations/{}"),
    ("DELETE", "/api/keys/{}"), ("GET", "/ui/{}"), ("POST", "/ollama/api/blobs/{}"),
]
BAD_QUERIES = [{"limit": "-1"}, {"limit": "abc"}, {"limit": "1e309"}, {"limit": "0"},
               {"limit": "99999999999999999999999"}, {"after": "../../etc/passwd"},
               {"after": "\x00"}, {"order": "sideways"}, {"before": "x" * 3000},
               {"offset": "-5"}, {"q": "x" * 3000}, {"include": "[]"}, {"limit": "NaN"}]
QUERY_ROUTES = ["/v1/models", "/v1/files", "/v1/batches", "/api/conversations",
                "/api/models", "/api/models/search", "/api/providers", "/api/providers/health",
                "/api/models/providers", "/api/models/providers/health", "/api/keys",
                "/api/keys/me", "/metrics", "/health", "/healthz", "/readyz", "/ollama/api/tags",
                "/ollama/api/version", "/openapi.json", "/", "/v1/responses/resp_x/input_items",
                "/ollama", "/ollama/", "/ollama/api/ps"]


def test_every_route_is_in_the_table(server: AppServer) -> None:
    """Each route of the app's router has cases here (a new route needs its own)."""
    covered = {path.replace("{}", "{x}") for _, path in PATH_ROUTES}
    covered |= {path for _, path in JSON_ROUTES} | set(QUERY_ROUTES)
    covered |= {"/v1/files", "/ws", "/ollama/api/push", "/ollama/api/create",
                "/ollama/api/copy", "/ollama/api/delete"}  # refused: every method
    missing = []
    for route in server.runner.app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        generic = canonical
        for name in ("model", "id", "file_id", "batch_id", "provider", "name", "digest"):
            generic = generic.replace("{" + name + "}", "{x}")
        if canonical not in covered and generic not in covered and \
                generic.replace("{x}/{x}", "{x}/x") not in covered:
            missing.append(f"{route.method} {canonical}")
    assert not missing, missing


async def test_every_method_on_every_route(probe: Any) -> None:
    """Each method (an unknown one too) with no body on each route of the router."""
    routes = probe.server.runner.app.router.routes()
    paths = sorted({(r.resource.canonical if r.resource else "/")
                    .replace("{model}", "m").replace("{provider}", "openai")
                    .replace("{name}", "x").replace("{id}", "x").replace("{file_id}", "file-x")
                    .replace("{batch_id}", "batch_x") for r in routes})
    for path in paths:
        if path == "/ws":
            continue  # a WebSocket: test_hostile_transport.py
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            await probe.send("no body", method, path)
    # a method HTTP does not know: the parser refuses it (in OpenAI's shape: no path yet)
    await probe.send("unknown method", "BREW", "/v1/models")
    await probe.still_answers("every method")
    probe.check()


async def test_hostile_bodies_on_every_json_route(probe: Any) -> None:
    for (method, path), cases in JSON_ROUTES.items():
        real = path.replace("{id}", "conv_none")
        for case, raw, ctype in GENERIC:
            if path == "/api/models/refresh" and case in MUST_REFUSE:
                case += " (no body is read)"
            await probe.send(case, method, real, data=raw, content_type=ctype,
                             refuse=case in MUST_REFUSE,
                             naming=REFUSED.get((f"{method} {path}", case)))
        for case, body in cases:
            raw = json.dumps(body).encode()
            await probe.send(case, method, real, data=raw,
                             naming=REFUSED.get((f"{method} {path}", case)))
        await probe.still_answers(path)
    probe.check()


STREAMED = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages",
            "/ollama/api/chat", "/ollama/api/generate"]


async def test_hostile_bodies_streamed(probe: Any) -> None:
    """The route tables again with ``stream: true``: a refusal comes before the stream."""
    for path in STREAMED:
        for case, body in JSON_ROUTES[("POST", path)]:
            if isinstance(body, dict):
                await probe.send(case + " (streamed)", "POST", path,
                                 data=json.dumps({**body, "stream": True}).encode())
    await probe.send("ws-like stream flag", "POST", "/v1/chat/completions",
                     data=json.dumps(_chat(stream=True, stream_options={"x": 1})).encode())
    await probe.still_answers("the streamed tables")
    probe.check()


async def test_hostile_bodies_with_an_admin_key(admin_probe: Any) -> None:
    """The routes a key unlocks: keys, and the change of an existing conversation."""
    probe = admin_probe
    async with probe.session.post(probe.server.url + "/api/conversations",
                                  json={"model": MODEL}, headers=probe.headers) as resp:
        conversation = (await resp.json())["id"]
    for method, path, cases in [("POST", "/api/keys", KEYS),
                                ("PATCH", f"/api/conversations/{conversation}", CONVERSATIONS),
                                ("POST", "/api/conversations", CONVERSATIONS),
                                ("POST", "/v1/batches", BATCHES),
                                ("POST", "/api/chat", REST_CHAT),
                                ("POST", "/v1/responses", RESPONSES)]:
        for case, raw, ctype in GENERIC:
            await probe.send(case, method, path, data=raw, content_type=ctype,
                             refuse=case in MUST_REFUSE)
        for case, body in cases:
            await probe.send(case, method, path, data=json.dumps(body).encode())
    await probe.still_answers("the admin routes")
    probe.check()


async def test_hostile_paths_and_queries_on_the_stores(admin_probe: Any) -> None:
    """The path and query tables against the persistent stores (PostgreSQL cannot even
    compare a text holding a NUL)."""
    await _paths(admin_probe)
    await _queries(admin_probe)
    for params, param in [({"after": "\x00"}, "after"), ({"q": "a\x00"}, "q")]:
        status = await admin_probe.send(f"query {params}", "GET", "/v1/files", params=params)
        if status != 400 or f'"param":"{param}"' not in admin_probe.answers[-1][2]:
            admin_probe.problems.append(f"NUL in {param}: {admin_probe.answers[-1]}")
    await admin_probe.still_answers("the paths and queries")
    admin_probe.check()


async def test_hostile_path_parameters(probe: Any) -> None:
    await _paths(probe)
    await probe.still_answers("the path parameters")
    probe.check()


async def _paths(probe: Any) -> None:
    for method, template in PATH_ROUTES:
        for value in TRAVERSAL:
            escaped = URL.build(path="/" + value).raw_path[1:].replace("/", "%2F")
            await probe.send(f"path {value[:20]!r}", method, template.format(escaped),
                             data=b"{}" if method in ("POST", "PATCH") else None)


async def test_hostile_query_parameters(probe: Any) -> None:
    await _queries(probe)
    await probe.still_answers("the query parameters")
    probe.check()


async def _queries(probe: Any) -> None:
    async with probe.session.post(probe.server.url + "/v1/responses",
                                  json={"model": MODEL, "input": "hi"},
                                  headers=probe.headers) as resp:
        stored = (await resp.json())["id"]  # a stored response: its input_items are paged
    for path in [*QUERY_ROUTES, f"/v1/responses/{stored}/input_items"]:
        for params in BAD_QUERIES:
            await probe.send(f"query {params!r:.40}", "GET", path, params=params)
    anthropic = {"anthropic-version": "2023-06-01"}  # Anthropic's model list and its pages
    for params in [*BAD_QUERIES, {"after_id": "../../etc"}, {"before_id": "\x00"},
                   {"after_id": "fault:fault", "before_id": "fault:fault"}]:
        await probe.send(f"anthropic query {params!r:.40}", "GET", "/v1/models",
                         params=params, headers=anthropic)
    for params, param in [({"limit": "0"}, "limit"), ({"limit": "abc"}, "limit"),
                          ({"after_id": "nope"}, "after_id"), ({"before_id": "nope"},
                                                               "before_id")]:
        status = await probe.send(f"anthropic query {params}", "GET", "/v1/models",
                                  params=params, headers=anthropic)
        if status != 400 or f'"param":"{param}"' not in probe.answers[-1][2]:
            probe.problems.append(f"/v1/models?{params} (Anthropic): not a 400 naming {param}")
    for params, param in [({"order": "sideways"}, "order"), ({"limit": "-1"}, "limit"),
                          ({"limit": "abc"}, "limit"), ({"limit": "1e309"}, "limit")]:
        for path in (f"/v1/responses/{stored}/input_items", "/v1/files", "/v1/batches",
                     "/api/conversations"):
            if param == "order" and path in ("/v1/batches", "/api/conversations"):
                continue  # OpenAI's batch list takes no order
            status = await probe.send(f"query {params}", "GET", path, params=params)
            last = probe.answers[-1][2]
            if status != 400 or f'"param":"{param}"' not in last:
                probe.problems.append(f"GET {path}?{params}: not a 400 naming {param}: "
                                      f"{status} {last}")


def _mutate(value: Any, rng: random.Random) -> Any:
    """One value of a hostile type in place of ``value``, or a mutation below it."""
    if isinstance(value, dict) and value and rng.random() < 0.6:
        key = rng.choice(sorted(value))
        return {**value, key: _mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.6:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate(value[i], rng), *value[i + 1:]]
    return rng.choice([None, -1, 0, 2**63, 1.5e308, -1e-320, "", "\ud800", "x" * 3000,
                       [], {}, [None], {"": None}, True, "../../etc/passwd", [[[[]]]],
                       {"type": "hologram"}, "data:image/png;base64,%%%"])


SEEDS = {"POST /v1/chat/completions": _chat(max_tokens=5, temperature=0.5, stop=["x"],
                                            tools=[{"type": "function", "function": {
                                                "name": "f", "parameters": {
                                                    "type": "object"}}}]),
         "POST /v1/completions": {"model": MODEL, "prompt": "hi", "max_tokens": 5},
         "POST /v1/responses": {"model": MODEL, "input": [{"role": "user", "content": [
             {"type": "input_text", "text": "hi"}]}], "max_output_tokens": 20},
         "POST /v1/messages": {"model": MODEL, "max_tokens": 10, "system": "be brief",
                               "messages": [{"role": "user", "content": [
                                   {"type": "text", "text": "hi"}]}]},
         "POST /ollama/api/chat": {"model": MODEL, "stream": False, "messages": USER,
                                   "options": {"num_predict": 5}},
         "POST /api/chat": {"model": MODEL, "message": "hi"},
         "POST /v1/embeddings": {"model": MODEL, "input": ["a", "b"], "dimensions": 8},
         "POST /v1/messages/count_tokens": {"model": MODEL, "messages": [
             {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "system": "s"},
         "POST /ollama/api/generate": {"model": MODEL, "prompt": "hi", "stream": False,
                                       "images": ["aGk="], "options": {"seed": 1}},
         "POST /ollama/api/embed": {"model": MODEL, "input": ["a"]},
         "POST /api/conversations": {"model": MODEL, "title": "t", "system_prompt": "s"},
         "POST /v1/batches": {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                              "completion_window": "24h", "metadata": {"a": "b"}}}


async def test_seeded_mutations_of_good_bodies(probe: Any) -> None:
    """Good bodies with one field swapped for a hostile value (seed 20261205: reproducible)."""
    rng = random.Random(20261205)
    for route, good in SEEDS.items():
        method, path = route.split(" ")
        for i in range(40):
            body = _mutate(good, rng)
            await probe.send(f"mutation {i} {json.dumps(body)[:120]}", method, path,
                             data=json.dumps(body).encode())
    await probe.still_answers("the mutations")
    probe.check()
