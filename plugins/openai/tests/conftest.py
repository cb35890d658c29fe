"""Shared fixtures: a real llama.cpp server (llama-cpp-python) on the tiny GGUF, and the
``provider`` of the replayed OpenAI-compatible server (``COMPAT_BASE``) that modules of
server quirks use (a module may define its own ``provider``).

Replays use ``mock``, ``transcript`` (from ``tests/data``) and ``sent`` from modelplex's
pytest plugin (:mod:`modelplex.testing.pytest_plugin`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from modelplex.testing.process import free_port, server_process
from modelplex_openai.provider import OpenAIProvider

TINY_GGUF_SOURCE = Path(__file__).resolve().parents[2] / "llamacpp" / "src" / \
    "modelplex_llamacpp" / "tiny_gguf.py"
SSE_HEADERS = {"Content-Type": "text/event-stream"}
#: the base URL of the replayed OpenAI-compatible server of ``provider``
COMPAT_BASE = "https://api.openai.test/v1"
ALIAS = "tiny"


def _write_tiny_gguf() -> Callable[..., Path]:
    try:
        from modelplex_llamacpp.tiny_gguf import write_tiny_gguf
    except ImportError:  # the llamacpp plugin is not installed: load the module by path
        spec = importlib.util.spec_from_file_location("_modelplex_tiny_gguf", TINY_GGUF_SOURCE)
        if spec is None or spec.loader is None:
            pytest.skip(f"cannot load {TINY_GGUF_SOURCE}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        write_tiny_gguf = module.write_tiny_gguf
    return write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight GGUF, written once per session."""
    pytest.importorskip("gguf")
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return _write_tiny_gguf()(path, seed=0)


@pytest.fixture(scope="session")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on 127.0.0.1 serving the tiny model as ``tiny``.

    Yields the OpenAI base URL (``http://127.0.0.1:PORT/v1``); stopped by pid at the end.
    """
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is needed")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with server_process(
            [sys.executable, "-m", "llama_cpp.server", "--model", tiny_gguf,
             "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port),
             "--embedding", "true", "--n_ctx", "2048", "--verbose", "false"],
            ready_url=base_url + "/models", name="llama_cpp.server",
            log=tmp_path_factory.mktemp("server") / "llama_server.log"):
        yield base_url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No OpenAI or modelplex-openai settings from the developer's environment."""
    for var in list(os.environ):
        if var.startswith(("OPENAI_", "MODELPLEX_OPENAI_", "LMSTUDIO_", "LM_API_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


@pytest.fixture
async def provider(clean_env: pytest.MonkeyPatch) -> AsyncIterator[OpenAIProvider]:
    """An OpenAI-compatible provider named ``compat`` at ``COMPAT_BASE`` (replayed)."""
    p = OpenAIProvider(name="compat", base_url=COMPAT_BASE, api_key="sk-test-0123456789abcdef")
    yield p
    await p.aclose()
