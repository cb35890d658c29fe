"""The LM Studio provider.

Chat and embeddings go through LM Studio's OpenAI-compatible ``/v1`` API (this class is an
:class:`~modelplex_openai.provider.OpenAIProvider`); models are listed through its native REST
API, ``/api/v1/models`` (LM Studio 0.4+), falling back to ``/api/v0/models`` (0.3.6+), which
say whether each model is loaded, its quantization, maximum context length and architecture.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from modelplex.errors import ModelNotFoundError, ProviderStatusError
from modelplex.provider import CommonOptions
from modelplex.types import ModelInfo
from modelplex_openai.provider import OpenAIOptions, OpenAIProvider

__all__ = ["DEFAULT_HOST", "LMStudioOptions", "LMStudioProvider"]

DEFAULT_HOST = "http://localhost:1234"


class LMStudioOptions(OpenAIOptions):
    """The OpenAI options plus LM Studio's own sampling and loading parameters."""

    top_k: int | None = Field(default=None, gt=0, description="Sample from the k likeliest "
                                                              "tokens, > 0.")
    repeat_penalty: float | None = Field(default=None, gt=0.0,
                                         description="Penalty for repeated tokens, > 0.")
    ttl: int | None = Field(default=None, gt=0, description="Seconds a just-in-time loaded "
                                                            "model may stay idle before LM "
                                                            "Studio unloads it.")


def _host(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


class LMStudioProvider(OpenAIProvider):
    """LM Studio's local server (default ``http://localhost:1234``).

    Args:
        host: the server root; defaults to ``$LMSTUDIO_HOST``, else ``http://localhost:1234``.
            ``base_url`` (the ``/v1`` root) may be given instead.
        api_key: the API token when "Require Authentication" is on; defaults to
            ``$LM_API_TOKEN``.
        Other arguments as :class:`OpenAIProvider`.
    """

    name: str = "lmstudio"
    Options: ClassVar[type[CommonOptions]] = LMStudioOptions
    default_base_url: ClassVar[str] = DEFAULT_HOST + "/v1"
    base_url_env: ClassVar[str | None] = "LMSTUDIO_HOST"
    default_api_key_env: ClassVar[str | None] = "LM_API_TOKEN"
    organization_envs: ClassVar[tuple[str, ...]] = ()
    project_envs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, host: str | None = None, **kwargs: Any) -> None:
        if host is not None and kwargs.get("base_url") is None:
            kwargs["base_url"] = _host(host) + "/v1"
        super().__init__(**kwargs)
        self.host = _host(self.base_url)

    def _resolve_base_url(self, base_url: str | None, own: bool) -> str:
        if base_url is None:
            env = type(self).base_url_env  # LMSTUDIO_HOST holds the root, without /v1
            env_host = os.environ.get(env) if own and env else None
            base_url = _host(env_host or DEFAULT_HOST) + "/v1"
        return base_url.rstrip("/")

    # -- models -----------------------------------------------------------------------------
    def _v1_info(self, m: Mapping[str, Any]) -> ModelInfo:
        key = str(m.get("key") or m.get("id"))
        quant = m.get("quantization")
        caps: dict[str, Any] = m["capabilities"] if isinstance(m.get("capabilities"), dict) \
            else {}
        instances = [i for i in m.get("loaded_instances") or [] if isinstance(i, dict)]
        kind = m.get("type")
        capabilities = ["embedding"] if kind == "embedding" else ["completion"]
        capabilities += [name for flag, name in (("vision", "vision"),
                                                 ("trained_for_tool_use", "tools"),
                                                 ("reasoning", "reasoning")) if caps.get(flag)]
        details: dict[str, Any] = {
            "loaded": bool(instances),
            "state": "loaded" if instances else "not-loaded",
            "type": kind,
            "publisher": m.get("publisher"),
            "format": m.get("format"),
            "display_name": m.get("display_name"),
            "bits_per_weight": quant.get("bits_per_weight") if isinstance(quant, dict) else None,
            "loaded_instances": [i.get("id") for i in instances],
            "loaded_context_length": (instances[0].get("config") or {}).get("context_length")
            if instances else None,
            "description": m.get("description"),
        }
        return ModelInfo(
            id=key, name=key, provider=self.name,
            family=m.get("architecture"),
            parameter_size=m.get("params_string"),
            quantization=quant.get("name") if isinstance(quant, dict) else quant,
            size_bytes=m.get("size_bytes"),
            context_length=m.get("max_context_length"),
            description=m.get("description") or None,
            capabilities=capabilities,
            details={k: v for k, v in details.items() if v not in (None, [])},
        )

    def _v0_info(self, m: Mapping[str, Any]) -> ModelInfo:
        key = str(m.get("id"))
        kind = m.get("type")
        capabilities = ["embedding"] if kind == "embeddings" else ["completion"]
        if kind == "vlm":
            capabilities.append("vision")
        if "tool_use" in (m.get("capabilities") or []):
            capabilities.append("tools")
        state = m.get("state")
        details = {"loaded": state == "loaded", "state": state, "type": kind,
                   "publisher": m.get("publisher"), "format": m.get("compatibility_type")}
        return ModelInfo(
            id=key, name=key, provider=self.name,
            family=m.get("arch"),
            quantization=m.get("quantization"),
            context_length=m.get("max_context_length"),
            description=m.get("description") or None,
            capabilities=capabilities,
            details={k: v for k, v in details.items() if v is not None},
        )

    async def list_models(self) -> list[ModelInfo]:
        """Every downloaded model, loaded or not, from LM Studio's native REST API."""
        try:
            data = await self.http.request_json("GET", self.host + "/api/v1/models")
        except ProviderStatusError as err:
            if err.status_code not in (400, 404, 405):
                raise
            data = None
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            return [self._v1_info(m) for m in data["models"] if isinstance(m, dict)]
        # LM Studio before 0.4 has no /api/v1 (it answers 404, or 200 with an "error").
        data = await self.http.request_json("GET", self.host + "/api/v0/models")
        items = data.get("data") if isinstance(data, dict) else None
        return [self._v0_info(m) for m in items or [] if isinstance(m, dict)]

    async def list_loaded_models(self) -> list[ModelInfo]:
        """The models loaded in LM Studio now."""
        return [m for m in await self.list_models() if m.details.get("loaded")]

    async def show_model(self, name: str) -> ModelInfo:
        """One model, by key, display name or loaded-instance id."""
        models = await self.list_models()
        for info in models:
            if name in (info.id, info.details.get("display_name")) or \
                    name in info.details.get("loaded_instances", ()):
                return info
        have = ", ".join(m.id for m in models) or "none"
        raise ModelNotFoundError(f"{self.name}: no model named {name!r} (downloaded: {have}); "
                                 "download it in LM Studio or with `lms get`",
                                 status_code=404, provider=self.name)
