"""Shared fixtures: a clean environment.

Replayed LM Studio traffic (protocols.md §5) uses ``mock``, ``transcript`` (from
``tests/data``) and ``sent`` from modelplex's pytest plugin
(:mod:`modelplex.testing.pytest_plugin`).
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LM Studio or OpenAI settings from the developer's environment."""
    for var in list(os.environ):
        if var.startswith(("OPENAI_", "LMSTUDIO_", "LM_API_")):
            monkeypatch.delenv(var)
    return monkeypatch
