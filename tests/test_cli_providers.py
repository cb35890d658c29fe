"""``modelplex chat`` end to end through the Anthropic and Hugging Face plugins, configured by
their environment variables only, against the test upstream on 127.0.0.1."""

from __future__ import annotations

import pytest

from modelplex.testing import Cli
from modelplex.testing.upstream import PIECE, FaultyUpstream

#: ``modelplex ARGS`` in a child process, awaited; ``env`` is added to this process's
modelplex = Cli(drop=()).arun


@pytest.mark.parametrize(("model", "variables"), [
    ("anthropic:claude-sonnet-4-5", {"ANTHROPIC_BASE_URL": "{url}",
                                     "ANTHROPIC_API_KEY": "sk-ant-cli-test-123456789"}),
    ("tgi", {"TGI_URL": "{url}"}),
])
async def test_chat_streams_through_the_plugin(model: str, variables: dict[str, str]) -> None:
    async with FaultyUpstream(chunks=3) as upstream:
        env = {k: v.format(url=upstream.url) for k, v in variables.items()}
        code, out, err = await modelplex("chat", "-m", model, "Say something.", env=env)
        assert (code, err) == (0, "")
        assert out.strip() == (PIECE * 3).strip()
        assert upstream.requests == 1


async def test_a_server_error_is_a_clean_cli_error() -> None:
    async with FaultyUpstream() as upstream:
        upstream.faults.extend(["529", "529"])  # a plain model retries a 529 once
        code, out, err = await modelplex(
            "chat", "-m", "anthropic:claude-sonnet-4-5", "hi",
            env={"ANTHROPIC_BASE_URL": upstream.url,
                 "ANTHROPIC_API_KEY": "sk-ant-cli-test-123456789"})
    assert code != 0
    assert "Error:" in err and "529" in err and "Traceback" not in err
    assert "sk-ant-cli-test-123456789" not in out + err
