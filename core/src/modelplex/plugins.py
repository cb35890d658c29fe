"""Plugin discovery and the registries the hooks fill.

One :class:`Plugins` object owns a :class:`pluggy.PluginManager`. It loads the ``modelplex``
entry points lazily, once, and isolates every plugin: a plugin whose import or registration
raises is recorded with its error (see :func:`list_plugins`) while every other plugin works.
The built-in templates, parsers and caches are registered through the same hooks.

Environment:
    ``MODELPLEX_LOAD_PLUGINS``: comma-separated allow list (entry-point or distribution
    names); when set, only those plugins load (set it empty to load none).
    ``MODELPLEX_DISABLE_PLUGINS``: comma-separated block list.
"""

from __future__ import annotations

import logging
import re
import threading
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from modelplex import env, hookspecs
from modelplex.errors import PluginError, UnknownProviderError, did_you_mean, redact

if TYPE_CHECKING:
    import click

__all__ = ["PluginInfo", "Plugins", "Registration", "get_plugins", "list_plugins"]

log = logging.getLogger("modelplex.plugins")

BUILTIN_PLUGINS = ("modelplex.builtins",)
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_REGISTRY_HOOKS = {
    "providers": "register_providers",
    "prompt_templates": "register_prompt_templates",
    "parsers": "register_parsers",
    "caches": "register_caches",
    "state_backends": "register_state_backends",
    "layers": "register_layers",
}
_BELOW_LAYERS = ("provider",)  # no layer goes under the router


@attrs.define
class PluginInfo:
    """What ``modelplex plugins`` reports about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = attrs.Factory(list)
    error: str | None = None
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return attrs.asdict(self)


@attrs.define
class Registration:
    """One object a plugin registered, with where it came from."""

    obj: Any
    name: str
    plugin: str
    distribution: str | None
    position: tuple[str | None, str | None] = (None, None)  # layers: (before, after)


def _layer_problem(factory: Any, name: str, before: str | None,
                   after: str | None) -> str | None:
    """Why a layer registration is refused, or ``None``."""
    if not callable(factory):
        return f"layer {name!r} is not a callable factory(inner, context)"
    if before is not None and after is not None:
        return f"layer {name!r}: give before= or after=, not both"
    if name in ("recording", "cache", "router", "provider"):
        return f"layer name {name!r} is taken by the request path's own layer"
    if before in _BELOW_LAYERS or after in ("router", *_BELOW_LAYERS):
        return f"layer {name!r} must sit above the router (before='router' at the lowest)"
    return None


def _describe(err: BaseException) -> str:
    return redact(f"{type(err).__name__}: {err}")


def _warn_unmatched(variable: str, listed: set[str], installed: set[str]) -> None:
    """Warn about names in ``variable`` that no installed plugin has (a typo in the allow
    list silently loaded nothing, and "no model given" was all the user saw)."""
    for name in sorted(listed - installed):
        entry_points = sorted(n for n in installed if not n.startswith("modelplex-"))
        log.warning("%s names %r, which no installed plugin has%s; installed plugins: %s",
                    variable, name, did_you_mean(name, installed), ", ".join(entry_points)
                    or "none")


class Plugins:
    """The plugin manager of one modelplex process (or of one test)."""

    def __init__(self, *, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.NAME)
        self.pm.add_hookspecs(hookspecs)
        self._load_entrypoints = load_entrypoints
        self._loaded = False
        self._lock = threading.RLock()
        self._info: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, Registration]] | None = None
        self._conflicts: dict[str, list[Registration]] = {}

    # -- loading ------------------------------------------------------------------------
    def load(self) -> None:
        """Load built-ins and entry points, once. Called on first use."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for module_name in BUILTIN_PLUGINS:
                import importlib

                self._register_module(importlib.import_module(module_name),
                                      name=module_name, builtin=True)
            if self._load_entrypoints:
                self._load_entry_points()

    def _load_entry_points(self) -> None:
        allow = env.name_list("MODELPLEX_LOAD_PLUGINS")
        block = env.name_list("MODELPLEX_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in metadata.entry_points(group=hookspecs.NAME):
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            names = {ep.name, dist_name} - {None}
            seen |= {str(n) for n in names}
            if allow is not None and not names & allow:
                continue
            if names & block or ep.name in self._info:
                continue
            info = PluginInfo(name=ep.name, distribution=dist_name,
                              version=dist.version if dist is not None else None)
            self._info[ep.name] = info
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as err:  # a broken plugin must not take the others down
                info.error = f"failed to load: {_describe(err)}"
                log.warning("modelplex plugin %s %s", ep.name, info.error)
                continue
            info.hooks = self._hook_names(plugin)
        _warn_unmatched("MODELPLEX_LOAD_PLUGINS", allow or set(), seen)

    def _register_module(self, plugin: Any, *, name: str, builtin: bool = False,
                         distribution: str | None = None, version: str | None = None) -> None:
        self.pm.register(plugin, name=name)
        self._info[name] = PluginInfo(name=name, distribution=distribution, version=version,
                                      hooks=self._hook_names(plugin), builtin=builtin)
        self._registries = None

    def _hook_names(self, plugin: Any) -> list[str]:
        callers = self.pm.get_hookcallers(plugin) or []
        return sorted(caller.name for caller in callers)

    # -- registering for tests and host apps ----------------------------------------------
    def register(self, plugin: ModuleType | object, name: str | None = None) -> str:
        """Register a plugin object (a module or class with hookimpls); returns its name."""
        self.load()
        with self._lock:
            plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
            self._register_module(plugin, name=plugin_name)
            return plugin_name

    def unregister(self, name: str) -> None:
        """Remove a plugin registered with :meth:`register`."""
        with self._lock:
            self.pm.unregister(name=name)
            self._info.pop(name, None)
            self._registries = None

    # -- registries -----------------------------------------------------------------------
    def _build_registries(self) -> dict[str, dict[str, Registration]]:
        built = self._registries
        if built is not None and self._loaded:  # built already: every request path asks
            return built
        self.load()
        with self._lock:
            if self._registries is not None:
                return self._registries
            registries: dict[str, dict[str, Registration]] = {}
            self._conflicts = {}
            for info in self._info.values():  # recomputed below; load and CLI errors stay
                if info.error and not info.error.startswith(
                        ("failed to load", "registration failed in register_commands")):
                    info.error = None
            for kind, hook_name in _REGISTRY_HOOKS.items():
                registries[kind] = self._collect(kind, hook_name)
            self._registries = registries
            return registries

    def _collect(self, kind: str, hook_name: str) -> dict[str, Registration]:
        registry: dict[str, Registration] = {}
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order
            info = self._info.get(impl.plugin_name)
            staged: list[Registration] = []
            bad: list[str] = []

            def register(obj: Any, /, *, name: str | None = None,
                         before: str | None = None, after: str | None = None,
                         _staged: list[Registration] = staged, _bad: list[str] = bad,
                         _plugin: str = impl.plugin_name, _kind: str = kind,
                         _dist: str | None = info.distribution if info else None) -> None:
                reg_name = name or getattr(obj, "name", None)
                if not isinstance(reg_name, str) or not reg_name:
                    raise PluginError(f"{obj!r} has no name: give it a `name` attribute "
                                      "or call register(obj, name=...)")
                if _kind != "layers" and (before is not None or after is not None):
                    raise PluginError("only register_layers takes before= or after=")
                if _kind == "layers":
                    problem = _layer_problem(obj, reg_name, before, after)
                    if problem:
                        _bad.append(problem)
                        return
                    _staged.append(Registration(obj, reg_name, _plugin, _dist,
                                                (before, after)))
                    return
                if kind == "providers" and not _PROVIDER_NAME.match(reg_name):
                    # 'a:b' could never be chosen ('a:b:model' means provider 'a'): refuse it
                    # loudly, keep the plugin's other registrations
                    _bad.append(f"provider name {reg_name!r} is not valid: use letters, digits, "
                               "'.', '_' and '-' (no ':' or spaces)")
                    return
                _staged.append(Registration(obj, reg_name, _plugin, _dist))

            try:
                impl.function(**dict.fromkeys(impl.argnames, register))
            except Exception as err:
                message = f"registration failed in {hook_name}: {_describe(err)}"
                log.warning("modelplex plugin %s %s", impl.plugin_name, message)
                if info is not None:
                    info.error = message
                continue
            if bad:
                message = "; ".join(bad)
                log.warning("modelplex plugin %s: %s", impl.plugin_name, message)
                if info is not None:
                    info.error = message
            for reg in staged:
                existing = registry.get(reg.name)
                if existing is not None and existing.plugin != reg.plugin:
                    self._conflicts.setdefault(f"{kind}:{reg.name}", [existing]).append(reg)
                    self._note_conflict(kind, reg.name)
                    continue
                registry[reg.name] = reg
        return registry

    def _note_conflict(self, kind: str, name: str) -> None:
        message = self._conflict_message(kind, name)
        for reg in self._conflicts[f"{kind}:{name}"]:
            info = self._info.get(reg.plugin)
            if info is not None:
                info.error = message

    def _conflict_message(self, kind: str, name: str) -> str:
        regs = self._conflicts[f"{kind}:{name}"]
        who = " and ".join(r.distribution or r.plugin for r in regs)
        return (f"{kind[:-1].replace('_', ' ')} name {name!r} is registered by both {who}; "
                "uninstall one of them or block one with MODELPLEX_DISABLE_PLUGINS")

    def registry(self, kind: str) -> dict[str, Registration]:
        """The registrations of one kind: providers, prompt_templates, parsers, caches,
        state_backends or layers."""
        return self._build_registries()[kind]

    def get(self, kind: str, name: str) -> Any:
        """The object registered under ``name``; raises a clear error when there is none."""
        registries = self._build_registries()
        if f"{kind}:{name}" in self._conflicts:
            raise PluginError(self._conflict_message(kind, name))
        reg = registries[kind].get(name)
        if reg is None:
            if kind == "providers":
                self._raise_if_broken(name)
                raise UnknownProviderError(name, sorted(registries[kind]))
            raise PluginError(f"no {kind[:-1].replace('_', ' ')} named {name!r}"
                              f"{did_you_mean(name, registries[kind])}; "
                              f"available: {', '.join(sorted(registries[kind])) or 'none'}")
        return reg.obj

    def _raise_if_broken(self, name: str) -> None:
        """A provider missing because its installed plugin failed: say that, not "install"."""
        for info in self._info.values():
            if info.error and (info.name == name or info.distribution == f"modelplex-{name}"):
                raise PluginError(f"provider {name!r} is unavailable: its plugin "
                                  f"{info.distribution or info.name!r} is installed but "
                                  f"{info.error}. `modelplex plugins` lists it")

    def provider_names(self) -> list[str]:
        """Names of every usable provider, sorted."""
        return sorted(self.registry("providers"))

    def add_commands(self, cli: click.Group) -> None:
        """Let plugins add CLI subcommands; a plugin that fails is reported, not fatal."""
        self.load()
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(**dict.fromkeys(impl.argnames, cli))
            except Exception as err:
                info = self._info.get(impl.plugin_name)
                if info is not None:
                    info.error = f"registration failed in register_commands: {_describe(err)}"

    def list_plugins(self, *, include_builtins: bool = False) -> list[PluginInfo]:
        """Every plugin with its version, hooks and load error (if any)."""
        self._build_registries()
        return [info for info in self._info.values() if include_builtins or not info.builtin]


_default: Plugins | None = None
_default_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide :class:`Plugins`, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Plugins()
    return _default


def set_plugins(plugins: Plugins | None) -> Plugins | None:
    """Replace the process-wide :class:`Plugins` (tests use this); returns the old one."""
    global _default
    old, _default = _default, plugins
    return old


def list_plugins(*, include_builtins: bool = False) -> list[PluginInfo]:
    """Every installed plugin with name, version, hooks and load error."""
    return get_plugins().list_plugins(include_builtins=include_builtins)
