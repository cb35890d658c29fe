"""Hugging Face Inference Providers through the router (OpenAI-compatible chat).

:class:`HFRouterProvider` is an :class:`~modelplex_openai.provider.OpenAIProvider`: requests,
streaming, tools and errors are that plugin's code. This module adds the Hugging Face token
lookup, clear messages for gated models and bad tokens, and model listing from the router or,
for one inference provider, from the Hub API.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from modelplex.errors import AuthenticationError, ProviderError
from modelplex.provider import Capabilities
from modelplex.types import ModelInfo
from modelplex_huggingface.auth import hf_token
from modelplex_openai.provider import OpenAIProvider

__all__ = ["HUB_URL", "ROUTER_URL", "HFRouterProvider"]

ROUTER_URL = "https://router.huggingface.co/v1"
HUB_URL = "https://huggingface.co"


class HFRouterProvider(OpenAIProvider):
    """Hugging Face's router: Hub model ids, optionally with a ``:provider`` or policy suffix.

    Args:
        api_key: the token; defaults to ``$HF_TOKEN`` (or ``$api_key_env``), else the hub's
            token file (see :mod:`modelplex_huggingface.auth`).
        inference_provider: list the models this inference provider serves (Hub API) instead
            of the router's whole list.
        hub_url: the Hub, for model listing; defaults to ``$HF_ENDPOINT``, else
            ``https://huggingface.co``.
        Other arguments as :class:`~modelplex_openai.provider.OpenAIProvider`.
    """

    name: str = "huggingface"
    capabilities: ClassVar[Capabilities] = Capabilities(
        streaming=True, embeddings=False, tools=True, vision=True, json_mode=True)
    default_base_url: ClassVar[str] = ROUTER_URL
    base_url_env: ClassVar[str | None] = None
    default_api_key_env: ClassVar[str | None] = "HF_TOKEN"
    organization_envs: ClassVar[tuple[str, ...]] = ()
    project_envs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, inference_provider: str | None = None, hub_url: str | None = None,
                 **kwargs: Any) -> None:
        self.token_source: str | None = None
        if kwargs.get("api_key") is None:
            env_name = kwargs.get("api_key_env")
            if env_name:
                self.token_source = env_name if os.environ.get(env_name) else None
            else:
                token, self.token_source = hf_token()
                kwargs["api_key"] = token
        elif kwargs.get("api_key_env") is None:
            self.token_source = "the api_key argument"
        super().__init__(**kwargs)
        self.inference_provider = inference_provider
        self.hub_url = (hub_url or os.environ.get("HF_ENDPOINT") or HUB_URL).rstrip("/")

    def _key_hint(self) -> str:
        if self.api_key is None:
            return ("no token was sent: set HF_TOKEN to a Hugging Face token allowed to "
                    "\"Make calls to Inference Providers\" (or run `hf auth login`)")
        return (f"check the token from {self.token_source or 'HF_TOKEN'}: it must be valid "
                "and allowed to \"Make calls to Inference Providers\"")

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        err = super()._status_error(status, body, headers)
        text = str(err)
        if status == 403 or (status in (401, 404) and "gated" in text.lower()):
            hint = ("the model is gated or restricted: accept its conditions on its Hub page "
                    "(https://huggingface.co/MODEL) with the account of your token"
                    if "gated" in text.lower() or "restricted" in text.lower() else
                    "the token lacks a permission this request needs (a fine-grained token "
                    "needs \"Make calls to Inference Providers\")")
            return AuthenticationError(f"{text}; {hint}", status_code=status, body=body,
                                       provider=self.name)
        return err

    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """Not available: the router serves chat only (use a ``tei`` endpoint)."""
        raise self._unsupported("embeddings (the router serves chat only; configure a tei "
                                "endpoint for Text Embeddings Inference)")

    def _model_info(self, item: Mapping[str, Any]) -> ModelInfo:
        info = super()._model_info(item)
        providers = [p for p in item.get("providers") or [] if isinstance(p, dict)]
        contexts = [p["context_length"] for p in providers
                    if isinstance(p.get("context_length"), int)]
        caps = ["completion"]
        if any(p.get("supports_tools") for p in providers):
            caps.append("tools")
        modalities = (item.get("architecture") or {}).get("input_modalities") or []
        if "image" in modalities:
            caps.append("vision")
        info.context_length = info.context_length or (max(contexts) if contexts else None)
        info.capabilities = caps
        return info

    async def list_models(self) -> list[ModelInfo]:
        """The router's chat models; with ``inference_provider``, the Hub's list of the text
        generation models that provider serves."""
        if not self.inference_provider:
            return await self._openai_models()
        url = (f"{self.hub_url}/api/models?inference_provider="
               f"{quote(self.inference_provider)}&pipeline_tag=text-generation&limit=1000")
        data = await self.http.request_json("GET", url)
        models = []
        for item in data if isinstance(data, list) else []:
            if not isinstance(item, dict) or not item.get("id"):
                continue
            model_id = str(item["id"])
            details = {k: item[k] for k in ("pipeline_tag", "likes", "downloads", "tags")
                       if item.get(k) not in (None, [])}
            details["inference_provider"] = self.inference_provider
            models.append(ModelInfo(id=model_id, name=model_id, provider=self.name,
                                    capabilities=["completion"], details=details))
        return models
