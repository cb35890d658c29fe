"""The names seed code uses (issue 25): ModelConfig, initialize()/cleanup(), bare model names,
ChatError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import modelplex
import modelplex.types
from modelplex import ChatManager
from modelplex.config import Config
from modelplex.errors import ChatError, ConfigurationError, ModelplexError
from modelplex.plugins import Plugins


def test_model_config_importable_and_validated() -> None:
    assert modelplex.ModelConfig is modelplex.types.ModelConfig
    config = modelplex.ModelConfig(name="codellama", context_length=4096, temperature=0.7)
    assert config.request_options() == {"temperature": 0.7}
    with pytest.raises(ValueError, match="context_length"):
        modelplex.ModelConfig(name="x", context_length=0)


async def test_chat_manager_accepts_a_model_config(fake_plugins: Plugins) -> None:
    config = modelplex.ModelConfig(name="fake:echo", context_length=4096, temperature=0.7)
    async with ChatManager(config, plugins=fake_plugins, config=Config()) as chat:
        assert chat.model_config is config
        assert chat.session.temperature == 0.7
        reply = await chat.send_message("hi")
        assert reply.model_name == "echo"


def test_chat_manager_refuses_other_objects() -> None:
    with pytest.raises(ConfigurationError, match="ModelConfig"):
        ChatManager(42)  # type: ignore[arg-type]


async def test_initialize_and_cleanup(fake_plugins: Plugins, fake_plugin: Any) -> None:
    chat = ChatManager("fake:echo", plugins=fake_plugins, config=Config())
    session = await chat.initialize()
    assert session.model == "echo"
    await chat.cleanup()
    assert fake_plugin.created and all(p.closed for p in fake_plugin.created)


async def test_bare_model_name_resolves_to_the_one_provider_listing_it(
        fake_plugins: Plugins) -> None:
    async with ChatManager(plugins=fake_plugins, config=Config()) as chat:
        await chat.initialize_model("other")
        assert chat.session.provider == "fake"
        reply = await chat.send_message("hi")
        assert reply.model_name == "other"  # the name asked for


async def test_bare_model_name_listed_twice_names_the_candidates(
        fake_plugins: Plugins, make_plugin: Callable[..., Any]) -> None:
    fake_plugins.register(make_plugin("twin"), name="twin-plugin")
    async with ChatManager(plugins=fake_plugins, config=Config()) as chat:
        with pytest.raises(ConfigurationError, match="fake:other, twin:other"):
            await chat.initialize_model("other")


async def test_bare_model_name_nobody_lists(fake_plugins: Plugins) -> None:
    async with ChatManager(plugins=fake_plugins, config=Config()) as chat:
        with pytest.raises(ConfigurationError, match="no installed provider lists it"):
            await chat.initialize_model("llama2")


def test_chat_error_carries_context() -> None:
    err = ChatError("failed", {"model": "x"})
    assert isinstance(err, ModelplexError)
    assert err.context == {"model": "x"} and str(err) == "failed"
    assert ChatError("bare").context == {}
    assert modelplex.ChatError is ChatError


def test_yaml_config_file(tmp_path: Any) -> None:
    from modelplex.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text("providers:\n  ollama:\n    host: http://gpu-box:11434\n"
                    "models:\n  fast:\n    model: ollama:llama3.2\n")
    config = load_config(path, apply_env=False)
    assert config.providers["ollama"]["host"] == "http://gpu-box:11434"
    assert "fast" in config.models
    (tmp_path / "empty.yml").write_text("")
    assert load_config(tmp_path / "empty.yml", apply_env=False).models == {}
    (tmp_path / "bad.yaml").write_text("providers: [unclosed\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml", apply_env=False)
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigurationError, match="top level"):
        load_config(tmp_path / "list.yaml", apply_env=False)


def test_yaml_without_pyyaml_names_the_extra(tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from modelplex.config import load_config

    monkeypatch.setitem(sys.modules, "yaml", None)
    path = tmp_path / "config.yaml"
    path.write_text("models: {}\n")
    with pytest.raises(ConfigurationError, match=r"modelplex\[yaml\]"):
        load_config(path, apply_env=False)


async def test_provider_initialize_is_its_health(fake_plugins: Plugins) -> None:
    from modelplex import create_provider, get_available_providers

    provider = create_provider("fake", {"models": ("a",)}, plugins=fake_plugins)
    assert await provider.initialize() is True
    assert "fake" in get_available_providers(fake_plugins)


def test_task_updated_at_not_before_created_at() -> None:
    from datetime import UTC, datetime, timedelta

    from pydantic import ValidationError

    from modelplex.types import Task

    now = datetime.now(UTC)
    Task(name="pull", created_at=now, updated_at=now)
    with pytest.raises(ValidationError, match="before created_at"):
        Task(name="pull", created_at=now, updated_at=now - timedelta(seconds=1))
    task = Task(name="pull", created_at=now, updated_at=now)
    with pytest.raises(ValidationError, match="before created_at"):
        task.updated_at = now - timedelta(days=1)


def test_model_size_categories_and_conversion() -> None:
    from modelplex.types import ModelInfo, ModelSize

    assert modelplex.ModelSize is ModelSize
    assert ModelSize.to_gb(2_500_000_000) == 2.5
    assert ModelSize.to_bytes(4.1) == 4_100_000_000
    assert ModelSize.of(ModelSize.to_bytes(4.9)) is ModelSize.SMALL
    assert ModelSize.of(ModelSize.to_bytes(5)) is ModelSize.MEDIUM
    assert ModelSize.of(ModelSize.to_bytes(20)) is ModelSize.MEDIUM
    assert ModelSize.of(ModelSize.to_bytes(40)) is ModelSize.LARGE
    assert ModelSize.of(ModelInfo(id="a:b", name="b", provider="a")) is None
    with pytest.raises(ValueError, match="negative"):
        ModelSize.to_gb(-1)


async def test_registry_search_by_size_and_model_exists(fake_plugins: Plugins,
                                                        fake_cls: Any) -> None:
    from modelplex.registry import ModelRegistry
    from modelplex.types import ModelInfo, ModelSize

    sizes = {"tiny": 1_000_000_000, "mid": 8_000_000_000, "big": 70_000_000_000}

    class Sized(fake_cls):  # type: ignore[misc,valid-type]
        async def list_models(self) -> list[ModelInfo]:
            return [ModelInfo(id=f"fake:{m}", name=m, provider="fake", size_bytes=n)
                    for m, n in sizes.items()]

    async with ModelRegistry(get_provider=lambda name: Sized(), providers=["fake"]) as registry:
        small = await registry.search(size="small")
        assert [m.name for m in small] == ["tiny"]
        found = await registry.search(size=[ModelSize.MEDIUM, ModelSize.LARGE])
        assert [m.name for m in found] == ["mid", "big"]
        assert await registry.model_exists("fake:mid")
        assert not await registry.model_exists("fake:nope")
    provider = Sized()
    assert await provider.model_exists("big")
    assert not await provider.model_exists("huge")


def test_json_parsers_under_the_seed_path() -> None:
    from modelplex.parsers import JsonDictParser
    from modelplex.parsers.json_parsers import JsonDictParser as SeedParser

    assert SeedParser is JsonDictParser
    parser = SeedParser(required_keys=["name"])
    assert parser.parse('{"name": "x"}').parsed == {"name": "x"}


class _Blocking(modelplex.ModelAdapterBase):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import threading

        return ("sync", args, kwargs, threading.current_thread().name)


class _Async(modelplex.ModelAdapterBase):
    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return ("async", args, kwargs)


async def test_adapter_base_acall_runs_a_blocking_adapter_in_an_executor() -> None:
    import threading

    kind, args, kwargs, thread = await _Blocking().acall([{"role": "user"}], temperature=0)
    assert (kind, args, kwargs) == ("sync", ([{"role": "user"}],), {"temperature": 0})
    assert thread != threading.current_thread().name
    with pytest.raises(ModelplexError, match=r"await model\.acall"):
        _Async()("x")


def test_adapter_base_call_runs_an_async_adapter() -> None:
    assert _Async()("x", k=1) == ("async", ("x",), {"k": 1})
    assert _Async().format(modelplex.UserMessage("hi")) == [{"role": "user", "content": "hi"}]
    with pytest.raises(NotImplementedError, match="neither"):
        modelplex.ModelAdapterBase()()
