"""Replayed Ollama wire traffic and helpers shared by the tests.

The transcripts are the verbatim ones of ``shared/reference/protocols.md`` section 1.8 (put on
one line each, as the server sends them); the rest follow the documented shapes of 1.3-1.7.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

from modelplex.testing import closed_port_url, serve_app
from modelplex_ollama.provider import OllamaProvider

HOST = "http://ollama.test:11434"


def url(path: str) -> str:
    return HOST + path


def ndjson(*lines: dict[str, Any] | str) -> bytes:
    """One JSON object per line, each ending in a newline, as Ollama streams them."""
    return b"".join((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n"
                    for line in lines)


# -- verbatim transcripts (protocols.md 1.8) --------------------------------------------------
GENERATE_STREAM = [  # (a), plus the documented metrics on the final object
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.097767Z","response":"That","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.109172Z","response":"\'","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.121485Z","response":"s","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.132802Z","response":" a","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.143931Z","response":" fantastic",'
    '"done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.155176Z","response":" question",'
    '"done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:15:24.166576Z","response":"!","done":true, '
    '"done_reason": "stop","total_duration":10706818083,"load_duration":6338219291,'
    '"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":259,'
    '"eval_duration":4232710000}',
]
GENERATE_NON_STREAM = ('{"model":"gemma4","created_at":"2025-10-26T17:15:24.166576Z",'
                       '"response":"That\'s a fantastic question!","done":true}')
GENERATE_FINAL_WITH_METRICS = (
    '{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"","done":true,'
    '"context":[1,2,3],"total_duration":10706818083,"load_duration":6338219291,'
    '"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":259,'
    '"eval_duration":4232710000}')
CHAT_TOOL_STREAM = [  # (b)
    '{"model":"llama3.2","created_at":"2025-07-07T20:22:19.184789Z","message":{"role":"assistant",'
    '"content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Tokyo"}}}]},'
    '"done":false}',
    '{"model":"llama3.2","created_at":"2025-07-07T20:22:19.19314Z","message":{"role":"assistant",'
    '"content":""},"done_reason":"stop","done":true,"total_duration":182242375,'
    '"load_duration":41295167,"prompt_eval_count":169,"prompt_eval_duration":24573166,'
    '"eval_count":15,"eval_duration":115959084}',
]
GENERATE_MID_STREAM_ERROR = [  # (c)
    '{"model":"gemma4","created_at":"2025-10-26T17:21:21.196249Z","response":" Yes","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:21:21.207235Z","response":".","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:21:21.219166Z","response":"I","done":false}',
    '{"model":"gemma4","created_at":"2025-10-26T17:21:21.231094Z","response":"can","done":false}',
    '{"error":"an error was encountered while running the model"}',
]
CHAT_MINIMAL_STREAM = [  # (d): the Python client's fixture, no done / created_at
    '{"model": "dummy", "message": {"role": "assistant", "content": "I "}}',
    '{"model": "dummy", "message": {"role": "assistant", "content": "don\'t "}}',
    '{"model": "dummy", "message": {"role": "assistant", "content": "know."}}',
]
CHAT_STRUCTURED = (  # (e)
    '{"model":"llama3.1","created_at":"2024-12-06T00:46:58.265747Z","message":{"role":"assistant",'
    '"content":"{\\"age\\": 22, \\"available\\": false}"},"done_reason":"stop","done":true,'
    '"total_duration":2254970291,"load_duration":574751416,"prompt_eval_count":34,'
    '"prompt_eval_duration":1502000000,"eval_count":12,"eval_duration":175000000}')
PULL_PYTHON_FIXTURE = [  # 1.7, the Python client's pull-stream fixture
    '{"status": "pulling manifest"}',
    '{"status": "verifying sha256 digest"}',
    '{"status": "writing manifest"}',
    '{"status": "removing any unused layers"}',
    '{"status": "success"}',
]


# -- chat transcripts in /api/chat shape (1.3), same text and metrics as above ---------------
def chat_line(content: str, *, model: str = "llama3.2", **extra: Any) -> dict[str, Any]:
    return {"model": model, "created_at": "2025-10-26T17:15:24.097767Z",
            "message": {"role": "assistant", "content": content}, "done": False, **extra}


METRICS = {"total_duration": 10706818083, "load_duration": 6338219291,
           "prompt_eval_count": 26, "prompt_eval_duration": 130079000,
           "eval_count": 259, "eval_duration": 4232710000}
CHAT_WORDS = ["That", "'", "s", " a", " fantastic", " question", "!"]


def chat_stream(words: list[str] = CHAT_WORDS, **final: Any) -> bytes:
    lines = [chat_line(w) for w in words]
    lines.append({**chat_line(""), "done": True, "done_reason": "stop", **METRICS, **final})
    return ndjson(*lines)


def chat_complete(words: list[str] = CHAT_WORDS) -> str:
    return json.dumps({**chat_line("".join(words)), "done": True, "done_reason": "stop",
                       **METRICS})


def not_found(name: str) -> str:
    return json.dumps({"error": f"model '{name}' not found"})


# -- model management (1.6, 1.7) ------------------------------------------------------------
TAGS = {"models": [
    {"name": "llama3.2:latest", "model": "llama3.2:latest",
     "modified_at": "2024-05-31T13:24:18.383394836-07:00", "size": 2019393189,
     "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
     "details": {"parent_model": "", "format": "gguf", "family": "llama",
                 "families": ["llama"], "parameter_size": "3.2B",
                 "quantization_level": "Q4_K_M"}},
    {"name": "qwen3:0.6b", "model": "qwen3:0.6b", "modified_at": "2025-05-01T10:00:00Z",
     "size": 522653767, "digest": "7df6b6e09427",
     "details": {"format": "gguf", "family": "qwen3", "parameter_size": "751.63M",
                 "quantization_level": "Q4_K_M"},
     "capabilities": ["completion", "tools", "thinking"]},
]}
SHOW = {
    "license": "LLAMA 3.2 COMMUNITY LICENSE",
    "modelfile": "FROM /models/blobs/sha256-dde5\nTEMPLATE ...",
    "parameters": 'stop                           "<|eot_id|>"',
    "template": "{{ if .System }}<|start_header_id|>system<|end_header_id|>",
    "details": {"parent_model": "", "format": "gguf", "family": "llama",
                "families": ["llama"], "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M"},
    "model_info": {"general.architecture": "llama", "general.parameter_count": 3212749888,
                   "llama.context_length": 131072, "llama.embedding_length": 3072},
    "capabilities": ["completion", "tools"],
    "modified_at": "2024-09-25T18:05:35.129453Z",
}
PS = {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 3825819519,
                  "digest": "a80c4f17acd5", "details": TAGS["models"][0]["details"],
                  "expires_at": "2024-06-04T14:38:31.83753-07:00", "size_vram": 3825819519,
                  "context_length": 4096}]}

def pull_lines(digest: str = "sha256:dde5aa3fc5ff", total: int = 2019377376) -> list[Any]:
    short = digest[7:19]
    return [
        {"status": "pulling manifest"},
        {"status": f"pulling {short}", "digest": digest, "total": total},
        {"status": f"pulling {short}", "digest": digest, "total": total, "completed": 241970},
        {"status": f"pulling {short}", "digest": digest, "total": total, "completed": total},
        {"status": "pulling 966de95ca8a6", "digest": "sha256:966de95ca8a6", "total": 1429,
         "completed": 1429},
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]



# -- replay helpers ---------------------------------------------------------------------------
def sent(mock: aioresponses, method: str, path: str, index: int = -1) -> Any:
    """The JSON body of a request the provider sent."""
    calls = mock.requests[(method, URL(url(path)))]
    data = calls[index].kwargs["data"]
    return json.loads(data) if data is not None else None


@pytest.fixture
def wire() -> ModuleType:
    """This module: the transcripts and helpers above (``wire.chat_stream()``, ...)."""
    return sys.modules[__name__]


@pytest.fixture
async def provider() -> AsyncIterator[OllamaProvider]:
    p = OllamaProvider(host=HOST)
    yield p
    await p.aclose()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OLLAMA_HOST", "OLLAMA_BASE_URL", "OLLAMA_API_KEY", "OLLAMA_NUM_PARALLEL",
                "OLLAMA_MODELS",
                "MODELPLEX_DEFAULT_MODEL"):
        monkeypatch.delenv(var, raising=False)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def local_server() -> AsyncIterator[Callable[[dict[tuple[str, str], Handler]],
                                                   Awaitable[str]]]:
    """Start a real aiohttp server on 127.0.0.1 (port 0) with the given routes."""
    async with AsyncExitStack() as servers:

        async def start(routes: dict[tuple[str, str], Handler]) -> str:
            app = web.Application()
            for (method, path), handler in routes.items():
                app.router.add_route(method, path, handler)
            return await servers.enter_async_context(serve_app(app))

        yield start


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return int(closed_port_url().rsplit(":", 1)[1])
