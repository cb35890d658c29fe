"""TGI wire cases beyond the documented transcripts' plain paths, replayed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aioresponses import aioresponses

from modelplex.errors import ConfigurationError, ServerBusyError
from modelplex_huggingface.tgi import TGIProvider

BASE = "http://tgi.test:8080"
ASK = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def tgi() -> AsyncIterator[TGIProvider]:
    p = TGIProvider(base_url=BASE)
    yield p
    await p.aclose()


async def test_a_server_without_chat_tokenize_says_what_to_do(tgi: TGIProvider,
                                                              mock: aioresponses) -> None:
    # older TGI (and servers speaking only its generate API) answer 404 with an empty body
    mock.post(BASE + "/chat_tokenize", status=404, body="")
    with pytest.raises(ConfigurationError, match=r"no /chat_tokenize.*template = \"none\""):
        async for _ in tgi.chat(ASK, model="tgi"):
            pass


async def test_a_scaled_to_zero_endpoint_gives_its_wait(tgi: TGIProvider,
                                                        mock: aioresponses) -> None:
    # a Hugging Face endpoint waking up: 503 with the estimated time to wait
    mock.post(BASE + "/chat_tokenize", status=503, payload={
        "error": "Model HuggingFaceTB/SmolLM2-135M-Instruct is currently loading",
        "estimated_time": 42.5})
    with pytest.raises(ServerBusyError, match="currently loading") as info:
        async for _ in tgi.chat(ASK, model="tgi"):
            pass
    assert info.value.retry_after == 42.5
