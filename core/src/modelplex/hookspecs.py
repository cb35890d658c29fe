"""The plugin hooks of modelplex.

A plugin is a module, named by an entry point in the ``modelplex`` group, that implements some
of these hooks with the :data:`hookimpl` marker::

    # pyproject.toml
    [project.entry-points.modelplex]
    myprovider = "modelplex_myprovider"

    # modelplex_myprovider/__init__.py
    from modelplex import hookimpl

    @hookimpl
    def register_providers(register):
        from modelplex_myprovider.provider import MyProvider  # import lazily
        register(MyProvider)

Every hook is register-callback style: it receives a ``register`` function (or the CLI group)
and calls it. Hooks may gain arguments in later versions; an implementation may accept fewer
arguments than the spec, and modelplex always calls hooks with keywords.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import click

__all__ = [
    "NAME",
    "Register",
    "RegisterLayer",
    "hookimpl",
    "register_caches",
    "register_commands",
    "register_layers",
    "register_parsers",
    "register_prompt_templates",
    "register_providers",
    "register_state_backends",
]

NAME = "modelplex"
"""The project name: the entry-point group and the pluggy marker name."""

hookimpl = pluggy.HookimplMarker(NAME)
"""Marker for hook implementations: decorate your hook functions with ``@hookimpl``."""

_hookspec = pluggy.HookspecMarker(NAME)


class Register(Protocol):
    """The callback a ``register_*`` hook receives."""

    def __call__(self, obj: Any, /, *, name: str | None = None) -> None: ...


@_hookspec
def register_providers(register: Register) -> None:
    """Register provider classes.

    Call ``register(ProviderClass)`` for each :class:`modelplex.Provider` subclass the plugin
    offers; it is registered under ``ProviderClass.name``. ``register(factory, name="x")``
    registers any callable that takes keyword configuration and returns a provider, under
    another name (the OpenAI plugin registers one name per configured endpoint this way).
    Two plugins registering the same name is an error that names both distributions.
    """


@_hookspec
def register_prompt_templates(register: Register) -> None:
    """Register prompt templates.

    Call ``register(TemplateClass)`` for each :class:`modelplex.prompts.PromptTemplate`
    subclass, registered under its ``name`` attribute (or ``name=``).
    """


@_hookspec
def register_parsers(register: Register) -> None:
    """Register structured-output parsers.

    Call ``register(ParserClass)`` for each :class:`modelplex.parsers.Parser` subclass,
    registered under its ``name`` attribute (or ``name=``).
    """


@_hookspec
def register_caches(register: Register) -> None:
    """Register response cache backends.

    Call ``register(CacheClass)`` for each :class:`modelplex.caches.Cache` subclass,
    registered under its ``name`` attribute (or ``name=``).
    """


@_hookspec
def register_state_backends(register: Register) -> None:
    """Register backends for the router's shared state.

    Call ``register(StateClass, name="x")`` for each :class:`modelplex.routing.RouterState`
    subclass (or a callable taking keyword configuration and returning one); the config file's
    ``state = {backend = "x", ...}`` builds it with the section's other keys. Built in:
    ``memory``; ``modelplex-redis`` registers ``redis``.
    """


class RegisterLayer(Protocol):
    """The callback ``register_layers`` receives."""

    def __call__(self, factory: Any, /, *, name: str, before: str | None = None,
                 after: str | None = None) -> None: ...


@_hookspec
def register_layers(register: RegisterLayer) -> None:
    """Add a layer to the request path of every stack (chat, CLI, server, compat).

    Call ``register(factory, name="x", before="cache")`` (or ``after="recording"``);
    ``factory(inner, context)`` gets the provider below and a
    :class:`modelplex.wrapping.LayerContext` and returns the layer, usually a
    :class:`modelplex.wrapping.WrappingProvider` subclass, or ``None`` to stay out of that
    stack. The path is ``modelplex.pipeline.PATH``: recording, telemetry, cache, router,
    provider; a layer named ``"telemetry"`` fills that slot, others go next to the name they
    give, or just above the router when they give none.
    """


@_hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``modelplex`` command.

    ``cli`` is the top-level :class:`click.Group`; add commands with ``@cli.command()`` or
    ``cli.add_command(...)``. Import heavy modules inside the command function, not here.
    """
