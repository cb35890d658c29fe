"""The provider template renders packages whose own tests pass (each wire format).

A cheap guard next to ``nox -s template`` (which also runs ruff, mypy and ``modelplex
plugins`` on the rendered packages): render ``cookiecutter-provider/`` into a temporary
folder, install the package there, run its tests with this interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

cookiecutter_main = pytest.importorskip("cookiecutter.main")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cookiecutter-provider"
CHOICES = [("openai-sse", "yes"), ("ndjson", "yes"), ("sse-events", "no"), ("in-process", "no")]


def render(out: Path, name: str, wire: str, embeddings: str) -> Path:
    """Render the template with these choices; the rendered package's folder."""
    return Path(cookiecutter_main.cookiecutter(
        str(TEMPLATE), no_input=True, output_dir=str(out),
        extra_context={"provider_name": name, "wire_format": wire, "embeddings": embeddings}))


PARTS = ("pyproject.toml", "README.md", ".github/workflows/ci.yml", "src/{pkg}/__init__.py",
         "src/{pkg}/__about__.py", "src/{pkg}/provider.py", "src/{pkg}/py.typed",
         "tests/test_conformance.py", "tests/test_provider.py")


def test_rendered_packages_pass_their_tests(tmp_path: Path) -> None:
    """One package per wire format, installed together, all their tests in one run."""
    packages = []
    for wire, embeddings in CHOICES:
        name = f"acme-{wire}"
        package = render(tmp_path, name, wire, embeddings)
        assert package.name == f"modelplex-{name}"
        pkg = f"modelplex_{name.replace('-', '_')}"
        missing = [part for part in PARTS if not (package / part.format(pkg=pkg)).is_file()]
        assert not missing, f"{wire}: {missing}"
        packages.append(package)
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), *map(str, packages)],
        capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-c", str(packages[0] / "pyproject.toml"), "--import-mode=importlib",
         *(str(p / "tests") for p in packages)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_bad_provider_name_is_refused(tmp_path: Path) -> None:
    from cookiecutter.exceptions import FailedHookException

    with pytest.raises(FailedHookException):
        render(tmp_path, "Not A Name", "openai-sse", "no")
