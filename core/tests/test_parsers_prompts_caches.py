"""The built-in parser, prompt template and cache."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
from pydantic import ValidationError

from modelplex.caches import MemoryCache
from modelplex.chunks import ChatResponse
from modelplex.errors import ParseError
from modelplex.parsers import JsonDictParser
from modelplex.prompts import ChainOfThoughtPrompt


# -- JsonDictParser -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    '{"city": "Paris", "country": "France"}',
    '```json\n{"city": "Paris", "country": "France"}\n```',
    '```\n{"city": "Paris", "country": "France"}\n```',
    'Sure! Here it is:\n```json\n{"city": "Paris", "country": "France"}\n```\nAnything else?',
    'The answer is {"city": "Paris", "country": "France"} as requested.',
    '{"city": "Paris", "country": "France",}',
    '```json\n{\n  "city": "Paris",\n  "country": "France",\n}\n```',
])
def test_json_dict_parser_accepts(text: str) -> None:
    result = JsonDictParser(required_keys=["city"]).parse(text)
    assert result.parsed == {"city": "Paris", "country": "France"}
    assert result.raw == text


def test_json_dict_parser_nested_and_trailing_commas_in_lists() -> None:
    text = 'Result: {"cities": ["Paris", "Lyon",], "meta": {"n": 2,},}'
    assert JsonDictParser().parse(text).parsed == {"cities": ["Paris", "Lyon"],
                                                   "meta": {"n": 2}}


def test_json_dict_parser_reads_response_objects() -> None:
    response = ChatResponse(content='{"a": 1}', model="m", provider="p")
    assert JsonDictParser().parse(response).parsed == {"a": 1}

    @attrs.define
    class HasText:
        text: str

    assert JsonDictParser().parse(HasText('{"b": 2}')).parsed == {"b": 2}
    with pytest.raises(ParseError, match="cannot read text from int"):
        JsonDictParser().parse(42)


def test_json_dict_parser_missing_required_keys() -> None:
    text = '{"city": "Paris"}'
    with pytest.raises(ParseError) as info:
        JsonDictParser(required_keys=["city", "population", "mayor"]).parse(text)
    assert "['population', 'mayor']" in str(info.value)
    assert info.value.raw == text


@pytest.mark.parametrize(("text", "message"), [
    ("Paris is the capital.", "no JSON object found"),
    ('["Paris", "Lyon"]', "expected a JSON object, but the answer holds a list"),
    ("{not json at all}", "no JSON object found"),
    ("", "the answer is empty; expected a JSON object"),
])
def test_json_dict_parser_no_object(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        JsonDictParser().parse(text)
    assert info.value.raw == text


def test_json_dict_parser_format_instruction() -> None:
    assert JsonDictParser().format_instruction == "Respond with a JSON object only."
    assert JsonDictParser(["city", "country"]).format_instruction == (
        "Respond with a JSON object only, with the keys 'city', 'country'.")


# -- ChainOfThoughtPrompt -----------------------------------------------------------------------
def test_chain_of_thought_render() -> None:
    prompt = ChainOfThoughtPrompt(task="What is 17 * 3?",
                                  steps=["Split 17 into 10 and 7", "Multiply each by 3"])
    text = prompt.render()
    lines = text.splitlines()
    assert lines[0] == "Task: What is 17 * 3?"
    assert "1. Split 17 into 10 and 7" in lines
    assert "2. Multiply each by 3" in lines
    assert lines.index("1. Split 17 into 10 and 7") < lines.index("2. Multiply each by 3")
    assert "'solution'" in lines[-1]
    assert "1." not in ChainOfThoughtPrompt(task="x").render()


def test_chain_of_thought_parse() -> None:
    prompt = ChainOfThoughtPrompt(task="What is 17 * 3?")
    answer = "10*3 = 30, 7*3 = 21.\nSOLUTION: this is a draft\nWait.\nSOLUTION:  51 \n"
    assert prompt.parse(answer) == {
        "reasoning": "10*3 = 30, 7*3 = 21.\nSOLUTION: this is a draft\nWait.",
        "solution": "51"}
    assert prompt.parse("  just an answer ") == {"reasoning": "just an answer", "solution": ""}


def test_chain_of_thought_validation() -> None:
    with pytest.raises(ValidationError, match="task"):
        ChainOfThoughtPrompt(task="")
    with pytest.raises(ValidationError, match="extra"):
        ChainOfThoughtPrompt(task="x", colour="red")  # type: ignore[call-arg]


# -- MemoryCache --------------------------------------------------------------------------------
async def test_memory_cache_lru_eviction() -> None:
    cache = MemoryCache(max_entries=2, ttl=None)
    await cache.set("a", 1)
    await cache.set("b", 2)
    assert await cache.get("a") == 1  # "a" is now the most recently used
    await cache.set("c", 3)  # evicts "b"
    assert await cache.get("b") is None
    assert await cache.get("a") == 1
    assert await cache.get("c") == 3
    await cache.set("a", 10)  # overwrite refreshes, no eviction
    await cache.set("d", 4)  # evicts "c"
    assert await cache.get("c") is None
    assert await cache.get("a") == 10
    assert await cache.get("d") == 4


async def test_memory_cache_ttl_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = MemoryCache(ttl=10)
    await cache.set("k", {"answer": "Paris"})
    now[0] += 9.9
    assert await cache.get("k") == {"answer": "Paris"}
    now[0] += 0.2
    assert await cache.get("k") is None
    assert "k" not in cache._data  # expired entries are dropped, not kept
    await cache.set("k", "again")
    assert await cache.get("k") == "again"


async def test_memory_cache_ttl_with_the_real_clock() -> None:
    import asyncio

    cache = MemoryCache(ttl=0.05)
    await cache.set("k", "v")
    assert await cache.get("k") == "v"
    await asyncio.sleep(0.1)
    assert await cache.get("k") is None


def test_memory_cache_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="max_entries must be > 0"):
        MemoryCache(max_entries=0)


async def test_missing_key() -> None:
    cache: Any = MemoryCache()
    assert await cache.get("nope") is None
