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
``api_key``, ``headers``, ``default_model``, ``verify_tls``, ``timeouts``, and for ``router``
endpoints ``inference_provider`` (list models served by that provider). The table is read by
the core's :class:`modelplex.endpoints.EndpointTable`; this module only says where it lives
and what an endpoint needs. It imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelplex.endpoints import Endpoint, EndpointTable

__all__ = ["CONFIG_ENV", "ENDPOINTS_ENV", "KINDS", "TABLE", "Endpoint", "config_path",
           "load_endpoints"]

ENDPOINTS_ENV = "MODELPLEX_HF_ENDPOINTS"
CONFIG_ENV = "MODELPLEX_HF_CONFIG"
KINDS = ("router", "tgi", "tei")


def _check(name: str, table: Mapping[str, Any]) -> str | None:
    kind = table.get("kind")
    if kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)} (got {kind!r})"
    if table.get("base_url") is None and kind != "router":
        return (f'base_url is required for a {kind} endpoint, e.g. '
                'base_url = "http://localhost:8080"')
    if "inference_provider" in table and kind != "router":
        return "inference_provider applies to router endpoints only"
    return None


#: The endpoint table of modelplex-huggingface.
TABLE = EndpointTable(plugin="modelplex-huggingface", filename="huggingface.toml",
                      config_env=CONFIG_ENV, endpoints_env=ENDPOINTS_ENV,
                      settings=("kind", "inference_provider"),
                      strings=("kind", "inference_provider"), check=_check,
                      example='{"gpu-tgi": {"kind": "tgi", "base_url": "http://host:8080"}}',
                      such_as="kind and base_url")


def config_path() -> Path:
    """Where the config file is looked for."""
    return TABLE.config_path()


def load_endpoints() -> list[Endpoint]:
    """Every configured endpoint, the environment variable's replacing the file's.

    A source that does not parse raises :class:`ConfigurationError`; a malformed endpoint is
    returned with ``error`` set so that the others stay usable.
    """
    return TABLE.load()
