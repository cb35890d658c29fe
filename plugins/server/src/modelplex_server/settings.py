"""The server's settings: the ``[server]`` table of the modelplex config, validated.

::

    [server]
    host = "0.0.0.0"
    port = 8000
    max_concurrency = 256
    conversations = "memory"              # or a SQLite file (default: in the data dir)
    max_file_bytes = 104857600            # /v1/files: the largest upload (100 MiB)
    max_batch_lines = 50000               # /v1/batches: most requests in one batch
    max_open_batches = 100                # /v1/batches: most unfinished batches per key
    max_conversations = 10000             # /api/conversations: most conversations per key
    max_conversation_messages = 1000      # most messages one stored conversation holds
    batch_concurrency = 8                 # batch requests answered at once per process

    [server.models]                       # model ids the server offers besides provider:model
    fast = "ollama:llama3.2"

    [[server.keys]]
    name = "alice"
    hash = "sha256:5e884898da2804..."     # from `modelplex server-key`; keys are never stored
    models = ["ollama:*", "fast"]         # optional: the model ids this key may use
    rate_limit = 60                       # optional: requests per minute
    tpm = 100000                          # optional: tokens per minute
    concurrency = 8                       # optional: requests at once
    budget = "50/month"                   # optional: USD (or "2000000 tokens/day")

The table is read from the modelplex config file (:func:`modelplex.config.load_config`), the
same file whose ``[providers.NAME]`` and ``[models.NAME]`` tables the server's model ids come
from: ``--config FILE``, else ``MODELPLEX_SERVER_CONFIG`` (an older name), else
``MODELPLEX_CONFIG`` or the user config directory. ``[server.models]`` and
``[server.providers]`` still work: they add one-deployment named models and provider keywords
over the file's.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelplex.config import Config, load_config
from modelplex.errors import ConfigurationError

__all__ = ["CONFIG_ENV", "KeyConfig", "ServerSettings", "generate_key", "hash_key",
           "is_loopback", "load_server_config", "load_settings"]

CONFIG_ENV = "MODELPLEX_SERVER_CONFIG"
KEY_PREFIX = "mpx-"


def hash_key(key: str) -> str:
    """The form a key is stored in: ``sha256:<hex digest>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random API key (``mpx-`` and 43 URL-safe characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeyConfig(BaseModel):
    """One API key: its name (for logs), its hash, and what it may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Shown in the access log instead of the key.")
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$",
                      description="sha256:<hex> of the key, from `modelplex server-key`.")
    models: list[str] | None = Field(
        default=None, description="Model ids (glob patterns) this key may use; all if unset.")
    rate_limit: int | None = Field(default=None, gt=0,
                                   description="Requests per minute; unlimited if unset.")
    tpm: int | None = Field(default=None, gt=0,
                            description="Tokens per minute; unlimited if unset.")
    concurrency: int | None = Field(default=None, gt=0,
                                    description="Requests at once; unlimited if unset.")
    admin: bool = Field(default=False,
                        description="Sees every key's conversations (within its models).")
    budget: str | None = Field(
        default=None, description="Spend per period: '50/month' (USD, priced answers), "
                                  "'2000000 tokens/day'; periods day, week, month (UTC).")

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            from modelplex_server.budgets import Budget

            Budget.parse(value)
        return value

    def allows(self, model_id: str) -> bool:
        """Whether this key may use ``model_id``."""
        return self.models is None or any(fnmatch.fnmatchcase(model_id, pattern)
                                          for pattern in self.models)


class ServerSettings(BaseModel):
    """Everything ``modelplex serve`` can be told; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    @property
    def keys_required(self) -> bool:
        """Whether requests need a key: keys are configured, or ``require_keys``."""
        return bool(self.keys) or self.require_keys

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port (0 picks a free one).")
    keys: list[KeyConfig] = Field(default_factory=list,
                                  description="API keys; without any, only localhost may bind.")
    require_keys: bool = Field(
        default=False, description="Require a key even when none is configured here (keys "
                                   "made with `modelplex keys create` live in the store).")
    models: dict[str, str] = Field(
        default_factory=dict, description="Named model ids and the provider:model they use.")
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Keyword configuration per provider name.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0,
                                description="Largest request body accepted (413 beyond).")
    max_concurrency: int = Field(default=1024, gt=0,
                                 description="Model requests at once; more get 503.")
    backlog: int = Field(default=2048, gt=0,
                         description="Connections waiting to be accepted (the listen backlog).")
    cors_origins: list[str] = Field(default_factory=list,
                                    description="Origins allowed by CORS ('*' for any).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names served without keys besides localhost and loopback "
                    "addresses ('*' for any); against DNS rebinding.")
    max_json_depth: int = Field(default=64, ge=2, le=1000,
                                description="Deepest JSON nesting of a body or frame.")
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's headers.")
    body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request body may stall between reads, "
                                        "and a client may leave its answer unread.")
    idle_timeout: float = Field(
        default=60.0, gt=0, description="Seconds an idle keep-alive connection stays open.")
    max_connections: int | None = Field(
        default=None, gt=0, description="Connections at once (default: from the process's "
                                        "file limit); the longest idle one gives way.")
    max_connections_per_client: int = Field(
        default=512, gt=0, description="Connections at once from one client address.")
    registry_ttl: float = Field(default=300.0, gt=0,
                                description="Seconds a provider's model list is cached.")
    health_interval: float | None = Field(
        default=60.0, gt=0, description="Seconds between provider health checks (none: off).")
    shutdown_timeout: float = Field(default=30.0, ge=0,
                                    description="Seconds in-flight requests get on shutdown.")
    access_log: bool = Field(default=True, description="Log each request (Common Log Format).")
    conversations: str | None = Field(
        default=None, description="Where `modelplex serve` keeps the conversations of /api: "
                                  "a SQLite file path, or 'memory' (lost on exit); default "
                                  "<data dir>/server-conversations.db.")
    store: str | None = Field(
        default=None, description="Where conversations (and keys) are kept, shared by every "
                                  "worker and replica pointing at it: a postgresql:// URL, a "
                                  "SQLite file path or 'memory'; wins over 'conversations'.")
    max_file_bytes: int = Field(
        default=100 * 1024 * 1024, gt=0,
        description="Largest file /v1/files accepts (413 beyond); files are kept in the store.")
    max_files: int = Field(
        default=1000, gt=0, description="Most files one key keeps (uploads and batch "
                                        "results); an upload beyond is refused (400).")
    max_conversations: int = Field(
        default=10_000, gt=0,
        description="Most conversations one key keeps (stored responses count too); creating "
                    "one more in /api/conversations is refused (400).")
    max_conversation_messages: int = Field(
        default=1000, gt=0,
        description="Most messages one stored conversation holds (its user messages and "
                    "answers, also a stored Responses API chain's); a turn that would pass it "
                    "is refused (400 conversation_too_long) and stores nothing.")
    max_batch_lines: int = Field(
        default=50_000, gt=0, description="Most requests (lines) in one batch's input file.")
    max_open_batches: int = Field(
        default=100, gt=0, description="Most batches one key has open (not yet completed, "
                                       "failed, expired or cancelled); more are refused (400).")
    batch_concurrency: int = Field(
        default=8, ge=1, le=1024,
        description="Requests of /v1/batches answered at once by each server process.")
    batch_claim_timeout: float = Field(
        default=30.0, ge=1.0,
        description="Seconds after which a batch whose server stopped renewing its claim "
                    "(it died) is resumed by another server sharing the store.")
    workers: int = Field(default=1, ge=1, le=512,
                         description="Processes serving the port (SO_REUSEPORT), supervised "
                                     "by the parent.")

    @field_validator("keys")
    @classmethod
    def _unique_names(cls, keys: list[KeyConfig]) -> list[KeyConfig]:
        names = [k.name for k in keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"key names must be unique: {', '.join(dupes)}")
        return keys

    def key_for(self, hashed: str) -> KeyConfig | None:
        """The key whose stored hash is ``hashed``."""
        for key in self.keys:
            if secrets.compare_digest(key.hash, hashed):
                return key
        return None


def _settings_error(err: ValidationError) -> ConfigurationError:
    parts = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "server"
        if item["loc"] and item["loc"][-1] == "hash":  # never echo what may be a key
            parts.append(f"server.{field}: must be 'sha256:' and 64 hex digits, as printed by "
                         "`modelplex server-key` (store the hash, never the key)")
        elif item["type"] == "extra_forbidden":
            valid = ", ".join(ServerSettings.model_fields)
            parts.append(f"server.{field}: unknown setting (valid: {valid})")
        else:
            parts.append(f"server.{field}: {item['msg']} (got {item.get('input')!r})")
    return ConfigurationError("invalid server settings: " + "; ".join(parts))


def load_server_config(path: str | os.PathLike[str] | None = None,
                       **overrides: Any) -> tuple[Config, ServerSettings]:
    """The modelplex config and the server's settings (its ``[server]`` table, then
    ``overrides`` that are not None).

    The file is ``path`` (``--config``), else ``MODELPLEX_SERVER_CONFIG`` (an older name),
    else the modelplex config (``MODELPLEX_CONFIG``, or the user config directory): one file
    for providers, named models and the server.
    """
    explicit = path or os.environ.get(CONFIG_ENV) or None
    if explicit and not os.path.isfile(os.path.expanduser(explicit)):
        given = "--config" if path else CONFIG_ENV
        raise ConfigurationError(f"cannot read the modelplex config {explicit}: no such file; "
                                 f"fix the path given by {given} or create the file")
    config = load_config(explicit)
    data = dict(config.server)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = ServerSettings.model_validate(data)
    except ValidationError as err:
        raise _settings_error(err) from None
    return config, settings


def load_settings(path: str | os.PathLike[str] | None = None,
                  **overrides: Any) -> ServerSettings:
    """The server's settings alone (see :func:`load_server_config`)."""
    return load_server_config(path, **overrides)[1]
