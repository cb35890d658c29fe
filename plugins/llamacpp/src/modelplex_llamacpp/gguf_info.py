"""Read a GGUF file's metadata and tensor shapes without loading the model.

Only the header is read (the key/value metadata and the tensor table), so listing a models
directory is fast and needs neither llama.cpp nor numpy.
"""

from __future__ import annotations

import os
import struct
from typing import IO, Any

__all__ = ["FILE_TYPES", "GGUFError", "read_gguf_header"]

# general.file_type values (llama.cpp's LLAMA_FTYPE_*).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_ARRAY_KEEP = 16  # long arrays (the vocabulary) are skipped, not kept


class GGUFError(ValueError):
    """The file is not a readable GGUF file."""


def _read(f: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFError("unexpected end of file")
    return struct.unpack(fmt, data)[0]


def _read_string(f: IO[bytes]) -> str:
    length = _read(f, "<Q")
    if length > 1 << 24:
        raise GGUFError("string too long")
    return f.read(length).decode("utf-8", "replace")


def _read_value(f: IO[bytes], vtype: int) -> Any:
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _read_string(f)
    if vtype == _ARRAY:
        item_type = _read(f, "<I")
        count = _read(f, "<Q")
        if item_type in _SCALARS and count > _MAX_ARRAY_KEEP:
            f.seek(struct.calcsize(_SCALARS[item_type]) * count, os.SEEK_CUR)
            return None
        items = [_read_value(f, item_type) for _ in range(count)]
        return items if count <= _MAX_ARRAY_KEEP else None
    raise GGUFError(f"unknown value type {vtype}")


def read_gguf_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """Return ``(metadata, parameter_count)`` of a GGUF file.

    Long arrays (the tokenizer's vocabulary) are skipped and reported as ``None``.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{os.fspath(path)} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise GGUFError(f"GGUF version {version} is too old")
        n_tensors = _read(f, "<Q")
        n_kv = _read(f, "<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_string(f)
            metadata[key] = _read_value(f, _read(f, "<I"))
        params = 0
        for _ in range(n_tensors):
            _read_string(f)
            n_dims = _read(f, "<I")
            count = 1
            for _ in range(n_dims):
                count *= _read(f, "<Q")
            _read(f, "<I")  # tensor type
            _read(f, "<Q")  # offset
            params += count
    return metadata, params
