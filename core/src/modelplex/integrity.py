"""Whether a local model file is the one expected: its sha256 against a known hash
(``modelplex models verify``, seed 000's ``ModelValidator``).

The file is read in 1 MiB blocks (a model of many gigabytes is never held in memory). The
expected hash comes, in this order, from the caller (``--sha256``), from the provider's model
listing (``ModelInfo.details["sha256"]``: the llama.cpp provider knows its bundled models'),
or from a ``FILE.sha256`` file beside the model (``sha256sum``'s format: the hex digest
first)::

    result = verify_file("models/smollm2.gguf", expected="b179c952...")
    result.ok, result.actual, result.source
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import attrs

from modelplex.errors import ConfigurationError

__all__ = ["Verification", "expected_from_sidecar", "is_gguf", "normalize_sha256",
           "sha256_file", "verify_file"]

_BLOCK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(value: str, *, field: str = "sha256") -> str:
    """``value`` as 64 lowercase hex digits (a ``sha256:`` prefix and spaces are dropped); a
    :class:`ConfigurationError` naming ``field`` otherwise."""
    text = value.strip().lower().removeprefix("sha256:").removeprefix("sha256-")
    if not _HEX.match(text):
        raise ConfigurationError(f"{field}: {value!r} is not a sha256 hash: give 64 hex "
                                 "digits (as `sha256sum FILE` prints them)")
    return text


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with GGUF's magic bytes."""
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def expected_from_sidecar(path: Path) -> str | None:
    """The hash in ``PATH.sha256`` beside the model (first word), or None without one."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    with open(sidecar, "rb") as handle:  # the hash is the first word: 4 KiB is plenty
        words = handle.read(4096).decode("utf-8", "replace").split()
    if not words:
        raise ConfigurationError(f"{sidecar} is empty: write the file's sha256 in it")
    return normalize_sha256(words[0], field=str(sidecar))


@attrs.frozen
class Verification:
    """The result of :func:`verify_file`: ``ok`` is None when there was nothing to compare
    with (``expected`` None), else whether the hashes match; ``source`` says where the
    expected hash came from."""

    path: Path
    actual: str
    expected: str | None
    source: str | None
    size: int

    @property
    def ok(self) -> bool | None:
        return None if self.expected is None else self.actual == self.expected


def verify_file(path: str | os.PathLike[str], expected: str | None = None, *,
                source: str | None = None, gguf: bool = True) -> Verification:
    """Hash the file and compare it with ``expected`` (else the ``.sha256`` file beside it).

    A missing file, a folder, or (with ``gguf``) a file that is not GGUF is a
    :class:`ConfigurationError` saying so.
    """
    file = Path(path).expanduser()
    shown = _shown(file)
    try:
        exists, regular = file.exists(), file.is_file()
        gguf_ok = not gguf or not regular or is_gguf(file)
    except OSError as err:  # a name too long, a folder not readable, ...
        raise ConfigurationError(f"{shown}: cannot be read ({err.strerror or err}): give the "
                                 "path of a local GGUF file") from None
    if not exists:
        raise ConfigurationError(f"{shown}: no such file: give the path of a local GGUF file "
                                 "or the name of a model a provider lists")
    if not regular:
        raise ConfigurationError(f"{shown} is not a file: give the path of a GGUF file")
    if not gguf_ok:
        raise ConfigurationError(f"{shown} is not a GGUF file (it does not start with 'GGUF')")
    if expected is not None:
        expected = normalize_sha256(expected, field=source or "sha256")
    else:
        expected = expected_from_sidecar(file)
        source = f"{file.name}.sha256" if expected is not None else None
    try:
        actual, size = sha256_file(file), file.stat().st_size
    except OSError as err:
        raise ConfigurationError(f"{shown}: cannot be read ({err.strerror or err})") from None
    return Verification(path=file, actual=actual, expected=expected,
                        source=source if expected is not None else None, size=size)


def _shown(path: Path) -> str:
    """The path for a message: at most 200 characters (a hostile path can be 100k)."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:100]}...{text[-100:]} ({len(text)} characters)"
