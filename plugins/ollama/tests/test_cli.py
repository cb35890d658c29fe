"""The ``modelplex`` command with this provider: chat, models list/show/ps/pull/rm, providers,
and the ``modelplex ollama`` group, against replayed traffic."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType

import pytest
from aioresponses import aioresponses

import modelplex_ollama
from modelplex.cli import cli
from modelplex.plugins import Plugins
from modelplex.testing import Cli

BASE = "http://ollama.test:11434"


@pytest.fixture(autouse=True)
def _ollama_only(modelplex_plugins: Plugins, register_plugin: Callable[..., str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
    register_plugin(modelplex_ollama, name="ollama")
    modelplex_plugins.add_commands(cli)
    monkeypatch.setenv("OLLAMA_HOST", "ollama.test")


#: ``modelplex ARGS`` in this process (where the replayed HTTP is)
run = Cli(drop=()).invoke


def test_chat_one_shot_with_usage(mock: aioresponses, wire: ModuleType) -> None:
    mock.post(BASE + "/api/chat", body=wire.chat_stream())
    result = run("chat", "-m", "ollama:llama3.2", "-o", "num_ctx", "8192", "-o", "keep_alive",
                 "10m", "-u", "Why is the sky blue?")
    assert result.returncode == 0, result.output
    assert result.stdout == "That's a fantastic question!\n"
    assert "prompt 26, completion 259 tokens" in result.stderr
    body = wire.sent(mock, "POST", "/api/chat")
    assert body["model"] == "llama3.2"
    assert body["keep_alive"] == "10m"
    assert body["options"] == {"num_ctx": 8192}
    assert body["messages"][-1] == {"role": "user", "content": "Why is the sky blue?"}


def test_models_list_and_show(mock: aioresponses, wire: ModuleType) -> None:
    mock.get(BASE + "/api/tags", body=json.dumps(wire.TAGS))
    result = run("models", "list", "-p", "ollama")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT",
                                "CAPABILITIES"]
    assert lines[1].split()[:5] == ["ollama:llama3.2:latest", "llama", "3.2B", "Q4_K_M", "2.0"]
    mock.post(BASE + "/api/show", body=json.dumps(wire.SHOW))
    result = run("models", "show", "ollama:llama3.2", "--json")
    data = json.loads(result.stdout)
    assert data["context_length"] == 131072
    assert data["capabilities"] == ["completion", "tools"]


def test_models_ps_pull_rm(mock: aioresponses, wire: ModuleType) -> None:
    mock.get(BASE + "/api/ps", body=json.dumps(wire.PS))
    result = run("models", "ps", "-p", "ollama")
    assert result.stdout.splitlines()[1].split() == ["llama3.2:latest", "3.8", "GB", "4096"]

    mock.post(BASE + "/api/pull", body=wire.ndjson(*wire.pull_lines()))
    result = run("models", "pull", "ollama:llama3.2")
    assert result.returncode == 0
    progress = result.stderr.splitlines()
    assert progress[0] == "pulling manifest"
    assert progress[1].startswith("pulling dde5aa3fc5ff [")
    assert "/2.0 GB" in progress[1] and progress[1].endswith("/s")
    assert progress[-1] == "success"

    mock.delete(BASE + "/api/delete", body="")
    result = run("models", "rm", "ollama:llama3.2")
    assert result.stdout == "deleted ollama:llama3.2\n"
    assert wire.sent(mock, "DELETE", "/api/delete") == {"model": "llama3.2"}


def test_errors_print_one_line(mock: aioresponses, wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(
        {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}))
    result = run("models", "pull", "ollama:llama9")
    assert result.returncode == 1
    err = result.stderr
    assert "Error: ollama: there is no model 'llama9' in the registry" in err
    mock.post(BASE + "/api/chat", status=404, body=wire.not_found("llama9"))
    result = run("chat", "-m", "ollama:llama9", "hi")
    assert result.returncode != 0
    assert "modelplex models pull ollama:llama9" in result.stderr


def test_providers_healthy(mock: aioresponses) -> None:
    mock.get(BASE + "/api/version", body=json.dumps({"version": "0.12.3"}))
    mock.get(BASE + "/api/tags", body=json.dumps({"models": []}))
    result = run("providers")
    assert result.stdout.split() == ["ollama", "ok", "0", "models;", "version", "0.12.3;",
                                     "http://ollama.test:11434"]


def test_providers_down(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port}")  # nothing listens there
    result = run("providers", "--json")
    (status,) = json.loads(result.stdout)
    assert status["healthy"] is False
    assert "Ollama is not running" in status["detail"]


def test_ollama_group_version_and_copy(mock: aioresponses, wire: ModuleType) -> None:
    mock.get(BASE + "/api/version", body=json.dumps({"version": "0.12.3"}))
    assert run("ollama", "version").stdout == "0.12.3\n"
    mock.post("http://other:11434/api/copy", body="")
    result = run("ollama", "--host", "other", "copy", "llama3.2", "llama3-backup")
    assert result.stdout == "copied llama3.2 to llama3-backup\n"
