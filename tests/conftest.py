"""Cross-package tests never touch the user's own modelplex files.

Most of these tests run the ``modelplex`` command in a subprocess with the environment minus
``MODELPLEX_*`` variables, so the data and cache folders fall back to ``$XDG_DATA_HOME`` and
``$XDG_CACHE_HOME``: pointing those at a folder of the test session keeps a log database or a
cache written by another checkout (perhaps at a newer schema) out of the results.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _own_data_and_cache_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("xdg")
    saved = {name: os.environ.get(name) for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_DATA_HOME"] = str(Path(home, "data"))
    os.environ["XDG_CACHE_HOME"] = str(Path(home, "cache"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
