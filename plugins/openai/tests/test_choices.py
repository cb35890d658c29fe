"""One answer per request: ``n`` other than 1 is refused, and a server that sends several
choices anyway (interleaved in a stream, or in a whole answer) gives choice 0's, not a merge.

The transcripts are what vLLM and OpenAI send for ``n=2``: one choice per chunk, each with its
``index``, the two choices' chunks interleaved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aioresponses import aioresponses

from modelplex.errors import OptionsError
from modelplex.testing.pytest_plugin import Sent
from modelplex_openai.provider import OpenAIProvider

BASE = "https://api.openai.test/v1"
CHAT = BASE + "/chat/completions"
SSE = {"Content-Type": "text/event-stream"}
MESSAGES = [{"role": "user", "content": "Name a colour."}]


def sse(*events: str) -> str:
    return "".join(f"data: {event}\n\n" for event in events)


HEAD = '"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m",'
INTERLEAVED = sse(
    '{' + HEAD + '"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    '{' + HEAD + '"choices":[{"index":1,"delta":{"role":"assistant","content":""}}]}',
    '{' + HEAD + '"choices":[{"index":1,"delta":{"content":"Gr"}}]}',
    '{' + HEAD + '"choices":[{"index":0,"delta":{"content":"Bl"}}]}',
    '{' + HEAD + '"choices":[{"index":1,"delta":{"content":"een","reasoning_content":"hm"},'
    '"finish_reason":"length"}]}',
    '{' + HEAD + '"choices":[{"index":0,"delta":{"content":"ue"}}]}',
    # both choices in one chunk, choice 1 first
    '{' + HEAD + '"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"c1",'
    '"type":"function","function":{"name":"f","arguments":"{}"}}]}},'
    '{"index":0,"delta":{"content":"."},"finish_reason":"stop"}]}',
    '{' + HEAD + '"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6,'
    '"total_tokens":11}}',
    "[DONE]")


async def test_interleaved_choices_stream_choice_0_only(provider: OpenAIProvider,
                                                        mock: aioresponses) -> None:
    mock.post(CHAT, body=INTERLEAVED, headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert "".join(c.content for c in chunks) == "Blue."
    assert not any(c.reasoning for c in chunks)
    final = chunks[-1]
    assert final.finish_reason == "stop"  # choice 1's "length" is not taken
    assert not final.tool_calls
    assert final.usage is not None and final.usage.completion_tokens == 6
    assert final.response_id == "chatcmpl-1"


async def test_a_stream_without_choice_0_is_not_someone_elses_answer(
        provider: OpenAIProvider, mock: aioresponses) -> None:
    mock.post(CHAT, body=sse(
        '{"choices":[{"index":1,"delta":{"content":"Green"},"finish_reason":"stop"}]}',
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert "".join(c.content for c in chunks) == ""
    assert chunks[-1].finish_reason == "stop"  # [DONE] ended it


async def test_complete_reads_choice_0(provider: OpenAIProvider, mock: aioresponses) -> None:
    mock.post(CHAT, payload={"id": "chatcmpl-2", "object": "chat.completion", "model": "m",
                             "choices": [
                                 {"index": 1, "message": {"role": "assistant",
                                                          "content": "Green"},
                                  "finish_reason": "length"},
                                 {"index": 0, "message": {"role": "assistant",
                                                          "content": "Blue"},
                                  "finish_reason": "stop"}]})
    answer = await provider.complete(MESSAGES, model="m")
    assert answer.content == "Blue"
    assert answer.finish_reason == "stop"


@pytest.mark.parametrize("options", [{"n": 2}, {"n": 0}, {"extra_body": {"n": 3}}])
async def test_several_choices_are_refused_before_sending(
        provider: OpenAIProvider, mock: aioresponses, sent: Sent,
        options: dict[str, object]) -> None:
    with pytest.raises(OptionsError, match=r"n must be 1.*several requests, or a batch"):
        async for _ in provider.chat(MESSAGES, model="m", options=options):
            pass
    with pytest.raises(OptionsError, match=r"'n'|n=3"):
        await provider.complete(MESSAGES, model="m", options=options)
    assert sent.bodies(mock) == []


async def test_n_of_1_is_accepted_and_not_sent(provider: OpenAIProvider, mock: aioresponses,
                                               sent: Sent) -> None:
    mock.post(CHAT, body=sse('{"choices":[{"index":0,"delta":{"content":"Blue"},'
                             '"finish_reason":"stop"}]}', "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m", options={"n": 1})]
    assert "".join(c.content for c in chunks) == "Blue"
    assert "n" not in sent.bodies(mock)[0]


def test_the_refusal_reads_as_documented(provider: OpenAIProvider) -> None:
    # docs/providers/openai.md quotes this message
    with pytest.raises(OptionsError) as info:
        provider.parse_options({"n": 2})
    expected = ("option 'n': modelplex returns one answer per request, so n must be 1 (or "
                "left out); for several answers send several requests, or a batch (modelplex "
                "batch) (got 2)")
    assert str(info.value) == expected
    assert expected in (Path(__file__).parents[3] / "docs/providers/openai.md").read_text()
