"""Ollama's model descriptions (``/api/tags``, ``/api/show``, ``/api/ps``) as ``ModelInfo``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from modelplex.types import ModelInfo

__all__ = ["loaded_model_info", "parse_parameter_size", "parse_time", "show_info",
           "tag_model_info"]

PROVIDER = "ollama"
_FRACTION = re.compile(r"(\.\d{6})\d+")
_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMBT]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as Go writes it (nanoseconds, ``Z`` or an offset), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None


def parse_parameter_size(value: Any) -> int | None:
    """``"8.0B"`` -> 8000000000; ``None`` when it cannot be read."""
    if not isinstance(value, str):
        return None
    match = _SIZE.match(value)
    if not match:
        return None
    try:
        return int(float(match.group(1)) * _SCALE[match.group(2).upper()])
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _common(item: Mapping[str, Any], name: str) -> dict[str, Any]:
    details = item.get("details") or {}
    return {
        "id": name,
        "name": name,
        "provider": PROVIDER,
        "family": details.get("family") or None,
        "parameter_size": details.get("parameter_size") or None,
        "parameter_count": parse_parameter_size(details.get("parameter_size")),
        "quantization": details.get("quantization_level") or None,
        "digest": item.get("digest") or None,
        "capabilities": [str(c) for c in item.get("capabilities") or []],
    }


def tag_model_info(item: Mapping[str, Any]) -> ModelInfo:
    """One entry of ``/api/tags``."""
    name = str(item.get("name") or item.get("model") or "")
    return ModelInfo(**_common(item, name), size_bytes=_int(item.get("size")),
                     modified=parse_time(item.get("modified_at")),
                     details=dict(item.get("details") or {}))


def loaded_model_info(item: Mapping[str, Any]) -> ModelInfo:
    """One entry of ``/api/ps``: ``details`` adds ``size_vram`` and ``expires_at``."""
    name = str(item.get("name") or item.get("model") or "")
    details = dict(item.get("details") or {})
    for key in ("size_vram", "expires_at"):
        if key in item:
            details[key] = item[key]
    return ModelInfo(**_common(item, name), size_bytes=_int(item.get("size")),
                     context_length=_int(item.get("context_length")), details=details)


def show_info(name: str, body: Mapping[str, Any]) -> ModelInfo:
    """The ``/api/show`` reply for ``name``.

    ``context_length`` comes from ``model_info["<architecture>.context_length"]``; ``details``
    keeps Ollama's details plus ``template``, ``parameters``, ``system``, ``license`` and
    ``model_info``.
    """
    model_info = body.get("model_info") or {}
    arch = model_info.get("general.architecture")
    context = _int(model_info.get(f"{arch}.context_length")) if arch else None
    if context is None:
        context = next((_int(v) for k, v in model_info.items()
                        if k.endswith(".context_length") and _int(v)), None)
    fields = _common(body, name)
    count = _int(model_info.get("general.parameter_count"))
    if count is not None:
        fields["parameter_count"] = count
    details = dict(body.get("details") or {})
    for key in ("template", "parameters", "system", "license", "modelfile"):
        if body.get(key):
            details[key] = body[key]
    if model_info:
        details["model_info"] = dict(model_info)
    return ModelInfo(**fields, context_length=context,
                     modified=parse_time(body.get("modified_at")), details=details)
