"""{{ cookiecutter.dist_name }}: the ``{{ cookiecutter.provider_name }}`` provider for modelplex.

This module is what the ``modelplex`` entry point names. It implements the hook and does
nothing else at import time: no I/O, no heavy import, so ``modelplex plugins`` and
``import modelplex`` stay fast however many plugins are installed.
"""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl
from {{ cookiecutter.package_name }}.__about__ import __version__

__all__ = ["__version__", "register_providers"]


@hookimpl
def register_providers(register: Register) -> None:
    """Register the ``{{ cookiecutter.provider_name }}`` provider."""
    from {{ cookiecutter.package_name }}.provider import {{ cookiecutter.class_prefix }}Provider

    register({{ cookiecutter.class_prefix }}Provider)
