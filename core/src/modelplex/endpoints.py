"""Named endpoints: a plugin's table of servers, each registered as a provider name of its own.

A plugin whose provider talks to many servers of one kind (every OpenAI-compatible server,
Hugging Face's TGI and TEI servers) lets users name each of them; ``NAME:model`` then reaches
that server. The table is read from, in order (a later source replaces an earlier endpoint of
the same name):

1. the plugin's config file: ``$<config_env>``, else ``$XDG_CONFIG_HOME/modelplex/<filename>``
   (``~/.config/modelplex/<filename>``); TOML, or JSON when the name ends in ``.json``;
2. the plugin's environment variable ``<endpoints_env>`` (JSON).

Both hold one table per endpoint name, whose settings are the provider's constructor keywords
(those of :class:`~modelplex.http_provider.HttpProvider` plus ``api_key_env`` and the plugin's
own)::

    [vllm]
    base_url = "http://gpu-box:8000/v1"
    api_key_env = "VLLM_API_KEY"
    timeouts = { connect = 5, first_byte = 300 }

A plugin describes its table once with :class:`EndpointTable` and registers one provider per
:class:`Endpoint` that :meth:`EndpointTable.load` returns; an endpoint with a problem comes
back with ``error`` set, so the plugin can register a factory that raises it when used while
the others stay usable. A source that cannot be read or parsed raises
:class:`~modelplex.errors.ConfigurationError`. This module imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import attrs

from modelplex.errors import ConfigurationError

__all__ = ["COMMON_SETTINGS", "Endpoint", "EndpointTable"]

#: The settings every endpoint may have: the HTTP provider's keywords and ``api_key_env``.
COMMON_SETTINGS = ("base_url", "api_key_env", "api_key", "headers", "default_model",
                   "verify_tls", "timeouts")
_STRINGS = ("base_url", "api_key_env", "api_key", "default_model")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@attrs.frozen
class Endpoint:
    """One configured endpoint, or the reason it cannot be used (``error``).

    ``settings`` holds what the user wrote for it (never shown in its repr: it may hold a
    key); ``source`` where (a file path or the variable's name).
    """

    name: str
    source: str
    settings: dict[str, Any] = attrs.field(factory=dict, repr=False)
    error: str | None = None

    def get(self, setting: str, default: Any = None) -> Any:
        """One setting, or ``default`` when the endpoint does not set it."""
        return self.settings.get(setting, default)

    # the common settings by name, as the user wrote them (or their defaults)
    @property
    def base_url(self) -> str | None:
        """The API root, if set."""
        return self.settings.get("base_url")

    @property
    def api_key_env(self) -> str | None:
        """The variable holding the key, if set."""
        return self.settings.get("api_key_env")

    @property
    def api_key(self) -> str | None:
        """A literal key, if set."""
        return self.settings.get("api_key")

    @property
    def headers(self) -> dict[str, str]:
        """More headers for every request (empty when not set)."""
        return dict(self.settings.get("headers") or {})

    @property
    def default_model(self) -> str | None:
        """The model used when only the endpoint is named, if set."""
        return self.settings.get("default_model")

    @property
    def verify_tls(self) -> bool:
        """Whether certificates are checked (default true)."""
        return bool(self.settings.get("verify_tls", True))

    @property
    def timeouts(self) -> Any:
        """The timeouts as written (a number or a table), if set."""
        return self.settings.get("timeouts")

    def provider_kwargs(self, exclude: Collection[str] = ()) -> dict[str, Any]:
        """Keyword arguments for the provider: the settings (less ``exclude``), the endpoint's
        ``name`` and ``config_source``."""
        kwargs = {k: v for k, v in self.settings.items() if k not in exclude}
        kwargs["name"] = self.name
        kwargs["config_source"] = self.source
        return kwargs


#: A plugin's own check of one endpoint's settings: the problem, or ``None``.
Check = Callable[[str, Mapping[str, Any]], str | None]


@attrs.frozen
class EndpointTable:
    """Where a plugin's endpoint table lives and what its endpoints may hold.

    Args:
        plugin: the distribution, for messages (``modelplex-openai``).
        filename: the config file's name under ``$XDG_CONFIG_HOME/modelplex/``.
        config_env: the variable naming another config file.
        endpoints_env: the variable holding the table as JSON.
        settings: the settings allowed besides :data:`COMMON_SETTINGS`.
        strings: which of those must be strings.
        check: the plugin's own rules (a required ``base_url``, a ``kind``), run after the
            common ones.
        example: one endpoint as JSON, shown when a source has the wrong shape.
        such_as: the settings named when an endpoint is not a table.
    """

    plugin: str
    filename: str
    config_env: str
    endpoints_env: str
    settings: tuple[str, ...] = ()
    strings: tuple[str, ...] = ()
    check: Check | None = None
    example: str = '{"NAME": {"base_url": "http://host:8000"}}'
    such_as: str = "base_url"

    @property
    def keys(self) -> frozenset[str]:
        """Every setting an endpoint may have."""
        return frozenset(COMMON_SETTINGS) | frozenset(self.settings)

    def config_path(self) -> Path:
        """Where the config file is looked for."""
        explicit = os.environ.get(self.config_env)
        if explicit:
            return Path(explicit).expanduser()
        base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
        return Path(base).expanduser() / "modelplex" / self.filename

    def load(self) -> list[Endpoint]:
        """Every configured endpoint, the environment variable's replacing the file's.

        A source that cannot be read or parsed raises :class:`ConfigurationError`; a
        malformed endpoint is returned with ``error`` set so that the others stay usable.
        """
        found: dict[str, Endpoint] = {}
        path = self.config_path()
        if os.environ.get(self.config_env) or path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as err:
                raise ConfigurationError(f"cannot read the {self.plugin} config {path}: "
                                         f"{err.strerror or err}") from None
            data = self._parse(text, f"the {self.plugin} config {path}",
                               as_json=path.suffix == ".json",
                               shape="must hold one table per endpoint name")
            for name, table in data.items():
                found[name] = self.endpoint(name, table, str(path))
        raw = os.environ.get(self.endpoints_env, "").strip()
        if raw:
            data = self._parse(raw, self.endpoints_env, as_json=True,
                               shape="must be a JSON object with one table per endpoint name")
            for name, table in data.items():
                found[name] = self.endpoint(name, table, self.endpoints_env)
        return list(found.values())

    def _parse(self, text: str, where: str, *, as_json: bool, shape: str) -> dict[str, Any]:
        try:
            data = json.loads(text) if as_json else tomllib.loads(text)
        except ValueError as err:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            raise ConfigurationError(f"{where} is not valid {'JSON' if as_json else 'TOML'}: "
                                     f"{err}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{where} {shape}, like {self.example}")
        return data

    def endpoint(self, name: str, table: Any, source: str) -> Endpoint:
        """One endpoint from its table, checked: ``error`` says what is wrong, if anything."""
        problem = self._problem(name, table)
        if problem is not None:
            return Endpoint(name=name, source=source,
                            error=f"endpoint {name!r} in {source}: {problem}")
        return Endpoint(name=name, source=source, settings=dict(table))

    def _problem(self, name: str, table: Any) -> str | None:
        if not _NAME.match(name):
            return "names may hold only letters, digits, '.', '_' and '-' (no ':')"
        if not isinstance(table, dict):
            return f"must be a table of settings such as {self.such_as}"
        keys = self.keys
        unknown = sorted(set(table) - keys)
        if unknown:
            return f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(keys))}"
        for key in (*_STRINGS, *self.strings):
            if key in table and not isinstance(table[key], str):
                return f"{key} must be a string"
        headers = table.get("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            return "headers must map header names to string values"
        if not isinstance(table.get("verify_tls", True), bool):
            return "verify_tls must be true or false"
        if "timeouts" in table:
            # imported here: reading the table happens at plugin registration, which stays
            # free of aiohttp until a provider is built
            from modelplex.http import Timeouts

            try:
                Timeouts.parse(table["timeouts"], field="timeouts")
            except ConfigurationError as err:
                return str(err)
        base_url = table.get("base_url")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            return f"base_url must start with http:// or https:// (got {base_url!r})"
        return self.check(name, table) if self.check is not None else None
