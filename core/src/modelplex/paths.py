"""Where modelplex keeps files for the current user: the cache and the data folders.

``MODELPLEX_CACHE_DIR`` (else ``$XDG_CACHE_HOME/modelplex``, i.e. ``~/.cache/modelplex``)
holds caches that may be deleted at any time; ``MODELPLEX_DATA_DIR`` (else
``$XDG_DATA_HOME/modelplex``, i.e. ``~/.local/share/modelplex``) holds what must be kept:
conversations and logs. Both are read on every call, so tests and host apps can set them.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelplex.env import get_str

__all__ = ["cache_dir", "data_dir"]


def _dir(own: str, xdg: str, default: str) -> Path:
    explicit = get_str(own)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get(xdg) or str(Path.home() / default)
    return Path(base).expanduser() / "modelplex"


def cache_dir() -> Path:
    """The per-user cache folder (not created)."""
    return _dir("MODELPLEX_CACHE_DIR", "XDG_CACHE_HOME", ".cache")


def data_dir() -> Path:
    """The per-user data folder (not created)."""
    return _dir("MODELPLEX_DATA_DIR", "XDG_DATA_HOME", ".local/share")
