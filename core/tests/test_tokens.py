"""``modelplex.tokens``: the one token estimate every provider and the server use."""

from __future__ import annotations

from modelplex.tokens import IMAGE_TOKENS, MESSAGE_TOKENS, estimate_prompt_tokens, estimate_tokens
from modelplex.types import ChatMessage


def test_text_is_about_four_characters_a_token_rounded_up() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8, 13)] == [0, 1, 1, 2, 2, 4]


def test_prompt_counts_text_tool_calls_tools_messages_and_images() -> None:
    plain = [ChatMessage(role="system", content="Be brief."),
             ChatMessage(role="user", content="What is the capital of France?")]
    assert estimate_prompt_tokens(plain) == estimate_tokens("Be brief." "What is the capital "
                                                            "of France?") + 2 * MESSAGE_TOKENS
    assert estimate_prompt_tokens([]) == 0
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with_call = [ChatMessage(role="assistant", content="", tool_calls=(call,))]
    assert estimate_prompt_tokens(with_call) > MESSAGE_TOKENS
    image = [ChatMessage(role="user", content="hi", images=(b"\x89PNG\r\n\x1a\n",))]
    assert estimate_prompt_tokens(image) == 1 + MESSAGE_TOKENS + IMAGE_TOKENS
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    assert estimate_prompt_tokens(plain, tools) > estimate_prompt_tokens(plain)
