"""Tests for the tiny random-weight GGUF generator (needs gguf, numpy, llama-cpp-python)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

pytest.importorskip("gguf")
pytest.importorskip("numpy")
llama_cpp = pytest.importorskip("llama_cpp")

from modelplex_llamacpp.tiny_gguf import N_EMBD, write_tiny_gguf  # noqa: E402

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="module")
def llm(model_path: pathlib.Path) -> Any:
    return llama_cpp.Llama(model_path=str(model_path), n_ctx=512, verbose=False, seed=1)


def test_written_small_and_deterministic(tmp_path: pathlib.Path) -> None:
    a = write_tiny_gguf(tmp_path / "nested" / "dir" / "a.gguf", seed=3)
    b = write_tiny_gguf(str(tmp_path / "b.gguf"), seed=3)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=4)
    assert isinstance(a, pathlib.Path)
    assert a.is_file()
    assert 100_000 < a.stat().st_size < 2_000_000
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_metadata(model_path: pathlib.Path) -> None:
    import gguf

    reader = gguf.GGUFReader(model_path)

    def field(name: str) -> Any:
        return reader.fields[name].contents()

    assert field("general.architecture") == "llama"
    assert field("general.name") == "tiny-random-llama"
    assert field("general.file_type") == int(gguf.LlamaFileType.ALL_F32)
    assert field("llama.embedding_length") == N_EMBD
    assert field("llama.context_length") >= 2048
    assert field("tokenizer.ggml.add_space_prefix") is False
    assert "<|im_start|>" in field("tokenizer.chat_template")


def test_chat_completion_and_stream(llm: Any) -> None:
    kwargs: dict[str, Any] = {"messages": HI, "max_tokens": 16, "temperature": 0, "seed": 1}
    resp = llm.create_chat_completion(**kwargs)
    text = resp["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text
    usage = resp["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Babble should be mostly printable ASCII.
    assert sum(ch.isprintable() and ord(ch) < 128 for ch in text) >= 0.8 * len(text)

    chunks = list(llm.create_chat_completion(stream=True, **kwargs))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == text
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_max_tokens_gives_length(llm: Any) -> None:
    resp = llm.create_chat_completion(messages=HI, max_tokens=5, temperature=0, seed=1)
    assert resp["choices"][0]["finish_reason"] == "length"
    assert resp["usage"]["completion_tokens"] == 5


def test_stops_by_itself_sometimes(llm: Any) -> None:
    reasons = []
    for seed in range(8):
        resp = llm.create_chat_completion(messages=HI, max_tokens=400, temperature=1.0, seed=seed)
        reasons.append(resp["choices"][0]["finish_reason"])
    assert "stop" in reasons


def test_embedding(model_path: pathlib.Path) -> None:
    emb = llama_cpp.Llama(model_path=str(model_path), n_ctx=512, verbose=False, embedding=True)
    vec = emb.create_embedding("hello")["data"][0]["embedding"]
    assert len(vec) == N_EMBD
    other = emb.create_embedding("something else")["data"][0]["embedding"]
    assert vec != other


def test_json_object_response_format(llm: Any) -> None:
    resp = llm.create_chat_completion(
        messages=HI,
        max_tokens=200,
        temperature=0,
        seed=1,
        response_format={"type": "json_object"},
    )
    json.loads(resp["choices"][0]["message"]["content"])
