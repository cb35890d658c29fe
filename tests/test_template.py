"""The provider template renders packages whose own tests pass (each wire format).

A cheap guard next to ``nox -s template`` (which also runs ruff, mypy and ``modelplex
plugins`` on the rendered packages): render ``cookiecutter-provider/`` into a temporary
folder, install the package there, run its tests with this interpreter.

And issue 25's target for a wire outside the built-in list: the template rendered for a
Gemini-style API (``sse-no-end``: SSE without an end marker, the model in the path) passes
every suite with no skipped wire check, and a sloppy provider for the same API
(data/sloppy_gemini.py) fails at least 8 checks whether or not its author configured the
test upstream.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

cookiecutter_main = pytest.importorskip("cookiecutter.main")

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cookiecutter-provider"
CHOICES = [("openai-sse", "yes"), ("ndjson", "yes"), ("sse-events", "no"), ("sse-no-end", "no"),
           ("in-process", "no")]
#: The checks that do not apply to a provider without embeddings (they skip, saying so).
EMBEDDING_CHECKS = {"test_one_vector_per_text", "test_unknown_model"}


def render(out: Path, name: str, wire: str, embeddings: str, **more: str) -> Path:
    """Render the template with these choices; the rendered package's folder."""
    return Path(cookiecutter_main.cookiecutter(
        str(TEMPLATE), no_input=True, output_dir=str(out),
        extra_context={"provider_name": name, "wire_format": wire, "embeddings": embeddings,
                       **more}))


def install(packages: list[Path], site: Path) -> None:
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), *map(str, packages)],
        capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr


def pytest_env(*paths: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    env.pop("PYTEST_ADDOPTS", None)
    return env


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
    install(packages, site)
    # (the sse-no-end package's tests import its test-upstream wire from their folder)
    env = pytest_env(site, *(p / "tests" for p in packages if (p / "tests/upstream_wire.py")
                             .is_file()))
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
    with pytest.raises(FailedHookException):
        render(tmp_path, "acme", "openai-sse", "no", api_key_env="acme key")


def test_only_the_custom_wire_ships_its_upstream_wire(tmp_path: Path) -> None:
    assert not (render(tmp_path, "plain", "openai-sse", "no") / "tests/upstream_wire.py").exists()
    package = render(tmp_path, "gem", "sse-no-end", "no")
    assert (package / "tests/upstream_wire.py").is_file()
    assert (package / "noxfile.py").is_file()
    assert 'API_KEY_ENV = "GEM_API_KEY"' in (package / "src/modelplex_gem/provider.py").read_text()


# -- the target: a wire outside the built-in list ---------------------------------------------
SLOPPY_WIRED = '''
from modelplex.testing import ProviderConformanceTests
from sloppy_gemini import SloppyGeminiProvider
from upstream_wire import GeminiWire


class TestSloppyWired(ProviderConformanceTests):
    wire = GeminiWire()
    plugin = None
    fault_limit = 1.5

    def make_provider(self, base_url, *, timeouts, api_key):
        return SloppyGeminiProvider(base_url + "/v1beta", api_key=api_key)
'''

SLOPPY_UNWIRED = '''
import pytest

from modelplex.testing import ProviderConformanceTests
from sloppy_gemini import SloppyGeminiProvider


class TestSloppyUnwired(ProviderConformanceTests):
    plugin = None

    @pytest.fixture
    async def provider(self):
        async with SloppyGeminiProvider() as provider:
            yield provider

    @pytest.fixture
    def model(self):
        return "gemini-2.0-flash"
'''


def outcomes(report: Path) -> dict[tuple[str, str], str]:
    """(class, check) -> passed, failed or skipped, from a JUnit report."""
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        results[(case.attrib["classname"].rpartition(".")[2], case.attrib["name"])] = outcome
    return results


@pytest.fixture(scope="module")
def gemini(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The template rendered for a Gemini-style API, installed; its tests' PYTHONPATH."""
    out = tmp_path_factory.mktemp("gemini")
    package = render(out, "gemini", "sse-no-end", "no", display_name="Gemini",
                     api_key_env="GEMINI_API_KEY", base_url_env="GEMINI_BASE_URL")
    install([package], out / "site")
    return package, pytest_env(out / "site", package / "tests")


def run_tests(package: Path, env: dict[str, str], *paths: str) -> dict[tuple[str, str], str]:
    report = package / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-W", "ignore::ResourceWarning",
                    "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
                    f"--junitxml={report}", *paths],
                   cwd=package, env=env, capture_output=True, text=True, timeout=300,
                   check=False)
    return outcomes(report)


def test_a_gemini_style_provider_from_the_template_passes_with_no_skipped_wire_check(
        gemini: tuple[Path, dict[str, str]]) -> None:
    package, env = gemini
    results = run_tests(package, env, "tests/test_conformance.py", "tests/test_provider.py")
    failed = sorted(name for name, outcome in results.items() if outcome == "failed")
    assert not failed
    skipped = {check for (_, check), outcome in results.items() if outcome == "skipped"}
    assert skipped <= EMBEDDING_CHECKS, f"wire checks skipped: {skipped - EMBEDDING_CHECKS}"
    assert len(results) >= 45


def test_a_sloppy_gemini_provider_fails_at_least_8_checks_with_or_without_the_upstream(
        gemini: tuple[Path, dict[str, str]]) -> None:
    package, env = gemini
    shutil.copy(ROOT / "tests" / "data" / "sloppy_gemini.py", package / "tests")
    (package / "tests" / "test_sloppy_wired.py").write_text(SLOPPY_WIRED, encoding="utf-8")
    (package / "tests" / "test_sloppy_unwired.py").write_text(SLOPPY_UNWIRED, encoding="utf-8")
    results = run_tests(package, env, "tests/test_sloppy_wired.py",
                        "tests/test_sloppy_unwired.py")
    for suite in ("TestSloppyWired", "TestSloppyUnwired"):
        failed = sorted(check for (cls, check), outcome in results.items()
                        if cls == suite and outcome == "failed")
        assert len(failed) >= 8, f"{suite} fails only {failed}"
    wired_fails = {check for (cls, check), outcome in results.items()
                   if cls == "TestSloppyWired" and outcome == "failed"}
    # each of the author's mistakes is caught by a check of its own
    assert {"test_finish_reason_in_vocabulary",  # raw finish reasons
            "test_usage_only_in_final_chunk", "test_prompt_tokens_reported",  # usage dropped
            "test_options_reach_the_wire",  # stop ignored
            "test_aclose_closes_connections",  # session never closed
            "test_status_maps_to_error[429]",  # no error mapping
            "test_in_stream_error_is_raised_with_its_message"} <= wired_fails
