"""Fixtures for the llama.cpp provider tests: the tiny generated GGUF in a models folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplex_llamacpp.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding ``tiny.gguf``, the tiny random-weight model."""
    folder = tmp_path_factory.mktemp("models")
    write_tiny_gguf(folder / "tiny.gguf", seed=0)
    return folder
