"""Named endpoints: the Hugging Face servers this installation talks to.

Each endpoint becomes a provider name usable as ``NAME:model``. Endpoints come from, in order
(a later source replaces an earlier endpoint of the same name):

1. the config file: ``$MODELPLEX_HF_CONFIG``, else
   ``$XDG_CONFIG_HOME/modelplex/huggingface.toml`` (``~/.config/modelplex/huggingface.toml``);
   TOML, or JSON when the name ends in ``.json``;
2. the ``MODELPLEX_HF_ENDPOINTS`` environment variable (JSON).

Both hold one table per endpoint name::

    [gpu-tgi]
    kind = "tgi"                      # "router", "tgi" or "tei"
    base_url = "http://gpu-box:8080"
    api_key_env = "TGI_KEY"           # when the server runs with --api-key (optional)

Keys: ``kind`` (required), ``base_url`` (required for ``tgi`` and ``tei``), ``api_key_env``,
``api_key``, ``headers``, ``default_model``, ``verify_tls``, and for ``router`` endpoints
``inference_provider`` (list models served by that provider). This module only reads
configuration; it imports nothing heavy.
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

__all__ = ["CONFIG_ENV", "ENDPOINTS_ENV", "KINDS", "Endpoint", "config_path", "load_endpoints"]

ENDPOINTS_ENV = "MODELPLEX_HF_ENDPOINTS"
CONFIG_ENV = "MODELPLEX_HF_CONFIG"
KINDS = ("router", "tgi", "tei")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_KEYS = {"kind", "base_url", "api_key_env", "api_key", "headers", "default_model", "verify_tls",
         "inference_provider"}
_STRINGS = ("kind", "base_url", "api_key_env", "api_key", "default_model", "inference_provider")


@attrs.frozen
class Endpoint:
    """One configured endpoint, or the reason it cannot be used (``error``)."""

    name: str
    source: str
    kind: str = "router"
    settings: dict[str, Any] = attrs.field(factory=dict, repr=False)
    error: str | None = None

    def provider_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the provider class of :attr:`kind`."""
        kwargs = {k: v for k, v in self.settings.items() if k != "kind"}
        kwargs["name"] = self.name
        kwargs["config_source"] = self.source
        return kwargs


def config_path() -> Path:
    """Where the config file is looked for."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "modelplex" / "huggingface.toml"


def _read(text: str, where: str, as_json: bool) -> dict[str, Any]:
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except ValueError as err:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigurationError(f"{where} is not valid {'JSON' if as_json else 'TOML'}: "
                                 f"{err}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f'{where} must hold one table per endpoint name, like '
                                 '{"gpu-tgi": {"kind": "tgi", "base_url": "http://host:8080"}}')
    return data


def _check(name: str, table: Any, source: str) -> Endpoint:
    def broken(problem: str) -> Endpoint:
        return Endpoint(name=name, source=source, error=f"endpoint {name!r} in {source}: {problem}")

    if not _NAME.match(name):
        return broken("names may hold only letters, digits, '.', '_' and '-' (no ':')")
    if not isinstance(table, dict):
        return broken("must be a table of settings such as kind and base_url")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        return broken(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    for key in _STRINGS:
        if key in table and not isinstance(table[key], str):
            return broken(f"{key} must be a string")
    kind = table.get("kind")
    if kind not in KINDS:
        return broken(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        return broken("headers must map header names to string values")
    if not isinstance(table.get("verify_tls", True), bool):
        return broken("verify_tls must be true or false")
    base_url = table.get("base_url")
    if base_url is None and kind != "router":
        return broken(f'base_url is required for a {kind} endpoint, e.g. '
                      'base_url = "http://localhost:8080"')
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        return broken(f"base_url must start with http:// or https:// (got {base_url!r})")
    if "inference_provider" in table and kind != "router":
        return broken("inference_provider applies to router endpoints only")
    return Endpoint(name=name, source=source, kind=kind, settings=dict(table))


def load_endpoints() -> list[Endpoint]:
    """Every configured endpoint, the environment variable's replacing the file's.

    A source that does not parse raises :class:`ConfigurationError`; a malformed endpoint is
    returned with ``error`` set so that the others stay usable.
    """
    found: dict[str, Endpoint] = {}
    path = config_path()
    if os.environ.get(CONFIG_ENV) or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigurationError(f"cannot read the modelplex-huggingface config {path}: "
                                     f"{err.strerror or err}") from None
        where = f"the modelplex-huggingface config {path}"
        for name, table in _read(text, where, path.suffix == ".json").items():
            found[name] = _check(name, table, str(path))
    raw = os.environ.get(ENDPOINTS_ENV, "").strip()
    if raw:
        for name, table in _read(raw, ENDPOINTS_ENV, True).items():
            found[name] = _check(name, table, ENDPOINTS_ENV)
    return list(found.values())
