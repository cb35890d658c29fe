"""Discovery through the entry point, and a cheap import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import modelplex_ollama
from modelplex.manager import create_provider
from modelplex.plugins import Plugins
from modelplex_ollama.options import OllamaOptions, split_options
from modelplex_ollama.provider import OllamaProvider


def test_entry_point_registers_the_provider() -> None:
    plugins = Plugins()
    assert "ollama" in plugins.provider_names()
    assert plugins.get("providers", "ollama") is OllamaProvider
    (info,) = [i for i in plugins.list_plugins() if i.name == "ollama"]
    assert info.distribution == "modelplex-ollama"
    assert info.error is None
    assert info.hooks == ["register_commands", "register_providers"]


def test_create_provider_with_configuration(modelplex_plugins: Plugins,
                                            register_plugin: Callable[..., str]) -> None:
    register_plugin(modelplex_ollama, name="ollama")
    provider = create_provider("ollama", host="gpu-box", max_parallel=2)
    assert isinstance(provider, OllamaProvider)
    assert (provider.host, provider.max_parallel) == ("http://gpu-box:11434", 2)


def test_import_is_cheap() -> None:
    code = ("import sys, modelplex_ollama; "
            "print(sorted(m for m in ('aiohttp', 'pydantic', 'modelplex_ollama.provider', "
            "'modelplex.provider') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_split_options_sends_only_what_was_set() -> None:
    assert split_options(OllamaOptions()) == ({}, {})
    top, opts = split_options(OllamaOptions(max_tokens=5, keep_alive="-1", think=False,
                                            truncate=False, num_gpu=0))
    assert top == {"keep_alive": -1, "think": False, "truncate": False}
    assert opts == {"num_predict": 5, "num_gpu": 0}
