"""Every in-tree provider that estimates usage estimates a prompt the same way
(:mod:`modelplex.tokens`), so counts from different providers can be compared."""

from __future__ import annotations

from modelplex.tokens import estimate_prompt_tokens, estimate_tokens
from modelplex.types import ChatMessage

MESSAGES = [ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="What is the capital of France?")]


def test_the_plugins_estimate_a_prompt_alike() -> None:
    from modelplex_anthropic.wire import usage_from as anthropic_usage
    from modelplex_ollama.wire import estimated_usage
    from modelplex_openai.wire import usage_from as openai_usage

    expected = estimate_prompt_tokens(MESSAGES)
    assert openai_usage(None, None, MESSAGES, 0).prompt_tokens == expected
    assert anthropic_usage({}, MESSAGES, 0).prompt_tokens == expected
    ollama = estimated_usage(MESSAGES, "Paris.")
    assert (ollama.prompt_tokens, ollama.completion_tokens) == (expected, estimate_tokens("Paris."))
    assert ollama.estimated
