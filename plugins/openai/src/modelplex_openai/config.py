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
(as :meth:`modelplex.http.Timeouts.parse` reads them). The table is read by the core's
:class:`modelplex.endpoints.EndpointTable`; this module only says where it lives and what
an endpoint needs. It imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelplex.endpoints import Endpoint, EndpointTable

__all__ = ["CONFIG_ENV", "ENDPOINTS_ENV", "TABLE", "Endpoint", "config_path", "load_endpoints"]

ENDPOINTS_ENV = "MODELPLEX_OPENAI_ENDPOINTS"
CONFIG_ENV = "MODELPLEX_OPENAI_CONFIG"


def _check(name: str, table: Mapping[str, Any]) -> str | None:
    if table.get("base_url") is None and name != "openai":
        return 'base_url is required, e.g. base_url = "http://localhost:8000/v1"'
    return None


#: The endpoint table of modelplex-openai.
TABLE = EndpointTable(plugin="modelplex-openai", filename="openai.toml",
                      config_env=CONFIG_ENV, endpoints_env=ENDPOINTS_ENV, check=_check,
                      example='{"vllm": {"base_url": "http://host:8000/v1"}}')


def config_path() -> Path:
    """Where the config file is looked for."""
    return TABLE.config_path()


def load_endpoints() -> list[Endpoint]:
    """Every configured endpoint, the environment variable's replacing the file's.

    A malformed source raises :class:`ConfigurationError`; a malformed endpoint is returned
    with ``error`` set so that the others stay usable.
    """
    return TABLE.load()
