"""Parsers, mode choice, templates by name and the tool descriptions, with the fake provider."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from modelplex import ChatManager, hookimpl
from modelplex.errors import ConfigurationError, ParseError, PluginError
from modelplex.parsers import (
    CodeBlockParser,
    JsonDictParser,
    JsonSchemaParser,
    ListParser,
    Parser,
    ParseResult,
    PydanticParser,
    extract_json,
    json_nesting,
    partial_json,
    tool_arguments,
)
from modelplex.plugins import Plugins
from modelplex.prompts import (
    ChainOfThought,
    ChainOfThoughtPrompt,
    ExtractionPrompt,
    FewShotPrompt,
    PromptTemplate,
)
from modelplex.provider import Capabilities
from modelplex.structured import choose_mode, resolve_output, resolve_template
from modelplex.tools import Tool, as_tool


class Person(BaseModel):
    name: str
    age: int


# -- tolerant JSON --------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "{'name': 'Ada', 'age': 36}",                       # single quotes
    "{name: 'Ada', age: 36}",                           # unquoted keys
    '{"name": "Ada", // her name\n "age": 36 /* years */}',  # comments
    '{"name": "Ada", "age": 36,}',                      # trailing comma
    "Here you go:\n```json\n{\"name\": \"Ada\", \"age\": 36}\n```\nAnything else?",
    '```\n{"name": "Ada", "age": 36}',                  # unclosed fence
    "{'name': 'Ada', 'age': 36, 'retired': True}",      # a Python literal
])
def test_small_model_json_dialects_are_read(text: str) -> None:
    assert PydanticParser(Person).parse(text).parsed == Person(name="Ada", age=36)


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(ParseError, match="age: Input should be a valid integer") as info:
        PydanticParser(Person).parse('{"name": "Ada", "age": "old"}')
    assert info.value.answers == ['{"name": "Ada", "age": "old"}']


def test_json_schema_parser_checks_types_required_and_enums() -> None:
    schema = {"type": "object", "required": ["size", "tags"], "additionalProperties": False,
              "properties": {"size": {"enum": ["S", "M"]},
                             "tags": {"type": "array", "items": {"type": "string"}}}}
    parser = JsonSchemaParser(schema)
    assert parser.parse('{"size": "M", "tags": ["a"]}').parsed == {"size": "M", "tags": ["a"]}
    with pytest.raises(ParseError) as info:
        parser.parse('{"size": "XL", "tags": [1], "x": 0}')
    message = str(info.value)
    assert 'size: must be one of ["S", "M"]' in message
    assert "tags[0]: expected string, got 1" in message
    assert "unexpected keys ['x']" in message


def test_list_and_code_block_parsers() -> None:
    assert ListParser().parse('["a", "b"]').parsed == ["a", "b"]
    assert ListParser().parse("Sure:\n- milk\n- eggs\n2. bread").parsed == ["milk", "eggs",
                                                                           "bread"]
    assert ListParser().parse('{"items": ["x"]}').parsed == ["x"]
    with pytest.raises(ParseError, match="at least 1 item"):
        ListParser().parse("nothing here")
    text = "Run this:\n```sh\nls\n```\nthen\n```python\nprint(1)\n```"
    assert CodeBlockParser("python").parse(text).parsed == "print(1)"
    assert CodeBlockParser().parse(text).parsed == "ls"
    with pytest.raises(ParseError, match="no ```rust fenced code block"):
        CodeBlockParser("rust").parse(text)


def test_partial_json_grows_with_the_stream() -> None:
    assert partial_json("Sure") is None
    assert partial_json('{"name": "Ad') == {"name": "Ad"}
    assert partial_json('```json\n{"a": [1, 2') == {"a": [1, 2]}
    assert PydanticParser(Person).partial('{"name": "Ada", "age": 3') == {"name": "Ada",
                                                                            "age": 3}
    assert CodeBlockParser().partial("```py") is None


# -- outputs and modes ----------------------------------------------------------------------
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a": ' * 20_000 + "1" + "}" * 20_000


@pytest.mark.parametrize("answer", [DEEP_ARRAY, DEEP_OBJECT, f"Here:\n```json\n{DEEP_OBJECT}\n```",
                                    "{'a': " * 5_000 + "None" + "}" * 5_000],
                         ids=["array", "object", "fenced", "python"])
@pytest.mark.parametrize("parser", [JsonDictParser(), PydanticParser(Person), ListParser(),
                                    JsonSchemaParser({"type": "object"}),
                                    PydanticParser(list[Any])],
                         ids=["json_dict", "pydantic", "list", "json_schema", "any_list"])
def test_a_deeply_nested_answer_is_a_parse_error(parser: Parser, answer: str) -> None:
    """Issue 19 #16: nesting is bounded before parsing, so a deep answer is re-asked (a
    ParseError) instead of escaping as RecursionError."""
    with pytest.raises(ParseError) as info:
        parser.parse(answer)
    if not isinstance(parser, ListParser):  # which also looks for "- item" lines
        assert "nested more than 100 levels deep" in str(info.value)
    assert partial_json(answer) is None


def test_nesting_up_to_the_limit_is_read() -> None:
    ok = "[" * 100 + "]" * 100
    assert ListParser().parse(f'{{"items": {ok}}}').parsed
    assert extract_json(ok, list) == eval(ok)
    text = '{"a": "' + "[" * 500 + '", "b": 1}'  # brackets inside a string are not nesting
    assert JsonDictParser().parse(text).parsed == {"a": "[" * 500, "b": 1}


@pytest.mark.parametrize(("text", "depth"), [
    ('[1, [2, {"a": [3]}]]', 4),
    ('["]]]]", ["]]]]", ["]]]]", [1]]]]', 4),  # closers in strings do not hide depth
    ("{'a': '}}}', /* ]] */ 'b': [[1]], // }}\n 'c': 2}", 3),  # JSON5 strings, comments
    ('[[[ "unterminated', 3),
    ("prose ] ] then [[x]]", 2),  # stray closers before do not lower it
    (r'["a \" ]]", [[1]]]', 3),  # an escaped quote stays in the string
])
def test_json_nesting_skips_strings_and_comments(text: str, depth: int) -> None:
    assert json_nesting(text) == depth


def test_tool_arguments_are_one_bounded_reader() -> None:
    """What every provider does with a tool call's arguments: a dict, or ``{"_raw": ...}``
    for anything else (the tool loop tells the model), deep nesting refused unparsed."""
    assert tool_arguments('{"city": "Paris"}') == {"city": "Paris"}
    assert tool_arguments(b'{"city": "Paris"}') == {"city": "Paris"}
    assert tool_arguments({"city": "Paris"}) == {"city": "Paris"}
    assert tool_arguments(None) == tool_arguments("  ") == {}
    assert tool_arguments("[1]") == {"_raw": "[1]"}
    assert tool_arguments("{a: 1") == {"_raw": "{a: 1"}
    assert tool_arguments(DEEP_ARRAY) == {"_raw": DEEP_ARRAY}
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5_000):  # as a provider that parsed its body already gets them
        node["a"] = node = {}
    assert tool_arguments(deep) == {"_raw": "(arguments nested more than 100 levels deep)"}


def test_resolve_output_accepts_every_form(fake_plugins: Plugins) -> None:
    assert isinstance(resolve_output("json_dict", fake_plugins), JsonDictParser)
    assert isinstance(resolve_output(Person), PydanticParser)
    assert isinstance(resolve_output({"type": "object"}), JsonSchemaParser)
    assert isinstance(resolve_output(list[int]), PydanticParser)
    parser = ListParser()
    assert resolve_output(parser) is parser
    with pytest.raises(ConfigurationError, match="parser 'pydantic' needs arguments"):
        resolve_output("pydantic", fake_plugins)
    with pytest.raises(PluginError, match="no parser named 'yaml'"):
        resolve_output("yaml", fake_plugins)


class _P:
    name = "p"

    def __init__(self, **caps: bool) -> None:
        self.capabilities = Capabilities(**caps)


@pytest.mark.parametrize(("caps", "parser", "mode"), [
    ({"json_schema": True, "tools": True}, PydanticParser(Person), "native"),
    ({"tools": True}, PydanticParser(Person), "tool"),
    ({}, PydanticParser(Person), "prompted"),
    ({"json_schema": True}, CodeBlockParser(), "prompted"),
    ({"json_schema": True}, ListParser(), "prompted"),   # native needs an object schema
])
def test_mode_is_chosen_from_capabilities(caps: dict[str, bool], parser: Parser,
                                          mode: str) -> None:
    assert choose_mode(parser, _P(**caps), None) == mode  # type: ignore[arg-type]


def test_a_forced_mode_the_provider_lacks_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot call tools"):
        choose_mode(PydanticParser(Person), _P(), "tool")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot constrain its answers"):
        choose_mode(PydanticParser(Person), _P(), "native")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        choose_mode(PydanticParser(Person), _P(), "magic")  # type: ignore[arg-type]


async def test_get_structured_prompted_with_a_fake_provider(fake_plugins: Plugins) -> None:
    config = {"fake": {"reply": "{'name': 'Ada', 'age': 36}"}}
    async with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        result = await chat.get_structured("Who?", Person)
        assert result.value == Person(name="Ada", age=36)
        assert (result.mode, result.attempts) == ("prompted", 1)
        assert result.meta.completion_tokens > 0
        assert [m.content for m in chat.history] == ["Who?", "{'name': 'Ada', 'age': 36}"]


def test_get_structured_sync(fake_plugins: Plugins) -> None:
    config = {"fake": {"reply": '{"a": 1}'}}
    with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        assert chat.get_structured_sync("hi", "json_dict").value == {"a": 1}


async def test_max_retries_is_checked(fake_plugins: Plugins) -> None:
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        with pytest.raises(ConfigurationError, match="max_retries must be an integer >= 0"):
            await chat.get_structured("hi", "json_dict", max_retries=-1)


# -- templates ------------------------------------------------------------------------------
async def test_execute_chain_by_name(fake_plugins: Plugins) -> None:
    config = {"fake": {"reply": '{"reasoning": "2 and 2 make 4.", "solution": "4"}'}}
    async with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        result = await chat.execute_chain("chain_of_thought", task="2 + 2?")
    assert result.parsed == ChainOfThought(reasoning="2 and 2 make 4.", solution="4")
    assert (result.reasoning, result.solution) == ("2 and 2 make 4.", "4")


def test_template_field_errors_name_the_field(fake_plugins: Plugins) -> None:
    with pytest.raises(ConfigurationError, match=r"template 'chain_of_thought': field 'task': "
                                                 r"Field required \(its fields: task, steps\?\)"):
        resolve_template("chain_of_thought", {}, fake_plugins)
    with pytest.raises(ConfigurationError, match="field 'colour': unknown field"):
        resolve_template("chain_of_thought", {"task": "x", "colour": "red"}, fake_plugins)
    with pytest.raises(PluginError, match="no prompt template named 'haiku'"):
        resolve_template("haiku", {}, fake_plugins)
    with pytest.raises(ConfigurationError, match="not both"):
        resolve_template(ChainOfThoughtPrompt(task="x"), {"task": "y"}, fake_plugins)


def test_few_shot_with_objects_asks_for_the_same_keys_and_types() -> None:
    prompt = FewShotPrompt(instruction="Classify.", input="dog", examples=[
        {"input": "cat", "output": {"animal": "cat", "legs": 4}},
        {"input": "hen", "output": {"animal": "hen", "legs": 2}}])
    assert prompt.render().splitlines() == [
        "Classify.", "", "Input: cat", 'Output: {"animal": "cat", "legs": 4}', "",
        "Input: hen", 'Output: {"animal": "hen", "legs": 2}', "", "Input: dog", "Output:"]
    parser = prompt.output_parser()
    assert parser is not None
    assert parser.json_schema == {"type": "object", "required": ["animal", "legs"],
                                  "properties": {"animal": {"type": "string"},
                                                 "legs": {"type": "integer"}}}
    text_prompt = FewShotPrompt(input="b", examples=[{"input": "a", "output": "A"}])
    assert text_prompt.output_parser() is None
    assert text_prompt.parse("Output: B") == "B"


async def test_extraction_into_a_model(fake_plugins: Plugins) -> None:
    config = {"fake": {"reply": '{"name": "Ada Lovelace", "age": 36}'}}
    async with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        result = await chat.execute_chain("extract", text="Ada Lovelace died at 36.",
                                          schema=Person)
    assert result.value == Person(name="Ada Lovelace", age=36)
    assert '"""\nAda Lovelace died at 36.\n"""' in ExtractionPrompt(
        text="Ada Lovelace died at 36.", schema=Person).render()
    with pytest.raises(ValueError, match="pydantic model class or a JSON schema"):
        ExtractionPrompt(text="x", schema=42)


class Haiku(PromptTemplate):
    """A haiku about a topic, as its three lines."""

    name = "haiku"
    output = "list"

    topic: str

    def render(self) -> str:
        return f"Write a haiku about {self.topic}."


class HaikuPlugin:
    @hookimpl
    def register_prompt_templates(self, register: Any) -> None:
        register(Haiku)


async def test_a_plugin_template_with_a_declared_parser(fake_plugins: Plugins) -> None:
    fake_plugins.register(HaikuPlugin(), name="haiku-plugin")
    config = {"fake": {"reply": '["old pond", "a frog jumps", "splash"]'}}
    async with ChatManager("fake", plugins=fake_plugins, provider_config=config) as chat:
        result = await chat.execute_chain("haiku", topic="frogs")
    assert result.value == ["old pond", "a frog jumps", "splash"]


class Upper(Parser):
    name = "upper"

    def parse(self, response: Any) -> ParseResult:
        text = str(response)
        if not text.isupper():
            raise ParseError("write it in capitals", raw=text)
        return ParseResult(text, text)


# -- tools ----------------------------------------------------------------------------------
def test_tool_from_a_function_uses_pydantic_and_the_docstring() -> None:
    async def search(query: str, limit: int = 5, *, exact: bool = False) -> list[str]:
        """Search the notes.

        Longer text that is not sent.

        Args:
            query: what to look for.
            limit: at most this many results,
                counted after filtering.
            exact: match whole words only.

        Returns:
            The matching notes.
        """
        return [query] * limit

    tool = as_tool(search)
    assert tool.description == "Search the notes."
    assert tool.parameters == {
        "type": "object", "additionalProperties": False, "required": ["query"],
        "properties": {
            "query": {"type": "string", "description": "what to look for."},
            "limit": {"type": "integer", "default": 5,
                      "description": "at most this many results, counted after filtering."},
            "exact": {"type": "boolean", "default": False,
                      "description": "match whole words only."}}}


async def test_tool_calls_validate_their_arguments() -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    tool = Tool.from_function(add)
    assert await tool.call({"a": "2", "b": 3}) == 5
    with pytest.raises(Exception, match="valid integer"):
        await tool.call({"a": "two", "b": 3})


def test_tool_specs_and_bad_tools() -> None:
    spec = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"id": {"type": "string"}}}}}
    assert as_tool(spec).spec() == {"type": "function", "function": {
        "name": "lookup", "description": "", "parameters": spec["function"]["parameters"]}}
    with pytest.raises(ConfigurationError, match="needs a 'name'"):
        as_tool({"description": "x"})
    with pytest.raises(ConfigurationError, match="is not a tool"):
        as_tool(42)
    with pytest.raises(ConfigurationError, match="tool name 'a b' must be"):
        Tool(name="a b", description="", parameters={})


class UpperPlugin:
    @hookimpl
    def register_parsers(self, register: Any) -> None:
        register(Upper)


async def test_a_plugin_parser_by_name_and_its_reasks(fake_plugins: Plugins,
                                                      fake_plugin: Any) -> None:
    fake_plugins.register(UpperPlugin(), name="upper-plugin")
    async with ChatManager("fake", plugins=fake_plugins,
                           provider_config={"fake": {"reply": "quiet words"}}) as chat:
        with pytest.raises(ParseError, match="write it in capitals") as info:
            await chat.get_structured("Shout.", "upper", max_retries=1)
    assert info.value.answers == ["quiet words", "quiet words"]
    requests = fake_plugin.created[0].requests
    assert len(requests) == 2
    assert requests[1].messages[-1].content == ("Your answer could not be used: write it in "
                                                "capitals. Answer again in the required "
                                                "format.")


async def test_function_calling_enabled_without_tools_changes_nothing(
        fake_plugins: Plugins) -> None:
    """Seed 001 calls enable_function_calling() with no tools, on any provider."""
    async with ChatManager("fake", plugins=fake_plugins) as chat:
        chat.enable_function_calling()
        meta = await chat.get_response_with_meta("Capital of France?")
        assert meta.content == "The capital of France is Paris."
        assert meta.steps == []
        chat.disable_function_calling()
