"""Finding the Hugging Face token the way the ``huggingface_hub`` client does.

In order: ``$HF_TOKEN``, ``$HUGGING_FACE_HUB_TOKEN`` (older name), ``$HUGGINGFACE_API_KEY`` (the
name seed 003 and other tools use), then the token file written
by ``hf auth login``: ``$HF_TOKEN_PATH``, else ``$HF_HOME/token``, else
``~/.cache/huggingface/token`` (``$XDG_CACHE_HOME/huggingface/token`` when that is set).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TOKEN_ENVS", "hf_token", "token_path"]

TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_API_KEY")


def token_path() -> Path:
    """Where the hub's token file is looked for."""
    env = os.environ
    if env.get("HF_TOKEN_PATH"):
        return Path(env["HF_TOKEN_PATH"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "token"
    cache = env.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "huggingface" / "token"


def hf_token() -> tuple[str | None, str | None]:
    """``(token, where it came from)``, or ``(None, None)`` when there is none."""
    for name in TOKEN_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return value, name
    path = token_path()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None, None
    return (value, str(path)) if value else (None, None)
