"""``OllamaConfig``: the Ollama provider's settings as one object (seed 004's spelling).

::

    config = OllamaConfig(base_url="http://localhost:11434")
    provider = OllamaProvider(config.to_dict())      # or create_provider("ollama", config)
    await provider.initialize()
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["OllamaConfig"]


class OllamaConfig(BaseModel):
    """The Ollama provider's settings; :meth:`to_dict` gives its constructor keywords.

    ``base_url`` is the server (``host`` of :class:`~modelplex_ollama.provider.OllamaProvider`);
    the other fields are the constructor's keywords of the same names. Fields left unset are
    not passed, so the provider's defaults (and ``OLLAMA_HOST``, ``OLLAMA_API_KEY``) apply.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: SecretStr | None = None
    headers: dict[str, str] | None = None
    timeouts: float | dict[str, Any] | None = None
    max_parallel: int | None = Field(default=None, ge=0)
    verify_tls: bool | None = None
    check_disk_space: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The keywords of ``OllamaProvider(...)`` for the fields that are set (``base_url``
        becomes ``host``)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values["host"] = values.pop("base_url")
        return {key: value for key, value in values.items() if value is not None}
