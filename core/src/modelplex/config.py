"""One configuration for modelplex: providers, named models, and the tables of other features.

The file is TOML (JSON when its name ends in ``.json``, YAML in ``.yaml`` or ``.yml`` with
``pip install 'modelplex[yaml]'``), found at ``MODELPLEX_CONFIG``, else
``config.toml`` in the per-user config directory (``modelplex config path`` prints it)::

    default_model = "fast"

    [providers.ollama]                 # constructor keywords of the provider named "ollama"
    host = "http://gpu-box:11434"

    [providers.openai]
    api_key_env = "MY_OPENAI_KEY"      # read the key from this variable

    [models.fast]                      # a named model: users type "fast"
    strategy = "least_busy"
    fallbacks = ["local"]
    deployments = [
        { model = "ollama:llama3.2", weight = 3, max_concurrency = 8 },
        { model = "ollama:llama3.2", host = "http://gpu-2:11434", rpm = 600 },
    ]

    [models.local]
    model = "llamacpp:smollm2"         # one deployment, written inline

    [retries]                          # a plain provider:model's retries (attempts = 1: none)
    attempts = 2

``max_retry_after`` (seconds, default 300) is the longest wait a server's ``Retry-After`` may
impose: a longer one (``inf``, a date years ahead) is cut to it, so a deployment never cools
down for the life of the process.

Precedence: arguments in code > environment (``MODELPLEX_DEFAULT_MODEL``) > the file >
defaults; a provider's own variables (``OLLAMA_HOST``, ``OPENAI_API_KEY``) apply where the
file does not set that keyword. ``[mcp.NAME]`` tables configure MCP servers (docs/mcp.md).
The top-level tables ``cache``, ``conversations``, ``state``,
``server``, ``telemetry`` and ``prices`` are read by the features that own them. A wrong file
raises one :class:`~modelplex.errors.ConfigurationError` naming the file, the key and the fix.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from modelplex import env, errors
from modelplex._toml import to_toml
from modelplex.errors import ConfigurationError
from modelplex.masking import mask

__all__ = ["CONFIG_ENV", "Config", "DeploymentConfig", "McpServerConfig", "McpUse", "ModelConfig",
           "PriceConfig", "RetryConfig", "check_provider_config", "config_path", "get_config",
           "load_config", "set_config", "to_toml"]

CONFIG_ENV = "MODELPLEX_CONFIG"
DEFAULT_MODEL_ENV = "MODELPLEX_DEFAULT_MODEL"
#: keys whose string values are kept as SecretStr (never in a repr); printing masks far more
#: (:func:`modelplex.masking.mask`)
SECRET_KEYS = frozenset({"api_key", "token", "password", "secret"})

#: keys of a deployment that belong to the router; every other key is a provider keyword
DEPLOYMENT_KEYS = frozenset({"model", "name", "weight", "max_concurrency", "rpm", "options"})


class _MaskedRepr(BaseModel):
    """A repr with every secret masked (:func:`~modelplex.masking.mask`): a config object in
    a log line, a traceback or an error shows no key, token, header value or password."""

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if _holds_models(value):
                yield key, value
                continue
            masked = mask({key: value})[key]
            yield key, tuple(masked) if isinstance(value, tuple) else masked


def _holds_models(value: Any) -> bool:
    """Whether ``value`` is a config model or a collection of them (they mask themselves)."""
    if isinstance(value, BaseModel):
        return True
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return False
    return bool(items) and all(isinstance(v, BaseModel) for v in items)


class _Strict(_MaskedRepr):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """How hard the router tries one request (per named model).

    ``attempts``: most attempts on this model's deployments (the first one included);
    ``timeout``: seconds the retries of one request may take in total, waits included: an
    attempt still running at its end (a hung one too) is cancelled and the request fails with
    a ``RoutingError`` saying the budget ran out (for a stream: until the first chunk);
    ``backoff``/``max_backoff``: full-jitter exponential backoff between attempts on a
    deployment that already failed; ``cooldown``: seconds a deployment that answered 429/503/529
    without ``Retry-After``, or refused the connection, is skipped.
    """

    attempts: int = Field(default=3, ge=1, le=100)
    timeout: float = Field(default=30.0, gt=0)
    backoff: float = Field(default=0.1, ge=0)
    max_backoff: float = Field(default=5.0, ge=0)
    cooldown: float = Field(default=5.0, ge=0)


class DeploymentConfig(_MaskedRepr):
    """One deployment of a named model: ``model = "provider:model"`` plus router settings.

    Keys other than ``model``, ``name``, ``weight``, ``max_concurrency``, ``rpm`` and
    ``options`` are constructor keywords of this deployment's provider (a second Ollama
    ``host``, another ``base_url``), over the ``[providers.NAME]`` table.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str = Field(min_length=3, pattern=r"^[^:\s]+:.+$")
    name: str | None = None
    weight: float = Field(default=1.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _misspelt_router_keys(self) -> DeploymentConfig:
        """A key one letter off a deployment key (``weigth``) is a typo, not a provider
        keyword: say so here rather than as the provider's unknown setting."""
        for key in self.model_extra or {}:
            near = errors.did_you_mean(key, DEPLOYMENT_KEYS)
            if near and not any(key.startswith(k) or k.startswith(key) for k in DEPLOYMENT_KEYS):
                raise ValueError(f"{key}: unknown key{near}; a deployment's own keys are "
                                 f"{', '.join(sorted(DEPLOYMENT_KEYS))}, the others go to its "
                                 "provider")
        return self

    @property
    def provider(self) -> str:
        """The provider name (before the first colon)."""
        return self.model.partition(":")[0]

    @property
    def model_name(self) -> str:
        """The provider's model name (after the first colon)."""
        return self.model.partition(":")[2]

    @property
    def provider_kwargs(self) -> dict[str, Any]:
        """The extra keys: keywords for this deployment's provider."""
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        """The name shown in stats and errors."""
        return self.name or self.model


class McpUse(_Strict):
    """An MCP server a named model may use (``[models.NAME] mcp = [...]``): ``server`` names
    an ``[mcp.NAME]`` table; ``tools`` narrows it to these tools (empty: every tool the
    server's own ``tools`` list allows). A destructive tool runs only when named here."""

    server: str = Field(min_length=1)
    tools: tuple[str, ...] = ()


class ModelConfig(_Strict):
    """A named model: one or more deployments, a strategy, retries and fallbacks; ``mcp``:
    the MCP servers whose tools the model calls wherever it is used (docs/mcp.md)."""

    deployments: tuple[DeploymentConfig, ...] = ()
    model: str | None = Field(default=None, exclude=True,
                              description="shorthand for one deployment")
    strategy: str = "round_robin"
    fallbacks: tuple[str, ...] = ()
    retries: RetryConfig = Field(default_factory=RetryConfig)
    kind: Literal["chat", "embedding"] = "chat"
    options: dict[str, Any] = Field(default_factory=dict)
    mcp: tuple[McpUse, ...] = ()

    @field_validator("mcp", mode="before")
    @classmethod
    def _server_names(cls, value: Any) -> Any:
        if isinstance(value, str | Mapping):
            value = [value]
        if isinstance(value, list | tuple):
            return [{"server": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _one_way(self) -> ModelConfig:
        if self.model and self.deployments:
            raise ValueError("give either `model` (one deployment) or `deployments`, not both")
        if self.model:
            object.__setattr__(self, "deployments", (DeploymentConfig(model=self.model),))
        if not self.deployments:
            raise ValueError("a named model needs `model = \"provider:model\"` or "
                             "`deployments = [{ model = \"provider:model\" }, ...]`")
        return self


class PriceConfig(_Strict):
    """The price of one ``[prices."provider:model"]``, per million tokens (see
    :mod:`modelplex.cost`); cache reads and writes cost the input price unless given."""

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    cache_read: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    currency: str = Field(default="USD", min_length=1)


class McpServerConfig(_Strict):
    """One MCP server (``[mcp.NAME]``): a command run over stdio, or a ``url`` (streamable
    HTTP; ``transport = "sse"``, or a URL ending in ``/sse``, for older servers that speak
    HTTP with server-sent events).

    ``env`` values and ``headers`` are secrets (never printed); ``headers_env`` maps a header
    to the environment variable holding its value. ``tools`` is an allow list (empty: all).
    ``timeout`` bounds each call and the start, ``max_result_chars`` a result sent back.
    """

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, SecretStr] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    transport: Literal["streamable-http", "sse"] | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)
    tools: tuple[str, ...] = ()
    timeout: float = Field(default=30.0, gt=0)
    max_result_chars: int = Field(default=100_000, ge=100)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if bool(self.command) == bool(self.url):
            raise ValueError("an MCP server needs either `command` (stdio) or `url` "
                             "(streamable HTTP), not both")
        if self.transport is not None and not self.url:
            raise ValueError("`transport` is for a server with a `url` (a `command` server "
                             "speaks stdio); remove it or give the server's url")
        return self

    @property
    def uses_sse(self) -> bool:
        """Whether the ``url`` speaks the older HTTP+SSE transport, not streamable HTTP."""
        if self.transport is not None:
            return self.transport == "sse"
        return self.url is not None and urlsplit(self.url).path.rstrip("/").endswith("/sse")


class Config(_Strict):
    """The whole configuration (see the module docstring for the file format)."""

    default_model: str | None = None
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    cache: dict[str, Any] = Field(default_factory=dict)
    conversations: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    server: dict[str, Any] = Field(default_factory=dict)
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict)
    retries: RetryConfig | None = Field(
        default=None, description="retries of a plain provider:model (named models have "
                                  "their own); default: one retry, see docs/routing.md")
    telemetry: dict[str, Any] = Field(default_factory=dict)  # modelplex.telemetry
    prices: dict[str, PriceConfig] = Field(default_factory=dict)  # modelplex.cost
    max_retry_after: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        for name, model in self.models.items():
            for fallback in model.fallbacks:
                if fallback not in self.models:
                    raise ValueError(f"models.{name}.fallbacks names {fallback!r}, which is not "
                                     f"a [models.{fallback}] table; define it or remove it")
            for use in model.mcp:
                if use.server not in self.mcp:
                    raise ValueError(f"models.{name}.mcp names {use.server!r}, which is not an "
                                     f"[mcp.{use.server}] table; define it or remove it")
        for key in self.prices:
            if ":" not in key:
                raise ValueError(f"prices.{key}: name a provider and a model as "
                                 "[prices.\"provider:model\"] (or \"provider:*\")")
        return self

    def provider_kwargs(self, provider: str) -> dict[str, Any]:
        """Constructor keywords of ``provider`` from its ``[providers.NAME]`` table."""
        return dict(self.providers.get(provider, {}))

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data with every secret masked (``config show``), by
        :func:`modelplex.masking.mask`: header values, URL credentials, credential-named keys
        and ``SecretStr`` values."""
        masked: dict[str, Any] = mask(self.model_dump(mode="python"))
        return masked


def check_provider_config(value: Any) -> dict[str, dict[str, Any]]:
    """``provider_config`` (``{"ollama": {"host": ...}}``: constructor keywords per provider
    name) as plain dicts; a wrong shape is a :class:`ConfigurationError` saying how to write
    it (``{"api_key": ...}`` without the provider's name is the usual slip)."""
    if value is None or (type(value) is dict and not value):  # the usual case: nothing to do
        return {}
    example = "e.g. provider_config={'ollama': {'host': 'http://gpu-box:11434'}}"
    if not isinstance(value, Mapping):
        raise ConfigurationError("provider_config must map provider names to their "
                                 f"constructor keywords, {example} (got {type(value).__name__})")
    checked: dict[str, dict[str, Any]] = {}
    for name, keywords in value.items():
        if not isinstance(keywords, Mapping):
            raise ConfigurationError(
                f"provider_config[{name!r}] must be a dict of constructor keywords (got "
                f"{type(keywords).__name__}): provider_config maps provider names to their "
                f"keywords, so nest it as provider_config={{'PROVIDER': {{{name!r}: ...}}}}, "
                f"{example}")
        checked[str(name)] = dict(keywords)
    return checked


def _secrets(value: Any) -> Any:
    """Wrap secret-looking keys in SecretStr so they never print."""
    if isinstance(value, Mapping):
        return {k: (SecretStr(v) if k in SECRET_KEYS and isinstance(v, str) else _secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_secrets(v) for v in value]
    return value


def config_path() -> Path:
    """Where the config file is looked for: ``MODELPLEX_CONFIG``, else the user config dir."""
    explicit = env.config_file()
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("modelplex")) / "config.toml"


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigurationError(f"cannot read the modelplex config {path}: {err.strerror}; "
                                 f"fix the path in {CONFIG_ENV} or create the file") from None
    if path.suffix in (".yaml", ".yml"):
        return _read_yaml(path, raw)
    text = _text(path, raw)
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except ValueError as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigurationError(f"{path} is not valid {kind}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: the top level must be a table of keys")
    return data


def _text(path: Path, raw: bytes) -> str:
    """The file's text: UTF-8, with or without the byte-order mark an editor may add."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigurationError(f"{path} is not UTF-8 text (byte {raw[err.start]:#04x} at "
                                 f"offset {err.start}): save it as UTF-8") from None


def _read_yaml(path: Path, raw: bytes) -> dict[str, Any]:
    """A YAML config file (PyYAML, the optional extra ``modelplex[yaml]``)."""
    try:
        import yaml
    except ImportError:
        raise ConfigurationError(f"{path} is YAML, which needs PyYAML: "
                                 "pip install 'modelplex[yaml]' (or use TOML or JSON)") from None
    text = _text(path, raw)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:  # PyYAML's message spans lines: one line, with the place
        mark = getattr(err, "problem_mark", None)
        where = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigurationError(f"{path} is not valid YAML: "
                                 f"{' '.join(str(problem).split())}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: the top level must be a mapping of keys")
    return data


def _table_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the table that holds the key at ``loc`` (``models.fast.modle``:
    :class:`ModelConfig`), following field annotations through dicts, tuples and unions."""
    current: type[BaseModel] = Config
    skip = False  # the part after a dict or tuple field is its key or index
    for part in loc[:-1]:
        if skip:
            skip = False
            continue
        field = current.model_fields.get(str(part))
        found = _models_in(field.annotation) if field is not None else None
        if field is None or found is None:
            return None
        skip = not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
                    ) and _is_container(field.annotation)
        current = found
    return None if skip else current


def _is_container(annotation: Any) -> bool:
    """Whether ``annotation`` is (or, in a union, holds) a dict or a tuple/list."""
    from typing import get_args, get_origin

    if get_origin(annotation) in (dict, tuple, list):
        return True
    return any(_is_container(a) for a in get_args(annotation))


def _models_in(annotation: Any) -> Any:
    """The BaseModel class inside ``annotation`` (itself, ``X | None``, ``dict[str, X]``,
    ``tuple[X, ...]``), or ``None``."""
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _models_in(arg)
        if found is not None:
            return found
    return None


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """The message for an unknown key: the valid keys of its table and the closest one."""
    table = _table_at(loc)
    if table is None:
        return "unknown key (remove or rename it)"
    valid = [k for k, f in table.model_fields.items() if k != "source"]
    where = "top-level key" if len(loc) == 1 else "key"
    return (f"unknown {where}{errors.did_you_mean(loc[-1], valid)}; valid keys are "
            f"{', '.join(valid)} (remove or rename it)")


def _describe(err: ValidationError, source: str) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = _unknown_key(tuple(item["loc"]))
        elif item["type"] == "string_pattern_mismatch":
            msg = "write it as \"provider:model\", e.g. \"ollama:llama3.2\""
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Validate configuration data (a dict as the file holds it)."""
    if "source" in data:  # a field of Config, but not a key of the file
        raise ConfigurationError(f"{source}: source: {_unknown_key(('source',))}")
    try:
        config = Config.model_validate({**_secrets(dict(data)), "source": source})
    except ValidationError as err:
        raise ConfigurationError(_describe(err, source)) from None
    return config


def load_config(path: str | os.PathLike[str] | None = None, *,
                apply_env: bool = True) -> Config:
    """Read the configuration: ``path``, else ``MODELPLEX_CONFIG``, else the user config dir.

    A missing default file is an empty configuration; a missing explicit one is an error.
    The environment is applied over the file (``MODELPLEX_DEFAULT_MODEL``) unless
    ``apply_env`` is false.
    """
    explicit = path is not None or bool(env.config_file())
    file = Path(path).expanduser() if path is not None else config_path()
    try:
        config = (parse_config(_read(file), source=str(file)) if explicit or file.exists()
                  else Config())
    except RecursionError:  # a file nested thousands deep: parsers recurse
        raise ConfigurationError(f"{file} nests its tables or lists too deeply to be read: "
                                 "a config file needs only a few levels") from None
    env_default = env.default_model() if apply_env else None
    if env_default:
        config = config.model_copy(update={"default_model": env_default})
    return config


_current: Config | None = None
_lock = threading.Lock()


def get_config() -> Config:
    """The process-wide configuration file, read once (see :func:`load_config`).

    The environment is not baked in: :func:`modelplex.pipeline.resolve_spec` reads
    ``MODELPLEX_DEFAULT_MODEL`` on every call.
    """
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = load_config(apply_env=False)
    return _current


def set_config(config: Config | None) -> Config | None:
    """Replace the process-wide configuration (``None``: read again on next use)."""
    global _current
    old, _current = _current, config
    return old


def _max_retry_after() -> float:
    return get_config().max_retry_after


errors.set_retry_after_limit(_max_retry_after)  # every Retry-After is clamped to the config's
