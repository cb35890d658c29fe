"""The options of the Ollama provider and how they map onto a request body.

Every option is typed and checked before anything is sent, and only the options the user set
are sent: modelplex never injects a default ``num_ctx`` or ``keep_alive`` of its own.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelplex.provider import CommonOptions

__all__ = ["TOP_LEVEL_FIELDS", "OllamaOptions", "split_options"]

#: Options that are fields of the request itself, not of its ``options`` object.
TOP_LEVEL_FIELDS = frozenset({"keep_alive", "think", "truncate", "shift"})

_GO_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^[-+]?\d+$")


class OllamaOptions(CommonOptions):
    """Options of the Ollama provider: the common ones plus Ollama's own.

    ``max_tokens`` is sent as ``num_predict``. ``keep_alive``, ``think``, ``truncate`` and
    ``shift`` are fields of the request; everything else goes into its ``options`` object.
    """

    # -- sampling ---------------------------------------------------------------------------
    top_k: int | None = Field(default=None, ge=0,
                              description="Sample from the k most likely tokens (0 = all).")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0,
                                description="Minimum probability relative to the top token.")
    typical_p: float | None = Field(default=None, ge=0.0, le=1.0,
                                    description="Locally typical sampling mass, 0 to 1.")
    repeat_penalty: float | None = Field(default=None, ge=0.0,
                                         description="Penalty for repeated tokens (1 = none).")
    repeat_last_n: int | None = Field(default=None, ge=-1,
                                      description="Tokens looked back for repeats "
                                                  "(0 = off, -1 = the whole context).")
    presence_penalty: float | None = Field(default=None,
                                           description="Penalty for tokens already present.")
    frequency_penalty: float | None = Field(default=None,
                                            description="Penalty by how often a token appeared.")
    penalize_newline: bool | None = Field(default=None,
                                          description="Apply the repeat penalty to newlines.")
    num_predict: int | None = Field(default=None, ge=-2,
                                    description="Most tokens to generate (-1 = no limit, "
                                                "-2 = fill the context); same as max_tokens.")
    num_keep: int | None = Field(default=None, ge=-1,
                                 description="Prompt tokens kept when the context shifts.")
    # -- runner (load-time) options: changing one reloads the model ------------------------
    num_ctx: int | None = Field(default=None, gt=0,
                                description="Context window in tokens (reloads the model).")
    num_batch: int | None = Field(default=None, gt=0, description="Prompt batch size.")
    num_gpu: int | None = Field(default=None, ge=-1,
                                description="Layers offloaded to the GPU (0 = CPU only).")
    main_gpu: int | None = Field(default=None, ge=0, description="The GPU used for small "
                                                                 "tensors.")
    use_mmap: bool | None = Field(default=None, description="Memory-map the model file.")
    num_thread: int | None = Field(default=None, gt=0, description="CPU threads to use.")
    numa: bool | None = Field(default=None, description="Use NUMA optimisations.")
    # -- request-level fields ---------------------------------------------------------------
    keep_alive: str | int | float | None = Field(
        default=None,
        description="How long the model stays loaded after the request: a duration such as "
                    "'5m' or '1h', seconds as a number, 0 to unload now, negative to keep it "
                    "loaded.")
    think: bool | Literal["low", "medium", "high", "max"] | None = Field(
        default=None, description="Thinking models: true/false, or a level (low, medium, "
                                  "high, max); the thinking comes back as reasoning.")
    truncate: bool | None = Field(default=None,
                                  description="Truncate input that overflows the context "
                                              "(false: fail instead).")
    shift: bool | None = Field(default=None,
                               description="Shift the context when generation overflows it.")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("keep_alive must be a duration such as '5m' or a number of "
                             "seconds, not a boolean")
        if isinstance(value, str):
            text = value.strip()
            if not _GO_DURATION.match(text):
                raise ValueError(f"keep_alive {value!r} is not a duration: use e.g. '30s', "
                                 "'5m', '1h', 0 (unload now) or -1 (keep loaded)")
            return int(text) if text.lstrip("+-").isdigit() else text
        return value

    @model_validator(mode="after")
    def _one_token_limit(self) -> OllamaOptions:
        if self.max_tokens is not None and self.num_predict is not None \
                and self.max_tokens != self.num_predict:
            raise ValueError("max_tokens and num_predict are the same option; set only one")
        return self


def split_options(options: CommonOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(top_level, options)``: request fields and the ``options`` object, as set by the user.

    ``max_tokens`` becomes ``num_predict``; nothing the user did not set appears in either.
    """
    values = options.set_values()
    top = {key: values.pop(key) for key in TOP_LEVEL_FIELDS & values.keys()}
    if "max_tokens" in values:
        values["num_predict"] = values.pop("max_tokens")
    return top, values
