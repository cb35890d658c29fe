"""Named endpoints: the OpenAI-compatible servers this installation talks to.

Each endpoint becomes a provider name usable as ``NAME:model``. Endpoints come from, in order
(a later source replaces an earlier endpoint of the same name):

1. the config file: ``$MODELPLEX_OPENAI_CONFIG``, else ``$XDG_CONFIG_HOME/modelplex/openai.toml``
   (``~/.config/modelplex/openai.toml``); TOML, or JSON when the name ends in ``.json``;
2. the ``MODELPLEX_OPENAI_ENDPOINTS`` environment variable (JSON).

Both hold one table per endpoint name::

    [vllm]
    base_url = "http://gpu-box:8000/v1"
    api_key_env = "VLLM_API_KEY"          # the variable holding the key (optional)
    default_model = "meta-llama/Llama-3.1-8B-Instruct"
    headers = { "X-Team" = "research" }
    timeouts = { connect = 5, first_byte = 300 }   # or a number: the total per request

Keys: ``base_url`` (required, except for ``openai``), ``api_key_env``, ``api_key`` (a literal
key; prefer ``api_key_env``), ``headers``, ``default_model``, ``verify_tls``, ``timeouts``
(as :meth:`modelplex.http.Timeouts.parse` reads them). This module only reads configuration;
it imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from modelplex.errors import ConfigurationError

__all__ = ["CONFIG_ENV", "ENDPOINTS_ENV", "Endpoint", "config_path", "load_endpoints"]

ENDPOINTS_ENV = "MODELPLEX_OPENAI_ENDPOINTS"
CONFIG_ENV = "MODELPLEX_OPENAI_CONFIG"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_KEYS = {"base_url", "api_key_env", "api_key", "headers", "default_model", "verify_tls",
         "timeouts"}


@attrs.frozen
class Endpoint:
    """One configured endpoint, or the reason it cannot be used (``error``)."""

    name: str
    source: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    headers: dict[str, str] = attrs.Factory(dict)
    default_model: str | None = None
    verify_tls: bool = True
    timeouts: Any = None
    error: str | None = None

    def provider_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~modelplex_openai.provider.OpenAIProvider`."""
        kwargs: dict[str, Any] = {"name": self.name, "config_source": self.source}
        for key in ("base_url", "api_key_env", "api_key", "default_model"):
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = value
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        if not self.verify_tls:
            kwargs["verify_tls"] = False
        if self.timeouts is not None:
            kwargs["timeouts"] = self.timeouts
        return kwargs


def config_path() -> Path:
    """Where the config file is looked for."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "modelplex" / "openai.toml"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigurationError(f"cannot read the modelplex-openai config {path}: "
                                 f"{err.strerror or err}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except ValueError as err:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigurationError(f"the modelplex-openai config {path} is not valid "
                                 f"{'JSON' if path.suffix == '.json' else 'TOML'}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"the modelplex-openai config {path} must hold one table per "
                                 "endpoint name")
    return data


def _read_env(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise ConfigurationError(f"{ENDPOINTS_ENV} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f'{ENDPOINTS_ENV} must be a JSON object like '
                                 '{"vllm": {"base_url": "http://host:8000/v1"}}')
    return data


def _check(name: str, table: Any, source: str) -> Endpoint:
    def broken(problem: str) -> Endpoint:
        return Endpoint(name=name, source=source, error=f"endpoint {name!r} in {source}: {problem}")

    if not _NAME.match(name):
        return broken("names may hold only letters, digits, '.', '_' and '-' (no ':')")
    if not isinstance(table, dict):
        return broken("must be a table of settings such as base_url")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        return broken(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    for key in ("base_url", "api_key_env", "api_key", "default_model"):
        if key in table and not isinstance(table[key], str):
            return broken(f"{key} must be a string")
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        return broken("headers must map header names to string values")
    if not isinstance(table.get("verify_tls", True), bool):
        return broken("verify_tls must be true or false")
    if "timeouts" in table:
        from modelplex.http import Timeouts  # light: aiohttp is imported by the provider anyway

        try:
            Timeouts.parse(table["timeouts"], field="timeouts")
        except ConfigurationError as err:
            return broken(str(err))
    base_url = table.get("base_url")
    if base_url is None and name != "openai":
        return broken('base_url is required, e.g. base_url = "http://localhost:8000/v1"')
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        return broken(f"base_url must start with http:// or https:// (got {base_url!r})")
    return Endpoint(name=name, source=source, base_url=base_url,
                    api_key_env=table.get("api_key_env"), api_key=table.get("api_key"),
                    headers=dict(headers), default_model=table.get("default_model"),
                    verify_tls=table.get("verify_tls", True), timeouts=table.get("timeouts"))


def load_endpoints() -> list[Endpoint]:
    """Every configured endpoint, the environment variable's replacing the file's.

    A malformed source raises :class:`ConfigurationError`; a malformed endpoint is returned
    with ``error`` set so that the others stay usable.
    """
    found: dict[str, Endpoint] = {}
    path = config_path()
    if os.environ.get(CONFIG_ENV) or path.is_file():
        for name, table in _read_file(path).items():
            found[name] = _check(name, table, str(path))
    raw = os.environ.get(ENDPOINTS_ENV, "").strip()
    if raw:
        for name, table in _read_env(raw).items():
            found[name] = _check(name, table, ENDPOINTS_ENV)
    return list(found.values())
