"""Settings for every test of the repository: nothing a test runs touches the user's home.

modelplex keeps conversations and logs under ``$XDG_DATA_HOME/modelplex`` and caches under
``$XDG_CACHE_HOME/modelplex``; the tests (and the ``modelplex`` processes they start, which
inherit the environment) use a fresh temporary folder for each instead, so a developer's own
log database is never written, and one left by another version never fails a test.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_user_dirs() -> Iterator[None]:
    keys = ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="modelplex-tests-") as root:
        for key in keys:
            folder = Path(root, key.lower())
            folder.mkdir()
            os.environ[key] = str(folder)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(autouse=True)
def _fresh_router_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no cooldowns. Named models share one process-wide state, keyed
    by deployment (its model and connection settings, the URL included), and a test upstream
    bound to port 0 can be given the port of an earlier test's deployment that is still
    cooling down: the new deployment would then be skipped before it was ever asked."""
    import modelplex.pipeline as pipeline
    from modelplex.routing import MemoryState

    monkeypatch.setattr(pipeline, "_memory_state", MemoryState())
