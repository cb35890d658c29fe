"""Development sessions for the modelplex repository.

``nox -l`` lists them. Each package is tested in its own environment: the core alone (proving
it stands without plugins), then each plugin with the core.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox
from nox.virtualenv import PassthroughEnv

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "core", "plugin", "integration"]

ROOT = Path(__file__).parent
PLUGINS = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
PACKAGES = ["core", *(f"plugins/{name}" for name in PLUGINS)]
TEST_TOOLS = ["pytest>=8", "pytest-asyncio>=0.23", "aioresponses>=0.7.6"]


def _plugin_extras(name: str) -> str:
    extras = ["test"] + (["smollm2"] if name == "llamacpp" else [])
    return f"[{','.join(extras)}]"


@nox.session
def core(session: nox.Session) -> None:
    """Test the core alone, with no plugin installed."""
    session.install("-e", "./core[test]")
    session.run("pytest", "core/tests", *session.posargs)


@nox.session
@nox.parametrize("name", PLUGINS, ids=PLUGINS)
def plugin(session: nox.Session, name: str) -> None:
    """Test one plugin with the core (the OpenAI tests need the llamacpp plugin's server)."""
    session.install("-e", "./core[test]")
    if name in ("openai", "lmstudio"):
        session.install("-e", "./plugins/llamacpp[test]")
    if name in ("lmstudio", "huggingface"):  # both build on modelplex-openai
        session.install("-e", "./plugins/openai[test]")
    if name == "server":  # served models: the embedded one and OpenAI-compatible endpoints
        session.install("-e", "./plugins/llamacpp[smollm2]", "-e", "./plugins/openai")
    session.install("-e", f"./plugins/{name}{_plugin_extras(name)}")
    session.run("pytest", f"plugins/{name}/tests", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Everything installed: discovery, the CLI end to end, the documented examples."""
    session.install("-r", "requirements-dev.txt")
    session.run("pytest", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over the core and every plugin."""
    session.install("mypy>=1.11", "-r", "requirements-dev.txt")
    session.run("mypy", "core/src", *(f"plugins/{name}/src" for name in PLUGINS))


#: The template's choices that ``nox -s template`` renders: (wire format, embeddings).
TEMPLATE_CHOICES = [("openai-sse", "yes"), ("ndjson", "yes"), ("sse-events", "no"),
                    ("sse-no-end", "no"), ("in-process", "no")]


@nox.session(default=False)
def template(session: nox.Session) -> None:
    """Render cookiecutter-provider/ for each wire format; test, lint, type-check each package.

    Every rendered package is installed next to the core; its own ``noxfile.py`` runs its
    tests, ``ruff`` and ``mypy``, and ``modelplex plugins`` must list it. With ``--no-venv``
    (as in ``.ci/run``) the current interpreter is used, which must have
    ``requirements-dev.txt`` installed.
    """
    if not isinstance(session.virtualenv, PassthroughEnv):
        session.install("-e", "./core[test]", "cookiecutter>=2.5", "ruff>=0.6", "mypy>=1.11",
                        "hatchling>=1.21", "nox>=2024.4.15")
    work = Path(session.create_tmp()).resolve() / "template"
    shutil.rmtree(work, ignore_errors=True)
    site = work / "site"
    names = [f"acme-{wire}" for wire, _ in TEMPLATE_CHOICES]
    for name, (wire, embeddings) in zip(names, TEMPLATE_CHOICES, strict=True):
        session.run("python", "-m", "cookiecutter", "--no-input", "-o", str(work),
                    str(ROOT / "cookiecutter-provider"), f"provider_name={name}",
                    f"wire_format={wire}", f"embeddings={embeddings}")
    packages = [work / f"modelplex-{name}" for name in names]
    session.run("python", "-m", "pip", "install", "--quiet", "--no-deps",
                "--no-build-isolation", "--target", str(site), *map(str, packages))
    env = {"PYTHONPATH": str(site), "MYPY_CACHE_DIR": str(work / ".mypy_cache"),
           "RUFF_NO_CACHE": "true"}
    for package in packages:  # each package's own sessions: tests, lint, typecheck
        session.chdir(package)
        session.run("python", "-m", "nox", "--no-venv", "-f", "noxfile.py", env=env)
    session.chdir(ROOT)
    listed = session.run("python", "-m", "modelplex", "plugins", env=env, silent=True) or ""
    missing = [name for name in names if name not in str(listed)]
    if missing:
        session.error(f"`modelplex plugins` does not list {missing}:\n{listed}")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The benchmark: modelplex, the openai SDK and litellm against raw aiohttp; M7, the
    openai SDK through modelplex serve against straight to the upstream (see docs)."""
    session.install("-r", "requirements-dev.txt", "openai>=1.40", "litellm>=1.50")
    session.run("python", "benchmarks/run.py", *session.posargs)
    session.run("python", "benchmarks/gateway.py", *session.posargs)  # M7: modelplex serve
    session.run("python", "benchmarks/gateway_apis.py", *session.posargs)  # M9: its other APIs
    session.run("python", "benchmarks/caches.py")  # M6: caches and conversation logging
    session.run("python", "benchmarks/telemetry.py")  # M8: the telemetry layer on and off
    session.run("python", "benchmarks/batch.py")  # M10: modelplex batch vs a semaphore loop
    session.run("python", "benchmarks/mcp_overhead.py")  # M11: an MCP tool call's overhead
    session.run("python", "benchmarks/workers.py", *session.posargs)  # #22: --workers 1 vs 2
    session.run("python", "benchmarks/limiter.py")  # #22: per-key limits in a real Redis


@nox.session(default=False)
def bench_litellm(session: nox.Session) -> None:
    """LiteLLM's proxy (litellm[proxy]) beside modelplex serve, one and two workers, against
    the same fake upstream (#22); a session of its own so nothing else needs the proxy."""
    session.install("-r", "requirements-dev.txt", "litellm[proxy]>=1.50")
    session.run("python", "benchmarks/litellm_proxy.py", *session.posargs)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build a wheel and an sdist of every package into dist/."""
    session.install("build>=1.2")
    for package in PACKAGES:
        session.run("python", "-m", "build", package, "--outdir", "dist/")


if __name__ == "__main__":
    nox.main()
