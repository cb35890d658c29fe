"""Audit: a malformed JSON schema (``--schema FILE``, ``JsonSchemaParser``,
``get_structured(text, {...})``) is refused before anything is sent, naming the part that is
wrong; it used to be sent, and every answer failed ("no valid answer after 3 attempts")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplex import ConfigurationError, JsonSchemaParser
from modelplex.testing import Cli


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "objec"}, "schema.type: 'objec' is not a JSON Schema type (did you mean "
                        "'object'?)"),
    ({"type": "object", "properties": {"a": {"type": "strng"}}},
     "schema.properties.a.type: 'strng' is not a JSON Schema type (did you mean 'string'?)"),
    ({"type": "object", "properties": {"a": "string"}},
     "schema.properties.a: a JSON schema is an object (got str)"),
    ({"type": "object", "properties": ["a"]}, "schema.properties: must map names to schemas"),
    ({"type": "object", "required": "a"}, "schema.required: must be a list of property names"),
    ({"type": "array", "items": {"type": "int"}}, "schema.items.type: 'int' is not a JSON"),
    ({"anyOf": [{"type": "string"}, {"type": "nul"}]}, "schema.anyOf[1].type: 'nul'"),
])
def test_a_malformed_schema_is_refused_naming_the_part(schema: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        JsonSchemaParser(schema)
    assert str(info.value).startswith(message)


def test_valid_schemas_are_accepted() -> None:
    JsonSchemaParser({"type": "object", "additionalProperties": False, "required": ["a"],
                      "properties": {"a": {"type": ["string", "null"]},
                                     "b": {"type": "array", "items": {"type": "integer"}},
                                     "c": {"enum": [1, 2]}, "d": {"$ref": "#/$defs/x"}},
                      "$defs": {"x": {"type": "number"}}})
    JsonSchemaParser({"items": [{"type": "string"}], "not": {"type": "null"}})


def test_the_cli_refuses_a_malformed_schema_file_before_asking(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "objec"}))
    proc = Cli(env={"OLLAMA_HOST": "127.0.0.1:9"}, timeout=120).run(
        "chat", "--schema", str(path), "-m", "ollama:x", "hi")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"Error: --schema {path}: schema.type: 'objec' is not a JSON Schema type (did you "
        "mean 'object'?); use one of object, array, string, number, integer, boolean, null")
