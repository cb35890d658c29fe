"""Shared fixtures: a clean environment.

``mock``, ``transcript`` (from ``tests/data``) and ``sent`` come from modelplex's pytest
plugin (:mod:`modelplex.testing.pytest_plugin`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Hugging Face or endpoint settings, and no token file, from the developer's machine."""
    for var in list(os.environ):
        if var.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_", "MODELPLEX_HF_", "TGI_",
                           "TEI_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return monkeypatch
