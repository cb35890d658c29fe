"""Text Generation Inference's native API and Text Embeddings Inference (protocols.md §4.2),
replayed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ModelNotFoundError,
    OptionsError,
    ServerBusyError,
    ServerError,
    StreamError,
    UnsupportedOperationError,
)
from modelplex.http import Timeouts
from modelplex.testing import ProviderConformanceTests
from modelplex.testing.replay import sent_bodies
from modelplex_huggingface.tei import TEIProvider
from modelplex_huggingface.tgi import TGIChunk, TGIProvider, TGIResponse

BASE = "http://tgi.test:8080"
SSE = {"Content-Type": "text/event-stream"}
ASK = [{"role": "user", "content": "What is deep learning?"}]
TEMPLATED = "<|user|>\nWhat is deep learning?</s>\n<|assistant|>\n"
TOKENIZED = {"tokenize_response": [{"id": i, "text": "t", "start": 0, "stop": 1}
                                   for i in range(12)], "templated_text": TEMPLATED}
# The non-streaming twin of tgi_stream.sse (TGI's /generate answer with details: true).
GENERATED = {"generated_text": " Deep Learning", "details": {
    "finish_reason": "eos_token", "generated_tokens": 3, "seed": None, "prefill": [],
    "tokens": [{"id": 89554, "text": " Deep", "logprob": -0.97, "special": False},
               {"id": 89950, "text": " Learning", "logprob": -0.39, "special": False},
               {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}]}}
INFO = {"model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_input_tokens": 4095,
        "max_total_tokens": 4096, "version": "3.3.6"}
HEADERS = {"User-Agent": "modelplex-huggingface/0.1.0", "Accept": "application/json",
           "Content-Type": "application/json"}


@pytest.fixture
async def tgi() -> AsyncIterator[TGIProvider]:
    p = TGIProvider(base_url=BASE)
    yield p
    await p.aclose()


class TestTGIConformance(ProviderConformanceTests):
    """The shared provider contract against the core's test upstream speaking TGI's native
    API."""

    wire = "tgi"
    plugin = "huggingface"

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> TGIProvider:
        return TGIProvider(base_url=base_url, api_key=api_key, timeouts=timeouts)


async def test_stream_token_ids_details_and_exact_requests(
        tgi: TGIProvider, mock: aioresponses, transcript: Callable[[str], str],
        sent: Callable[..., list[Any]]) -> None:
    mock.get(BASE + "/info", payload=INFO)
    mock.post(BASE + "/chat_tokenize", payload=TOKENIZED)
    mock.post(BASE + "/generate_stream", body=transcript("tgi_stream.sse"), headers=SSE)
    chunks = [c async for c in tgi.chat(
        ASK, model="HuggingFaceTB/SmolLM2-135M-Instruct",
        options={"temperature": 0, "top_p": 1, "max_tokens": 20, "stop": ["\n\n"], "seed": 7,
                 "top_k": 10, "repetition_penalty": 1.1})]
    assert [c.content for c in chunks[:-1]] == [" Deep", " Learning"]  # EOS text not shown
    final = chunks[-1]
    assert isinstance(final, TGIChunk)
    assert final.token_ids == [89554, 89950, 2]
    assert final.finish_reason == "stop"
    assert final.details == {"finish_reason": "eos_token", "generated_tokens": 3, "seed": None,
                             "input_length": 12}
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (12, 3)
    assert final.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert sent(mock, tgi) == [
        ("GET", BASE + "/info", {k: v for k, v in HEADERS.items() if k != "Content-Type"},
         None),
        ("POST", BASE + "/chat_tokenize", HEADERS, {"model": "tgi", "messages": ASK}),
        ("POST", BASE + "/generate_stream", HEADERS, {"inputs": TEMPLATED, "parameters": {
            "details": True, "do_sample": False, "max_new_tokens": 20, "stop": ["\n\n"],
            "seed": 7, "top_k": 10, "repetition_penalty": 1.1}}),
    ]


async def test_generate_with_token_ids_and_prompt_header(
        tgi: TGIProvider, mock: aioresponses, sent: Callable[..., list[Any]]) -> None:
    mock.post(BASE + "/chat_tokenize", payload=TOKENIZED)
    mock.post(BASE + "/generate", payload=GENERATED, headers={"x-prompt-tokens": "13"})
    response = await tgi.complete(ASK, model="tgi", options={"temperature": 0.7},
                                  response_format={"type": "object"})
    assert isinstance(response, TGIResponse)
    assert (response.content, response.finish_reason) == (" Deep Learning", "stop")
    assert response.token_ids == [89554, 89950, 2]
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (13, 3)
    body = sent(mock, tgi)[-1][3]
    assert body == {"inputs": TEMPLATED, "parameters": {
        "details": True, "temperature": 0.7,
        "grammar": {"type": "json", "value": {"type": "object"}}}}


async def test_final_event_without_details_counts_tokens(
        tgi: TGIProvider, mock: aioresponses, transcript: Callable[[str], str]) -> None:
    mock.post(BASE + "/chat_tokenize", payload=TOKENIZED)
    mock.post(BASE + "/generate_stream", body=transcript("tgi_vlm_final.sse"), headers=SSE)
    chunks = [c async for c in tgi.chat(ASK, model="tgi")]
    assert [c.content for c in chunks] == [".", ""]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 1)


async def test_template_none_sends_the_text(mock: aioresponses, transcript: Callable[[str], str],
                                            sent: Callable[..., list[Any]]) -> None:
    mock.post(BASE + "/generate_stream", body=transcript("tgi_stream.sse"), headers=SSE)
    async with TGIProvider(base_url=BASE, template="none") as p:
        [c async for c in p.chat([{"role": "user", "content": "Deep"}], model="tgi")]
        [(_, url, _, body)] = sent(mock, p)
    assert url == BASE + "/generate_stream" and body["inputs"] == "Deep"


async def test_error_event_mid_stream_keeps_the_partial(tgi: TGIProvider,
                                                        mock: aioresponses) -> None:
    mock.post(BASE + "/chat_tokenize", payload=TOKENIZED)
    mock.post(BASE + "/generate_stream", headers=SSE, body=(
        'data:{"index":1,"token":{"id":89554,"text":" Deep","logprob":-0.97,"special":false},'
        '"generated_text":null,"details":null}\n\n'
        'data:{"error":"Request failed during generation: Server error: CUDA out of memory",'
        '"error_type":"generation"}\n\n'))
    with pytest.raises(StreamError, match="CUDA out of memory") as info:
        async for _ in tgi.chat(ASK, model="tgi"):
            pass
    assert info.value.partial_content == " Deep"
    assert info.value.error_type == "generation"  # type: ignore[attr-defined]


async def test_stream_without_final_event_is_incomplete(tgi: TGIProvider,
                                                        mock: aioresponses) -> None:
    mock.post(BASE + "/chat_tokenize", payload=TOKENIZED)
    mock.post(BASE + "/generate_stream", headers=SSE, body=(
        'data:{"index":1,"token":{"id":89554,"text":" Deep","logprob":-0.97,"special":false},'
        '"generated_text":null,"details":null}\n\n'))
    with pytest.raises(StreamError, match="ended before"):
        async for _ in tgi.chat(ASK, model="tgi"):
            pass


@pytest.mark.parametrize(("status", "body", "error_type", "text"), [
    (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
                    "4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
           "error_type": "validation"}, BadRequestError, r"must be <= 4096.*\(validation\)"),
    (424, {"error": "Request failed during generation: Server error: CUDA out of memory",
           "error_type": "generation"}, ServerError, "CUDA out of memory"),
    (429, {"error": "Model is overloaded", "error_type": "overloaded"}, ServerBusyError,
     "Model is overloaded"),
])
async def test_tgi_error_shapes(tgi: TGIProvider, mock: aioresponses, status: int,
                                body: dict[str, str], error_type: type[Exception],
                                text: str) -> None:
    mock.post(BASE + "/chat_tokenize", payload=TOKENIZED)
    mock.post(BASE + "/generate_stream", status=status, payload=body)
    with pytest.raises(error_type, match=text):
        async for _ in tgi.chat(ASK, model="tgi"):
            pass


async def test_401_with_empty_body_says_to_give_the_key(mock: aioresponses) -> None:
    mock.post(BASE + "/chat_tokenize", status=401, body="")
    async with TGIProvider(base_url=BASE) as p:
        with pytest.raises(AuthenticationError, match="runs with --api-key"):
            await p.complete(ASK, model="tgi")


async def test_wrong_model_names_the_served_one(tgi: TGIProvider, mock: aioresponses) -> None:
    mock.get(BASE + "/info", payload=INFO)
    with pytest.raises(ModelNotFoundError, match="serves 'HuggingFaceTB/SmolLM2-135M-Instruct'"):
        await tgi.complete(ASK, model="gpt2")


async def test_list_models_from_info(tgi: TGIProvider, mock: aioresponses) -> None:
    mock.get(BASE + "/info", payload=INFO)
    [model] = await tgi.list_models()
    assert (model.id, model.context_length) == ("HuggingFaceTB/SmolLM2-135M-Instruct", 4096)
    assert model.details["version"] == "3.3.6"


def test_tgi_option_ranges(tgi: TGIProvider) -> None:
    with pytest.raises(OptionsError, match="typical_p"):
        tgi.parse_options({"typical_p": 1})
    with pytest.raises(OptionsError, match="unknown option 'presence_penalty'"):
        tgi.parse_options({"presence_penalty": 1})


# -- TEI --------------------------------------------------------------------------------------
async def test_tei_embeds_in_batches(mock: aioresponses, sent: Callable[..., list[Any]],
                                     clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TEI_KEY", "tei-secret-abcdefgh")
    mock.post("http://tei.test/embed", payload=[[0.1, 0.2], [0.3, 0.4]])
    mock.post("http://tei.test/embed", payload=[[0.5, 0.6]])
    async with TEIProvider(base_url="http://tei.test", api_key_env="TEI_KEY") as p:
        vectors = await p.embed(["a", "b", "c"], model="",
                                options={"batch_size": 2, "normalize": False})
        requests = sent(mock, p, "tei-secret-abcdefgh")
    assert vectors == [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    headers = {**HEADERS, "Authorization": "<redacted>"}
    assert requests == [
        ("POST", "http://tei.test/embed", headers, {"inputs": ["a", "b"], "normalize": False}),
        ("POST", "http://tei.test/embed", headers, {"inputs": ["c"], "normalize": False})]


async def test_tei_follows_the_servers_max_client_batch_size(mock: aioresponses) -> None:
    """Seed 003: a TEI started with --max-client-batch-size 16 answers 413 to more texts; 40
    texts go in batches of 16, 16 and 8, after one GET /info (read once per provider)."""
    mock.get("http://tei.test/info", payload={"model_id": "BAAI/bge-small-en-v1.5",
                                              "max_client_batch_size": 16})
    texts = [f"text {i}" for i in range(40)]
    for size in (16, 16, 8, 16, 4):
        mock.post("http://tei.test/embed", payload=[[1.0]] * size)
    async with TEIProvider(base_url="http://tei.test") as p:
        vectors = await p.embed(texts)
        assert await p.embed(texts[:20]) == vectors[:20]
    bodies = sent_bodies(mock)
    assert [len(b["inputs"]) for b in bodies] == [16, 16, 8, 16, 4]
    assert [t for b in bodies[:3] for t in b["inputs"]] == texts  # in order
    assert len(vectors) == 40
    assert len(mock.requests[("GET", URL("http://tei.test/info"))]) == 1


async def test_tei_without_a_limit_in_info_sends_32(mock: aioresponses) -> None:
    mock.get("http://tei.test/info", status=404)  # an old server, or a proxy in front
    mock.post("http://tei.test/embed", payload=[[0.0]] * 32)
    mock.post("http://tei.test/embed", payload=[[0.0]] * 8)
    async with TEIProvider(base_url="http://tei.test") as p:
        await p.embed(["x"] * 40)
        with pytest.raises(OptionsError, match="'batch_size' must be > 0"):
            await p.embed(["x", "y"], options={"batch_size": True})
    assert [len(b["inputs"]) for b in sent_bodies(mock)] == [32, 8]


async def test_tei_413_hints_at_batch_size(mock: aioresponses) -> None:
    mock.post("http://tei.test/embed", status=413, payload={
        "error": "batch size 64 > maximum allowed batch size 32", "error_type": "Validation"})
    async with TEIProvider(base_url="http://tei.test") as p:
        with pytest.raises(Exception, match="batch_size option"):
            await p.embed(["x"] * 64, model="", options={"batch_size": 64})


async def test_tei_has_no_chat_and_rejects_unknown_options() -> None:
    async with TEIProvider(base_url="http://tei.test") as p:
        with pytest.raises(UnsupportedOperationError, match="embeddings only"):
            async for _ in p.chat(ASK, model="m"):
                pass
        with pytest.raises(OptionsError, match="unknown embedding option"):
            await p.embed(["x"], options={"dims": 3})


def test_timeouts_as_number_or_mapping() -> None:
    from modelplex.errors import ConfigurationError

    assert TGIProvider(timeouts=30).http.timeouts.total == 30
    assert TEIProvider(timeouts={"first_byte": 5}).http.timeouts.first_byte == 5
    with pytest.raises(ConfigurationError, match="timeouts"):
        TGIProvider(timeouts=-1)


@pytest.mark.parametrize(("native", "finish"), [
    ("stop", "stop"), ("stop_sequence", "stop"), ("length", "length"),
    ("a_new_reason", "other")])
async def test_finish_reasons_in_modelplex_vocabulary(native: str, finish: str) -> None:
    from modelplex.testing import FaultyUpstream, Reply

    async with FaultyUpstream(models=["m"]) as upstream, \
            TGIProvider(base_url=upstream.url) as provider:
        # "stop" goes on the wire as TGI's eos_token; the others as they are
        upstream.script("m", Reply(finish=native), Reply(finish=native))
        chunks = [c async for c in provider.chat([{"role": "user", "content": "hi"}],
                                                 model="tgi")]
        answer = await provider.complete([{"role": "user", "content": "hi"}], model="tgi")
    assert chunks[-1].finish_reason == answer.finish_reason == finish
