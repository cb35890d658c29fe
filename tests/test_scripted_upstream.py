"""One scripted test upstream: FaultyUpstream answers conversations with text and tool calls
in each wire format (OpenAI, Ollama, Anthropic), streamed and whole, besides its faults."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelplex import create_provider
from modelplex.errors import RateLimitError
from modelplex.provider import Provider
from modelplex.testing import FaultyUpstream, Reply

MESSAGES = [{"role": "user", "content": "Weather in Oslo?"}]
CALLS = [{"id": "c1", "name": "forecast", "arguments": {"city": "Oslo", "days": 2}},
         {"name": "forecast", "arguments": '{"city": "Rome"}'}]

PROVIDERS: dict[str, Callable[[str], Provider]] = {
    "openai": lambda url: create_provider("openai", base_url=url + "/v1", api_key="sk-x"),
    "ollama": lambda url: create_provider("ollama", host=url),
    "anthropic": lambda url: create_provider("anthropic", base_url=url, api_key="sk-x"),
}


@pytest.mark.parametrize("wire", sorted(PROVIDERS))
@pytest.mark.parametrize("stream", [True, False])
async def test_text_and_tool_calls_in_each_wire(wire: str, stream: bool) -> None:
    async with FaultyUpstream() as upstream, PROVIDERS[wire](upstream.url) as provider:
        upstream.replies.extend([Reply("Let me look.", tool_calls=CALLS),
                                 Reply("Sunny.", pieces=2, prompt_tokens=9)])
        for _ in range(2):
            if stream:
                chunks = [c async for c in provider.chat(MESSAGES, model="m")]
                text = "".join(c.content for c in chunks)
                final = chunks[-1]
                # (Ollama delivers its calls on the chunk they came in, the others at the end)
                calls = [call for c in chunks for call in c.tool_calls or []]
                finish, usage = final.finish_reason, final.usage
            else:
                answer = await provider.complete(MESSAGES, model="m")
                text, calls = answer.content, answer.tool_calls
                finish, usage = answer.finish_reason, answer.usage
            if not upstream.replies:
                break
            assert text == "Let me look."
            assert [(c.name, c.arguments) for c in calls] == [
                ("forecast", {"city": "Oslo", "days": 2}), ("forecast", {"city": "Rome"})]
            assert calls[0].id == "c1" and calls[1].id
            assert finish == "tool_calls"
        assert (text, finish, calls) == ("Sunny.", "stop", [])
        assert usage is not None and usage.prompt_tokens == 9
        assert len(upstream.bodies) == 2
        assert upstream.bodies[0]["messages"][-1]["content"] == "Weather in Oslo?"


async def test_scripts_then_replies_then_faults() -> None:
    async with FaultyUpstream(chunks=2) as upstream, PROVIDERS["openai"](upstream.url) as p:
        upstream.script("special", Reply("for special"))
        upstream.replies.extend(["429", Reply("from replies")])
        upstream.faults.append("500")
        assert (await p.complete(MESSAGES, model="special")).content == "for special"
        with pytest.raises(RateLimitError):
            await p.complete(MESSAGES, model="m")
        assert (await p.complete(MESSAGES, model="m")).content == "from replies"
        with pytest.raises(Exception, match="500"):
            await p.complete(MESSAGES, model="m")
        assert (await p.complete(MESSAGES, model="m")).content == "tok tok "


def test_reply_pieces() -> None:
    assert Reply("abcdef").texts(5) == ["ab", "cd", "ef"]
    assert Reply("abcdef", pieces=2).texts(5) == ["abc", "def"]
    assert Reply(pieces=["x", "y"]).texts(5) == ["x", "y"]
    assert Reply(pieces=2).texts(5) == ["tok ", "tok "]
    assert Reply().texts(3) == ["tok "] * 3
    assert Reply(tool_calls=CALLS).texts(3) == []
