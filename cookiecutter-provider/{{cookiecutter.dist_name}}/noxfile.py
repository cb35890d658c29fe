"""Sessions for {{ cookiecutter.dist_name }}: ``nox`` runs the tests, ruff and mypy.

``nox -s tests`` runs the tests (modelplex's conformance suites included) in a fresh
virtualenv; with ``--no-venv`` the current interpreter is used as it is (the package and its
``test`` extra installed).
"""

from __future__ import annotations

import nox
from nox.virtualenv import PassthroughEnv

nox.options.sessions = ["tests", "lint", "typecheck"]


def _install(session: nox.Session) -> None:
    if not isinstance(session.virtualenv, PassthroughEnv):
        session.install("-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    """The tests, with every skip's reason in the summary."""
    _install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package and its tests."""
    _install(session)
    session.run("python", "-m", "ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict."""
    _install(session)
    session.run("python", "-m", "mypy")
