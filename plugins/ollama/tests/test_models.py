"""Model management: tags, show, ps, delete, copy, version, pull (events, Task, disk), health."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aioresponses import aioresponses

from modelplex.errors import ModelNotFoundError, ServerError, StreamError
from modelplex.types import PullProgress, TaskStatus
from modelplex_ollama import connection
from modelplex_ollama.connection import InsufficientDiskSpaceError
from modelplex_ollama.provider import OllamaProvider

BASE = "http://ollama.test:11434"


async def test_list_models(provider: OllamaProvider, mock: aioresponses,
                           wire: ModuleType) -> None:
    mock.get(BASE + "/api/tags", body=json.dumps(wire.TAGS))
    models = await provider.list_models()
    assert [m.id for m in models] == ["llama3.2:latest", "qwen3:0.6b"]
    first, second = models
    assert (first.provider, first.family, first.parameter_size, first.quantization) == \
        ("ollama", "llama", "3.2B", "Q4_K_M")
    assert first.parameter_count == 3_200_000_000
    assert first.size_bytes == 2019393189 and first.size == "2.0 GB"
    assert first.modified == datetime(2024, 5, 31, 13, 24, 18, 383394,
                                      tzinfo=timezone(timedelta(hours=-7)))
    assert second.modified == datetime(2025, 5, 1, 10, tzinfo=UTC)
    assert second.capabilities == ["completion", "tools", "thinking"]
    assert second.parameter_count == 751_630_000


async def test_list_models_completed_from_show(provider: OllamaProvider, mock: aioresponses,
                                               wire: ModuleType) -> None:
    """Each listed model gets its context length and capabilities from /api/show; a model
    the server cannot describe keeps what /api/tags said."""
    mock.get(BASE + "/api/tags", body=json.dumps(wire.TAGS))
    mock.post(BASE + "/api/show", body=json.dumps(wire.SHOW))
    mock.post(BASE + "/api/show", status=500, body=json.dumps({"error": "boom"}))
    models = await provider.list_models()
    by_name = {m.name: m for m in models}
    described = [m for m in models if m.context_length == 131072]
    assert len(described) == 1
    assert described[0].capabilities in (["completion", "tools"],
                                         ["completion", "tools", "thinking"])
    assert by_name["qwen3:0.6b"].capabilities == ["completion", "tools", "thinking"]
    shows = [call for (method, url), calls in mock.requests.items()
             if method == "POST" and url.path == "/api/show" for call in calls]
    assert len(shows) == 2


async def test_show_model(provider: OllamaProvider, mock: aioresponses,
                          wire: ModuleType) -> None:
    mock.post(BASE + "/api/show", body=json.dumps(wire.SHOW))
    info = await provider.show_model("llama3.2")
    assert wire.sent(mock, "POST", "/api/show") == {"model": "llama3.2"}
    assert info.context_length == 131072
    assert info.parameter_count == 3212749888
    assert info.capabilities == ["completion", "tools"]
    assert info.details["template"].startswith("{{ if .System }}")
    assert info.details["parameters"].startswith("stop")
    assert info.family == "llama" and info.quantization == "Q4_K_M"


async def test_show_unknown_model(provider: OllamaProvider, mock: aioresponses,
                                  wire: ModuleType) -> None:
    mock.post(BASE + "/api/show", status=404, body=wire.not_found("nope"))
    with pytest.raises(ModelNotFoundError, match=r"'nope'.*models pull ollama:nope"):
        await provider.show_model("nope")


async def test_loaded_models(provider: OllamaProvider, mock: aioresponses,
                             wire: ModuleType) -> None:
    mock.get(BASE + "/api/ps", body=json.dumps(wire.PS))
    (loaded,) = await provider.list_loaded_models()
    assert loaded.id == "llama3.2:latest"
    assert loaded.context_length == 4096
    assert loaded.details["size_vram"] == 3825819519
    assert loaded.details["expires_at"].startswith("2024-06-04")


async def test_delete_and_copy(provider: OllamaProvider, mock: aioresponses,
                               wire: ModuleType) -> None:
    mock.delete(BASE + "/api/delete", body="", content_type="text/plain")
    await provider.delete_model("llama3:13b")
    assert wire.sent(mock, "DELETE", "/api/delete") == {"model": "llama3:13b"}
    mock.delete(BASE + "/api/delete", status=404, body=wire.not_found("llama3:13b"))
    with pytest.raises(ModelNotFoundError, match="cannot delete 'llama3:13b'"):
        await provider.delete_model("llama3:13b")

    mock.post(BASE + "/api/copy", body="")
    await provider.copy_model("llama3.2", "llama3-backup")
    assert wire.sent(mock, "POST", "/api/copy") == {"source": "llama3.2",
                                                    "destination": "llama3-backup"}
    mock.post(BASE + "/api/copy", status=404, body=json.dumps({"error": 'model "x" not found'}))
    with pytest.raises(ModelNotFoundError, match="cannot copy 'x'"):
        await provider.copy_model("x", "y")


async def test_version(provider: OllamaProvider, mock: aioresponses) -> None:
    mock.get(BASE + "/api/version", body=json.dumps({"version": "0.5.1"}))
    assert await provider.version() == "0.5.1"


# -- pull ---------------------------------------------------------------------------------------
async def test_pull_yields_progress_events(provider: OllamaProvider, mock: aioresponses,
                                           wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(*wire.pull_lines()))
    events = [e async for e in provider.pull_model("llama3.2")]
    assert wire.sent(mock, "POST", "/api/pull") == {"model": "llama3.2", "stream": True}
    assert events[0] == PullProgress(status="pulling manifest")
    assert events[2] == PullProgress(status="pulling dde5aa3fc5ff", digest="sha256:dde5aa3fc5ff",
                                     completed=241970, total=2019377376)
    assert events[-1].status == "success"
    assert len(events) == 8


async def test_pull_python_client_fixture(provider: OllamaProvider, mock: aioresponses,
                                          wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(*wire.PULL_PYTHON_FIXTURE))
    statuses = [e.status async for e in provider.pull_model("llama3.2")]
    assert statuses == ["pulling manifest", "verifying sha256 digest", "writing manifest",
                        "removing any unused layers", "success"]


async def test_pull_unknown_model_streamed_error(provider: OllamaProvider, mock: aioresponses,
                                                 wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"}))
    seen = []
    with pytest.raises(ModelNotFoundError, match=r"no model 'llama9' in the registry.*"
                                                 r"file does not exist"):
        async for event in provider.pull_model("llama9"):
            seen.append(event.status)
    assert seen == ["pulling manifest"]


async def test_pull_unknown_model_non_streaming_500(provider: OllamaProvider,
                                                    mock: aioresponses,
                                                    wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", status=500,
              body=json.dumps({"error": "pull model manifest: file does not exist"}))
    with pytest.raises(ModelNotFoundError, match="no model 'llama9' in the registry") as info:
        await provider.pull("llama9")
    assert wire.sent(mock, "POST", "/api/pull") == {"model": "llama9", "stream": False}
    assert isinstance(info.value.__cause__, ServerError)
    mock.post(BASE + "/api/pull", body=json.dumps({"status": "success"}))
    await provider.pull("llama3.2")


async def test_pull_other_stream_error_and_cut_stream(provider: OllamaProvider,
                                                      mock: aioresponses,
                                                      wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(
        {"status": "pulling manifest"}, {"error": "max retries exceeded: EOF"}))
    with pytest.raises(StreamError, match=r"pulling 'llama3\.2' failed: max retries exceeded"):
        async for _ in provider.pull_model("llama3.2"):
            pass
    mock.post(BASE + "/api/pull", body=wire.ndjson(*wire.pull_lines()[:3]))
    with pytest.raises(StreamError, match="ended before it succeeded"):
        async for _ in provider.pull_model("llama3.2"):
            pass


async def test_pull_refused_when_local_disk_is_too_small(mock: aioresponses, wire: ModuleType,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    checked: list[Path] = []

    def fake_free(path: Path) -> tuple[int, Path]:
        checked.append(path)
        return 1_000_000_000, tmp_path

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr("modelplex_ollama.management.free_disk_bytes", fake_free)
    local = "http://localhost:11434"
    mock.post(local + "/api/pull", body=wire.ndjson(*wire.pull_lines()))
    seen = []
    async with OllamaProvider(host="localhost") as provider:
        with pytest.raises(InsufficientDiskSpaceError, match=r"needs 2.0 GB more.*1.0 GB free"):
            async for event in provider.pull_model("llama3.2"):
                seen.append(event.status)
    assert seen == ["pulling manifest"]  # refused at the first announced layer
    assert checked == [tmp_path / "models"]


async def test_pull_disk_check_passes_and_skips_remote_hosts(
        provider: OllamaProvider, mock: aioresponses, wire: ModuleType,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake_free(path: Path) -> tuple[int, Path]:
        calls.append(path)
        return 10**12, tmp_path

    monkeypatch.setattr("modelplex_ollama.management.free_disk_bytes", fake_free)
    mock.post("http://127.0.0.1:11434/api/pull", body=wire.ndjson(*wire.pull_lines()))
    async with OllamaProvider() as local:
        assert [e async for e in local.pull_model("llama3.2")][-1].status == "success"
    assert len(calls) == 2  # once per newly announced layer
    mock.post(BASE + "/api/pull", body=wire.ndjson(*wire.pull_lines()))
    assert [e async for e in provider.pull_model("llama3.2")][-1].status == "success"
    assert len(calls) == 2  # a remote server's disk is not ours to check


def test_free_disk_bytes_uses_nearest_existing_parent(tmp_path: Path) -> None:
    free, where = connection.free_disk_bytes(tmp_path / "no" / "such" / "dir")
    assert where == tmp_path
    assert free > 0


async def test_pull_task_reports_progress_and_completion(provider: OllamaProvider,
                                                         mock: aioresponses,
                                                         wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(*wire.pull_lines()))
    task = provider.pull_task("llama3.2")
    assert task.status == TaskStatus.PENDING
    await provider.wait_task(task)
    assert task.status == TaskStatus.COMPLETED
    assert task.message == "success"
    assert task.total == 2019377376 + 1429
    assert task.completed == task.total
    assert task.progress == 1.0


async def test_pull_task_failure_and_cancel(provider: OllamaProvider, mock: aioresponses,
                                            wire: ModuleType) -> None:
    mock.post(BASE + "/api/pull", body=wire.ndjson(
        {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}))
    failed = provider.pull_task("llama9")
    await provider.wait_task(failed)
    assert failed.status == TaskStatus.FAILED
    assert failed.error is not None and "no model 'llama9'" in failed.error

    gate = asyncio.Event()

    async def slow(url: Any, **kw: Any) -> None:
        await gate.wait()

    mock.post(BASE + "/api/pull", callback=slow, body=wire.ndjson(*wire.pull_lines()))
    task = provider.pull_task("llama3.2")
    await asyncio.sleep(0.01)
    assert task.status == TaskStatus.RUNNING
    await provider.cancel_task(task)
    assert task.status == TaskStatus.CANCELLED


# -- health -------------------------------------------------------------------------------------
async def test_health_ok(provider: OllamaProvider, mock: aioresponses,
                         wire: ModuleType) -> None:
    mock.get(BASE + "/api/version", body=json.dumps({"version": "0.12.3"}))
    mock.get(BASE + "/api/tags", body=json.dumps(wire.TAGS))
    status = await provider.health()
    assert status.healthy
    assert (status.version, status.model_count) == ("0.12.3", 2)
    assert status.latency_ms is not None


async def test_health_unreachable_says_how_to_start(closed_port: int) -> None:
    async with OllamaProvider(host=f"127.0.0.1:{closed_port}") as provider:
        status = await provider.health()
    assert not status.healthy
    assert status.detail is not None
    assert f"Ollama is not running at http://127.0.0.1:{closed_port}" in status.detail
    assert "ollama serve" in status.detail


async def test_health_reports_server_errors(provider: OllamaProvider,
                                            mock: aioresponses) -> None:
    mock.get(BASE + "/api/version", status=502, body="Bad Gateway", content_type="text/plain")
    status = await provider.health()
    assert not status.healthy
    assert status.detail is not None and "HTTP 502" in status.detail
