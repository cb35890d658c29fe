"""``import modelplex`` is cheap: no plugin, no SDK, no heavy dependency until asked for."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

HEAVY = ["llama_cpp", "openai", "anthropic", "ollama", "aiohttp", "pydantic", "gguf",
         "pluggy", "click", "numpy"]
SDKS = ["llama_cpp", "openai", "anthropic", "ollama", "gguf", "numpy"]


def run(code: str) -> Any:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_modelplex_is_light() -> None:
    result = run(f"""
        import json, sys
        before = set(sys.modules)
        import modelplex
        new = sorted(set(sys.modules) - before)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        plugins = sorted(m for m in sys.modules if m.startswith("modelplex_"))
        print(json.dumps({{"new": new, "heavy": heavy, "plugins": plugins,
                          "version": modelplex.__version__}}))
    """)
    assert result["plugins"] == []
    assert result["heavy"] == []
    assert [m for m in result["new"] if m.startswith("modelplex")] == ["modelplex",
                                                                      "modelplex.__about__"]
    from modelplex.__about__ import __version__

    assert result["version"] == __version__


def test_public_names_load_lazily() -> None:
    result = run("""
        import json, sys
        import modelplex
        from modelplex import ChatManager
        after_manager = sorted(m for m in sys.modules if m.startswith(("modelplex", "llama_cpp",
                                                                       "openai", "ollama")))
        names = dir(modelplex)
        resolved = {name: getattr(modelplex, name) is not None for name in names}
        try:
            modelplex.NoSuchThing
            missing = "no error"
        except AttributeError as err:
            missing = str(err)
        print(json.dumps({"chat_manager": ChatManager.__module__, "after": after_manager,
                          "dir": names, "resolved": resolved, "missing": missing,
                          "all": modelplex.__all__}))
    """)
    assert result["chat_manager"] == "modelplex.manager"
    assert "modelplex.manager" in result["after"]
    assert not [m for m in result["after"] if m.startswith(("modelplex_", "llama_cpp", "openai",
                                                            "ollama"))]
    public = {"ChatManager", "ChatMessage", "ChatSession", "MessageRole", "ModelInfo",
              "Provider", "StreamChunk", "Usage", "hookimpl", "ModelplexError",
              "ProviderError", "RateLimitError", "Plugins", "list_plugins", "JsonDictParser",
              "ChainOfThoughtPrompt", "MemoryCache", "__version__"}
    assert public <= set(result["dir"])
    assert result["dir"] == sorted(result["all"])
    assert all(result["resolved"].values())
    assert result["missing"] == "module 'modelplex' has no attribute 'NoSuchThing'"


def test_loading_plugins_imports_no_sdk() -> None:
    """Every installed plugin's hookimpl module imports no provider SDK."""
    result = run(f"""
        import json, sys
        from modelplex.plugins import Plugins
        plugins = Plugins()
        infos = plugins.list_plugins()
        print(json.dumps({{"plugins": [i.name for i in infos],
                          "sdks": sorted(m for m in sys.modules
                                         if m.split(".")[0] in {SDKS!r})}}))
    """)
    assert "llamacpp" in result["plugins"]
    assert result["sdks"] == []
