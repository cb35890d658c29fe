"""Issue 19 #19: JSON schemas llama-cpp-python's grammar converter cannot take as they are.

Recursive ``$defs`` behind a root ``$ref`` (every recursive pydantic model) and ``{"$ref":
"#"}`` are rewritten so they work; what cannot work (a reference to nothing, a remote one,
repetition counts that would make a grammar of megabytes, ...) is an ``OptionsError`` naming
the construct, a 400 through the server, never a 502 with an internal ``KeyError``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from modelplex.errors import OptionsError
from modelplex_llamacpp.provider import LlamaCppProvider
from modelplex_llamacpp.schema import MAX_DEPTH, normalise_schema, schema_grammar

from .conftest import ServeFactory

MESSAGES = [{"role": "user", "content": "Say something."}]


class Node(BaseModel):
    name: str
    children: list[Node] = []


RECURSIVE_DEFS = Node.model_json_schema()  # {"$defs": {"Node": ...}, "$ref": "#/$defs/Node"}
ROOT_REF = {"type": "object", "properties": {"child": {"$ref": "#"}, "n": {"type": "integer"}}}
ENDLESS = {"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]}
SUPPORTED = {
    "recursive $defs": RECURSIVE_DEFS,
    '{"$ref": "#"}': ROOT_REF,
    "escaped pointer": {"$defs": {"a/b": {"type": "integer"}}, "type": "object",
                        "properties": {"x": {"$ref": "#/$defs/a~1b"}}},
    "pointer into properties": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"$ref": "#/properties/a"}}},
    "no finite answer": ENDLESS,
}

REFUSED = {
    "missing ref": ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}},
                    r"\"\$ref\": '#/\$defs/Nope' at #/properties/a points to nothing "
                    r"\(no '\$defs' there\): define the schema"),
    "missing def": ({"$defs": {"A": {"type": "integer"}}, "$ref": "#/$defs/B"},
                    r"'#/\$defs/B' at # points to nothing \(no 'B' there\)"),
    "remote ref": ({"properties": {"a": {"$ref": "https://example.com/s.json"}}},
                   r"is a remote reference, which llamacpp does not resolve: put the "
                   r"referenced schema under \"\$defs\""),
    "anchor": ({"properties": {"a": {"$ref": "#node"}}}, r"'#node' .* is an anchor"),
    "other document": ({"properties": {"a": {"$ref": "other.json#/x"}}},
                       r"is a reference to another document"),
    "ref to a value": ({"properties": {"a": {"$ref": "#/required/0"}}, "required": ["a"]},
                       r"points to \"a\", which is not a schema"),
    "not": ({"not": {"type": "string"}},
            r"cannot turn this JSON schema into a grammar \(Unrecognized schema: "
            r"\{'not': .*use response_format='json'"),
    "huge maxLength": ({"type": "string", "maxLength": 100_000},
                       r"\"maxLength\": 100000 at #/maxLength is more than 1000"),
    "huge minItems": ({"type": "array", "items": {"type": "integer"}, "minItems": 5000},
                      r"\"minItems\": 5000"),
    "huge pattern count": ({"type": "string", "pattern": "^a{2,50000}$"},
                           r"\"pattern\" at #/pattern repeats \{2,50000\}"),
    "deep nesting": ({"type": "array", "items": json.loads(
        '{"type": "array", "items": ' * 200 + "{}" + "}" * 200)},
        rf"nested more than {MAX_DEPTH} levels deep"),
    "not an object": ([1, 2], r"the JSON schema must be an object"),
    "false": ({"properties": {"a": False}}, r"the schema at #/properties/a is false, which no "
                                            r"answer can match"),
}


@pytest.fixture
async def provider(models_dir: Path):  # type: ignore[no-untyped-def]
    async with LlamaCppProvider(models_dir=models_dir) as provider:
        yield provider


@pytest.mark.parametrize("schema", SUPPORTED.values(), ids=SUPPORTED.keys())
async def test_schemas_the_converter_fails_on_now_work(provider: LlamaCppProvider,
                                                       schema: dict[str, Any]) -> None:
    response = await provider.complete(MESSAGES, model="tiny", response_format=schema,
                                       options={"max_tokens": 48, "temperature": 0})
    assert response.finish_reason in {"stop", "length"}
    assert response.content.lstrip().startswith("{")


async def test_recursive_model_answer_follows_the_schema(provider: LlamaCppProvider) -> None:
    response = await provider.complete(MESSAGES, model="tiny", response_format=Node,
                                       options={"max_tokens": 400, "temperature": 0,
                                                "seed": 1})
    if response.finish_reason == "stop":  # the tiny model may ramble until max_tokens
        Node.model_validate_json(response.content)


@pytest.mark.parametrize(("schema", "message"), REFUSED.values(), ids=REFUSED.keys())
async def test_unsupported_schemas_name_the_construct(provider: LlamaCppProvider, schema: Any,
                                                      message: str) -> None:
    with pytest.raises(OptionsError, match=r"^response_format: .*" + message):
        await provider.complete(MESSAGES, model="tiny",
                                response_format={"type": "json_schema", "schema": schema})
    assert not provider._loaded  # refused before a model was loaded


def test_refs_with_the_same_name_stay_apart() -> None:
    """The converter names a rule after the reference's last segment: two ``A`` collided."""
    schema = {"$defs": {"A": {"type": "integer"}}, "definitions": {"A": {"type": "string"}},
              "type": "object", "properties": {"i": {"$ref": "#/$defs/A"},
                                               "s": {"$ref": "#/definitions/A"}}}
    normal = normalise_schema(schema)
    refs = [normal["properties"][p]["$ref"].rsplit("/", 1)[1] for p in ("i", "s")]
    assert [normal["$defs"][r]["type"] for r in refs] == ["integer", "string"]
    schema_grammar(schema)


def test_properties_named_like_keywords_are_kept() -> None:
    schema = {"type": "object", "properties": {"$defs": {"type": "integer"},
                                               "definitions": {"type": "string"}}}
    assert normalise_schema(schema) == schema


def test_grammar_size_is_bounded() -> None:
    wide = {"type": "object", "properties": {
        f"p{i}": {"type": "array", "items": {"type": "string", "maxLength": 1000},
                  "maxItems": 1000} for i in range(20)}}
    with pytest.raises(OptionsError, match=r"makes a grammar of [\d,]+ characters, more than"):
        schema_grammar(wide)


# -- through the server -----------------------------------------------------------------------
def schema_body(schema: Any, stream: bool = False) -> dict[str, Any]:
    return {"model": "llamacpp:tiny", "messages": MESSAGES, "max_tokens": 24, "stream": stream,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "answer", "schema": schema}}}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", ["missing ref", "remote ref", "not", "huge maxLength"])
async def test_server_answers_400_naming_the_construct(serve: ServeFactory, case: str,
                                                       stream: bool) -> None:
    schema, message = REFUSED[case]
    served = await serve()
    status, body = await served.post("/v1/chat/completions", schema_body(schema, stream))
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error"
    assert re.search(message, body["error"]["message"]), body["error"]["message"]


@pytest.mark.parametrize("case", ["recursive $defs", '{"$ref": "#"}'])
async def test_server_answers_the_formerly_failing_schemas(serve: ServeFactory,
                                                           case: str) -> None:
    served = await serve()
    status, body = await served.post("/v1/chat/completions", schema_body(SUPPORTED[case]))
    assert status == 200, body
    assert body["choices"][0]["message"]["content"].lstrip().startswith("{")


async def test_a_grammar_llama_cpp_refuses_is_an_error_not_a_crash(
        provider: LlamaCppProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama-cpp-python adds a grammar llama.cpp refused to its sampler chain as NULL: the
    process died (SIGSEGV) on ``maxLength: 2000``. Past MAX_REPEAT, the parse is checked."""
    monkeypatch.setattr("modelplex_llamacpp.schema.MAX_REPEAT", 5000)
    with pytest.raises(OptionsError, match=r"llama\.cpp refused the grammar"):
        await provider.complete(MESSAGES, model="tiny",
                                response_format={"type": "string", "maxLength": 2000})
    response = await provider.complete(MESSAGES, model="tiny", options={"max_tokens": 2})
    assert response.finish_reason == "length"  # still serving


async def test_ollama_api_format_with_a_missing_ref_is_a_400(serve: ServeFactory) -> None:
    served = await serve()
    status, body = await served.post("/ollama/api/chat", {
        "model": "llamacpp:tiny", "messages": MESSAGES, "stream": False,
        "format": {"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}}})
    assert status == 400
    assert "'#/$defs/Nope' at #/properties/a points to nothing" in body["error"]
