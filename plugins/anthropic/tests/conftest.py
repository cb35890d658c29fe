"""Shared fixtures: no Anthropic settings from the developer's environment.

``mock``, ``transcript`` (from ``tests/data``) and ``sent`` come from modelplex's pytest
plugin (:mod:`modelplex.testing.pytest_plugin`).
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Anthropic settings from the developer's environment."""
    for var in list(os.environ):
        if var.startswith("ANTHROPIC_"):
            monkeypatch.delenv(var)
    return monkeypatch
