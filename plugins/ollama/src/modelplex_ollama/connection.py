"""Where the Ollama server is, how its errors map onto modelplex's, and local disk checks."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelplex import errors
from modelplex.http import extract_error_message, parse_retry_after

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EndpointNotFoundError",
    "InsufficientDiskSpaceError",
    "free_disk_bytes",
    "is_local_host",
        "model_not_found_message",
    "models_dir",
    "parse_host",
    "status_error",
]

DEFAULT_PORT = 11434
DEFAULT_HOST = f"http://127.0.0.1:{DEFAULT_PORT}"
PROVIDER = "ollama"


class EndpointNotFoundError(errors.ProviderStatusError):
    """The server has no such endpoint (HTTP 404 with a plain-text body): it is too old, or
    it is no Ollama server."""


#: Said when a server answers like an OpenAI-compatible one, not like Ollama.
NOT_OLLAMA = ("it answers like an OpenAI-compatible server (llama.cpp's llama-server, LM "
              "Studio, vLLM, ...), not like Ollama: configure it as an OpenAI-compatible "
              "endpoint (the openai plugin, base_url ending in /v1) instead")


class InsufficientDiskSpaceError(errors.ConfigurationError):
    """A pull was refused because the disk holding the Ollama models cannot take the model."""

    def __init__(self, message: str, *, needed: int, free: int, path: Path) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free
        self.path = path


def parse_host(host: str | None) -> str:
    """The base URL for ``host``, resolved the way the official Ollama Python client does.

    The scheme is optional (``http`` by default); a host without a port gets 11434 (80 or 443
    when ``http://`` or ``https://`` is written out); an empty host means 127.0.0.1; a path is
    kept. ``None`` or ``""`` gives ``http://127.0.0.1:11434``.
    """
    text = (host or "").strip()
    port = DEFAULT_PORT
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    hostname = split.hostname or "127.0.0.1"
    try:
        given = split.port
    except ValueError:
        given = -1
    if (given is not None and not 0 < given < 65536) or rest.split("/", 1)[0].endswith(":"):
        raise errors.ConfigurationError(
            f"OLLAMA_HOST / host {errors.mask_url(text)!r} has an invalid port: write it as "
            f"HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:{DEFAULT_PORT}")
    port = given or port
    try:
        if isinstance(ipaddress.ip_address(hostname), ipaddress.IPv6Address):
            hostname = f"[{hostname}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    base = f"{scheme}://{hostname}:{port}"
    return f"{base}/{path}" if path else base


def is_local_host(base_url: str) -> bool:
    """Whether ``base_url`` points at this machine (loopback, 0.0.0.0 or our hostname)."""
    hostname = (urllib.parse.urlsplit(base_url).hostname or "").lower()
    if hostname in ("localhost", "localhost.localdomain", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        pass
    try:
        return hostname in {socket.gethostname().lower(), socket.getfqdn().lower()}
    except OSError:  # pragma: no cover - depends on the machine
        return False


def models_dir() -> Path:
    """Where a local Ollama keeps its models: ``OLLAMA_MODELS`` or ``~/.ollama/models``."""
    configured = os.environ.get("OLLAMA_MODELS")
    return Path(configured).expanduser() if configured else Path.home() / ".ollama" / "models"


def free_disk_bytes(path: Path) -> tuple[int, Path]:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.exists():  # pragma: no cover - the root always exists
        probe = Path.home()
    return shutil.disk_usage(probe).free, probe


_MODEL_IN_MESSAGE = re.compile(r"""model\s+['"]([^'"]+)['"]\s+not found""")


def model_not_found_message(name: str | None, server_message: str) -> str:
    """The message of a :class:`ModelNotFoundError`, with the command that fixes it."""
    if name is None:
        match = _MODEL_IN_MESSAGE.search(server_message)
        name = match.group(1) if match else None
    shown = name or "MODEL"
    lead = f"ollama: model {name!r} not found" if name else "ollama: model not found"
    return (f"{lead} ({server_message}). Download it with "
            f"`modelplex models pull ollama:{shown}` (or `ollama pull {shown}`); "
            "`modelplex models list -p ollama` shows the models you have.")


def status_error(status: int, body: Any, headers: Mapping[str, str],
                 secrets: tuple[str, ...] = ()) -> errors.ProviderError | None:
    """The error for one of Ollama's error statuses (``None``: the default mapping)."""
    message = errors.redact(extract_error_message(body), *secrets)
    has_error_key = isinstance(body, dict) and "error" in body
    if status == 404:
        if has_error_key and isinstance(body["error"], dict):  # Ollama's is a string
            return EndpointNotFoundError(
                f"ollama: the server has no such endpoint (HTTP 404: {message}); {NOT_OLLAMA}",
                status_code=404, body=body, provider=PROVIDER)
        if not has_error_key:
            return EndpointNotFoundError(
                f"ollama: the server has no such endpoint (HTTP 404: {message or 'empty'});"
                " it may be too old: upgrade Ollama", status_code=404, body=body,
                provider=PROVIDER)
        return errors.ModelNotFoundError(model_not_found_message(None, message),
                                         status_code=404, body=body, provider=PROVIDER)
    if status == 503 or "server busy" in message:
        return errors.ServerBusyError(
            f"ollama is busy (HTTP {status}: {message}); try again later, or raise "
            "OLLAMA_MAX_QUEUE / OLLAMA_NUM_PARALLEL on the server",
            status_code=status, body=body, provider=PROVIDER,
            retry_after=parse_retry_after(headers))  # a proxy in front may say
    if status == 401:
        signin = body.get("signin_url") if isinstance(body, dict) else None
        hint = f" Sign in at {signin}." if signin else ""
        return errors.AuthenticationError(
            f"ollama returned HTTP 401: {message or 'unauthorized'}. Set OLLAMA_API_KEY "
            f"(or pass api_key=) to use this server or model.{hint}",
            status_code=status, body=body, provider=PROVIDER)
    return None
