"""Structured output and the tool loop over real sockets, in the OpenAI and Ollama formats.

A scripted upstream answers each request from a list and records the bodies, so these tests
assert exactly what modelplex sent on each step of a re-ask or a tool loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from modelplex import ChatManager
from modelplex.errors import ParseError, UnsupportedOperationError
from modelplex.testing import FaultyUpstream, Reply

SYSTEM = {"role": "system", "content": "Be brief."}
# nobody reads the stream of get_structured or of the tool loop's rounds: they are asked
# whole (no "stream" in OpenAI bodies, "stream": false in Ollama's)


class City(BaseModel):
    name: str
    population: int


CITY_SCHEMA = City.model_json_schema()
INSTRUCTION = ('Respond with a JSON object with the keys "name" (string), "population" '
               '(integer), and nothing else.')


def openai_chat(upstream: FaultyUpstream) -> ChatManager:
    return ChatManager("openai:scripted", system_prompt="Be brief.", provider_config={
        "openai": {"base_url": upstream.url + "/v1", "api_key": "sk-test-0000000000"}})


def ollama_chat(upstream: FaultyUpstream) -> ChatManager:
    return ChatManager("ollama:scripted", system_prompt="Be brief.",
                       provider_config={"ollama": {"host": upstream.url}})


# -- structured output --------------------------------------------------------------------------
async def test_openai_native_reask_sends_the_error_back(upstream: FaultyUpstream) -> None:
    upstream.replies.extend([Reply("{'name': 'Paris', population: 'many'}"),
                             Reply('{"name": "Paris", "population": 2100000}')])
    async with openai_chat(upstream) as chat:
        result = await chat.get_structured("Tell me about Paris.", City)
        history = [(m.role.value, m.content) for m in chat.history]
    assert result.value == City(name="Paris", population=2100000)
    assert (result.mode, result.attempts) == ("native", 2)
    assert result.answers == ["{'name': 'Paris', population: 'many'}",
                              '{"name": "Paris", "population": 2100000}']
    assert (result.prompt_tokens, result.completion_tokens) == (6, 6)  # 3 + 3 per reply
    response_format = {"type": "json_schema",
                       "json_schema": {"name": "City", "schema": CITY_SCHEMA}}
    first_user = {"role": "user", "content": f"Tell me about Paris.\n\n{INSTRUCTION}"}
    assert upstream.bodies[0] == {"model": "scripted", "messages": [SYSTEM, first_user],
                                  "response_format": response_format}
    reask = ("Your answer could not be used: the JSON does not match the schema: population: "
             "Input should be a valid integer, unable to parse string as an integer. Answer "
             f"again. {INSTRUCTION}")
    assert upstream.bodies[1] == {
        "model": "scripted",
        "messages": [SYSTEM, first_user,
                     {"role": "assistant", "content": "{'name': 'Paris', population: 'many'}"},
                     {"role": "user", "content": reask}],
        "response_format": response_format}
    # the history keeps the question as asked and the good answer only
    assert history == [("user", "Tell me about Paris."),
                       ("assistant", '{"name": "Paris", "population": 2100000}')]


async def test_keep_attempts_keeps_every_exchange(upstream: FaultyUpstream) -> None:
    upstream.replies.extend([Reply("no idea"), Reply('{"name": "Rome", "population": 3}')])
    async with openai_chat(upstream) as chat:
        await chat.get_structured("Rome?", City, keep_attempts=True)
        roles = [m.role.value for m in chat.history]
    assert roles == ["user", "assistant", "user", "assistant"]


async def test_parse_error_keeps_every_raw_answer(upstream: FaultyUpstream) -> None:
    answers = ["I think Paris.", '{"name": "Paris"}', "```json\n{\"population\": 1}\n```"]
    upstream.replies.extend(Reply(a) for a in answers)
    async with openai_chat(upstream) as chat:
        with pytest.raises(ParseError) as info:
            await chat.get_structured("Paris?", City, max_retries=2)
        assert chat.history == []  # nothing half-done is kept
    err = info.value
    assert err.answers == answers
    assert len(err.errors) == 3
    assert err.errors[0] == "no JSON object found in the answer"
    assert "population: Field required" in err.errors[1]
    assert "name: Field required" in err.errors[2]
    assert "no valid answer after 3 attempts (native mode)" in str(err)
    assert len(upstream.bodies) == 3


async def test_a_deeply_nested_answer_is_reasked(upstream: FaultyUpstream) -> None:
    """Issue 19 #16: it escaped as RecursionError; now it is a bad answer like any other."""
    deep = '{"name": ' * 50_000 + '"x"' + "}" * 50_000
    good = '{"name": "Lima", "population": 10000000}'
    upstream.replies.extend([Reply(deep), Reply(good), Reply(deep), Reply(deep)])
    async with openai_chat(upstream) as chat:
        result = await chat.get_structured("Lima?", City)
        assert (result.value.name, result.attempts) == ("Lima", 2)
        reask = upstream.bodies[1]["messages"][-1]["content"]
        assert reask.startswith("Your answer could not be used: the answer is nested more "
                                "than 100 levels deep")
        with pytest.raises(ParseError, match="nested more than 100 levels deep"):
            async for _ in chat.stream_structured("Lima?", City, max_retries=1):
                pass
        assert [m.content for m in chat.history] == ["Lima?", good]


async def test_prompted_mode_sends_no_response_format(upstream: FaultyUpstream) -> None:
    upstream.replies.append(Reply('Sure!\n```json\n{"name": "Oslo", "population": 700000,}\n```'))
    async with openai_chat(upstream) as chat:
        result = await chat.get_structured("Oslo?", City, mode="prompted")
    assert result.value.population == 700000
    assert upstream.bodies[0] == {
        "model": "scripted", "messages": [SYSTEM, {"role": "user",
                                                   "content": f"Oslo?\n\n{INSTRUCTION}"}]}


async def test_tool_mode_forces_the_schema_as_a_tool(upstream: FaultyUpstream) -> None:
    upstream.replies.append(Reply(tool_calls=[{"name": "City", "arguments": {
        "name": "Lima", "population": 10000000}}]))
    async with openai_chat(upstream) as chat:
        result = await chat.get_structured("Lima?", City, mode="tool")
    assert result.value == City(name="Lima", population=10000000)
    body = upstream.bodies[0]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "City", "description": "Give the answer in this structure.",
        "parameters": CITY_SCHEMA}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "City"}}
    assert "response_format" not in body


@pytest.mark.parametrize("chat_of", [openai_chat, ollama_chat], ids=["openai", "ollama"])
async def test_deeply_nested_tool_arguments_are_reasked(upstream: FaultyUpstream,
                                                       chat_of: Any) -> None:
    """Issue 19 #16 in tool mode: arguments nested too deep were a RecursionError in the
    provider (openai: a ProviderError); now they are a bad answer, re-asked."""
    deep = '{"name": ' * 5_000 + '"x"' + "}" * 5_000
    upstream.replies.extend([
        Reply(tool_calls=[{"name": "City", "arguments": deep}]),
        Reply(tool_calls=[{"name": "City", "arguments": {"name": "Lima", "population": 9}}])])
    async with chat_of(upstream) as chat:
        result = await chat.get_structured("Lima?", City, mode="tool")
    assert (result.value, result.attempts) == (City(name="Lima", population=9), 2)
    reask = upstream.bodies[1]["messages"][-1]["content"]
    assert "nested more than 100 levels deep" in reask


async def test_ollama_native_sends_the_schema_as_format(upstream: FaultyUpstream) -> None:
    upstream.replies.extend([Reply('{"name": "Kyiv"}'),
                             Reply('{"name": "Kyiv", "population": 2950000}')])
    async with ollama_chat(upstream) as chat:
        result = await chat.get_structured("Kyiv?", City)
    assert (result.mode, result.attempts) == ("native", 2)
    first = {"role": "user", "content": f"Kyiv?\n\n{INSTRUCTION}"}
    assert upstream.bodies[0] == {"model": "scripted", "stream": False, "format": CITY_SCHEMA,
                                  "messages": [SYSTEM, first]}
    assert upstream.bodies[1]["messages"][2:] == [
        {"role": "assistant", "content": '{"name": "Kyiv"}'},
        {"role": "user", "content": "Your answer could not be used: the JSON does not match the "
                                    "schema: population: Field required. Answer again. "
                                    + INSTRUCTION}]


async def test_stream_structured_yields_growing_values(upstream: FaultyUpstream) -> None:
    upstream.replies.append(Reply('{"name": "Nice", "population": 340000}', pieces=6))
    async with openai_chat(upstream) as chat:
        updates = [u async for u in chat.stream_structured("Nice?", City)]
    partial, final = updates[:-1], updates[-1]
    assert final.done and final.value == City(name="Nice", population=340000)
    assert final.result is not None and final.result.attempts == 1
    assert partial and not any(u.done for u in partial)
    assert all(isinstance(u.value, dict) for u in partial)
    assert partial[-1].value == {"name": "Nice", "population": 340000}
    assert len({json.dumps(u.value) for u in partial}) == len(partial)  # each one is new


async def test_stream_structured_reasks_and_starts_again(upstream: FaultyUpstream) -> None:
    upstream.replies.extend([Reply('{"name": "Nice", "population": "lots"}'),
                             Reply('{"name": "Nice", "population": 340000}')])
    async with openai_chat(upstream) as chat:
        updates = [u async for u in chat.stream_structured("Nice?", City)]
        assert [m.content for m in chat.history] == [
            "Nice?", '{"name": "Nice", "population": 340000}']
    assert {u.attempt for u in updates if not u.done} == {1, 2}
    assert updates[-1].done and updates[-1].attempt == 2
    assert updates[-1].result is not None and updates[-1].result.answers[0] == (
        '{"name": "Nice", "population": "lots"}')
    assert upstream.bodies[1]["messages"][-2]["content"] == (
        '{"name": "Nice", "population": "lots"}')


# -- tools --------------------------------------------------------------------------------------
def forecast(city: str, days: int = 1) -> str:
    """The weather forecast for a city.

    Args:
        city: the city's name.
        days: how many days ahead.
    """
    return f"{city}: sunny for {days} day(s)"


FORECAST_SPEC = {"type": "function", "function": {
    "name": "forecast", "description": "The weather forecast for a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "the city's name."},
                                  "days": {"type": "integer", "default": 1,
                                           "description": "how many days ahead."}}}}}


async def test_openai_tool_loop_runs_parallel_calls(upstream: FaultyUpstream) -> None:
    started: list[str] = []
    both = asyncio.Event()

    async def population(city: str) -> int:
        """How many people live in a city."""
        started.append(city)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # only returns if the two calls overlap
        return {"Paris": 2100000, "Rome": 2800000}[city]

    upstream.replies.extend([
        Reply(tool_calls=[{"id": "c1", "name": "population", "arguments": {"city": "Paris"}},
                          {"id": "c2", "name": "population", "arguments": {"city": "Rome"}}]),
        Reply("Rome is bigger.")])
    async with openai_chat(upstream) as chat:
        meta = await chat.get_response_with_meta("Which is bigger?", tools=[population])
        history = [m.role.value for m in chat.history]
    assert meta.content == "Rome is bigger."
    assert sorted(started) == ["Paris", "Rome"]
    assert [r.content for r in meta.steps[0].results] == ["2100000", "2800000"]
    assert (meta.prompt_tokens, meta.completion_tokens) == (6, 3)  # the calls have no text
    tools = [{"type": "function", "function": {
        "name": "population", "description": "How many people live in a city.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                       "properties": {"city": {"type": "string"}}}}}]
    user = {"role": "user", "content": "Which is bigger?"}
    assert upstream.bodies[0] == {"model": "scripted", "messages": [SYSTEM, user],
                                  "tools": tools}
    assert upstream.bodies[1] == {"model": "scripted", "tools": tools,
                                  "messages": [SYSTEM, user, {
                                      "role": "assistant", "content": None, "tool_calls": [
                                          {"id": "c1", "type": "function", "function": {
                                              "name": "population",
                                              "arguments": '{"city": "Paris"}'}},
                                          {"id": "c2", "type": "function", "function": {
                                              "name": "population",
                                              "arguments": '{"city": "Rome"}'}}]},
                                      {"role": "tool", "tool_call_id": "c1",
                                       "content": "2100000"},
                                      {"role": "tool", "tool_call_id": "c2",
                                       "content": "2800000"}]}
    assert history == ["user", "assistant", "tool", "tool", "assistant"]


async def test_tool_errors_go_to_the_model(upstream: FaultyUpstream) -> None:
    def divide(a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    upstream.replies.extend([
        Reply(tool_calls=[{"id": "d1", "name": "divide", "arguments": {"a": 1, "b": 0}},
                          {"id": "d2", "name": "divide", "arguments": {"a": "x", "b": 2}},
                          {"id": "d3", "name": "nope", "arguments": {}},
                          {"id": "d4", "name": "divide", "arguments": "{a: 1, b"},
                          {"id": "d5", "name": "divide", "arguments": "[" * 5000}]),
        Reply("I cannot divide by zero.")])
    async with openai_chat(upstream) as chat:
        chat.enable_function_calling([divide])
        meta = await chat.get_response_with_meta("1/0?")
    assert meta.content == "I cannot divide by zero."
    sent = upstream.bodies[1]["messages"][-5:-1]
    assert upstream.bodies[1]["messages"][-1]["content"].startswith(
        "Error: ValueError: the arguments are not a JSON object: [[[")  # too deep: not read
    assert sent == [
        {"role": "tool", "tool_call_id": "d1",
         "content": "Error: ZeroDivisionError: float division by zero"},
        {"role": "tool", "tool_call_id": "d2",
         "content": "Error: invalid arguments: a: Input should be a valid number, unable to "
                    "parse string as a number"},
        {"role": "tool", "tool_call_id": "d3",
         "content": "Error: LookupError: no tool named 'nope'; the tools are divide"},
        {"role": "tool", "tool_call_id": "d4",
         "content": "Error: ValueError: the arguments are not a JSON object: {a: 1, b"}]
    assert [r.error is not None for r in meta.steps[0].results] == [True] * 5


async def test_raise_tool_errors_reaches_the_caller(upstream: FaultyUpstream) -> None:
    def boom() -> None:
        """Fail."""
        raise RuntimeError("disk on fire")

    upstream.replies.append(Reply(tool_calls=[{"name": "boom", "arguments": {}}]))
    async with openai_chat(upstream) as chat:
        chat.enable_function_calling([boom], raise_tool_errors=True)
        with pytest.raises(RuntimeError, match="disk on fire"):
            await chat.get_response_with_meta("go")
        assert chat.history == []


async def test_max_steps_then_an_answer_without_tools(upstream: FaultyUpstream) -> None:
    call = Reply(tool_calls=[{"name": "forecast", "arguments": {"city": "Oslo"}}])
    upstream.replies.extend([call, call, Reply("Sunny.")])
    async with openai_chat(upstream) as chat:
        chat.enable_function_calling([forecast], max_steps=2)
        meta = await chat.get_response_with_meta("Weather?")
    assert meta.content == "Sunny."
    assert len(meta.steps) == 2
    assert [("tools" in b) for b in upstream.bodies] == [True, True, False]
    assert upstream.bodies[0]["tools"] == [FORECAST_SPEC]


async def test_ollama_tool_loop_wire_format(upstream: FaultyUpstream) -> None:
    upstream.replies.extend([
        Reply(tool_calls=[{"id": "call_abc", "name": "forecast",
                           "arguments": {"city": "Oslo", "days": 2}}]),
        Reply("Sunny for two days.")])
    async with ollama_chat(upstream) as chat:
        meta = await chat.get_response_with_meta("Weather in Oslo?", tools=[forecast])
    assert meta.content == "Sunny for two days."
    user = {"role": "user", "content": "Weather in Oslo?"}
    assert upstream.bodies[0] == {"model": "scripted", "stream": False, "tools": [FORECAST_SPEC],
                                  "messages": [SYSTEM, user]}
    assert upstream.bodies[1]["messages"] == [
        SYSTEM, user,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abc", "function": {"name": "forecast",
                                            "arguments": {"city": "Oslo", "days": 2}}}]},
        {"role": "tool", "content": "Oslo: sunny for 2 day(s)", "tool_call_id": "call_abc",
         "tool_name": "forecast"}]


async def test_tools_on_a_provider_without_them_is_a_clear_error() -> None:
    async with ChatManager("llamacpp:smollm2") as chat:
        with pytest.raises(UnsupportedOperationError, match="cannot call tools"):
            await chat.get_response_with_meta("hi", tools=[forecast])
