"""JSON schemas as llama.cpp grammars, checked and normalised before conversion.

llama-cpp-python's converter (``llama_cpp.llama_grammar``) fails with internal errors on
schemas it half-understands: a ``$ref`` at the root next to ``$defs`` that refer to each other
(every recursive pydantic model), ``{"$ref": "#"}``, JSON-pointer escapes, two definitions of
the same name in different places, and a reference to nothing (``KeyError``,
``AssertionError``). It also expands every repetition count (``maxLength``, ``minItems``,
``{m,n}`` in a pattern) into nested rules, so one large number makes a grammar of megabytes
that llama.cpp then parses recursively.

:func:`schema_grammar` therefore first rewrites the schema into the form the converter
handles: every local reference (``#``, ``#/$defs/Name``, ``#/properties/a``, escaped ones) is
resolved here and its target hoisted under ``$defs`` with a unique name, so recursion works
and a missing target is named. Constructs that cannot work (remote or relative references,
anchors, repetition counts above :data:`MAX_REPEAT`, nesting deeper than :data:`MAX_DEPTH`,
grammars over :data:`MAX_GRAMMAR_CHARS`) raise :class:`~modelplex.errors.OptionsError` naming
the construct, where it is and what to do instead; the server answers it with a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from modelplex.errors import OptionsError

__all__ = ["MAX_DEPTH", "MAX_GRAMMAR_CHARS", "MAX_REPEAT", "normalise_schema", "schema_grammar"]

#: Most nesting levels of a schema (objects and arrays together).
MAX_DEPTH = 64
#: Largest repetition count: ``minLength``/``maxLength``/``minItems``/``maxItems``/
#: ``minProperties``/``maxProperties`` and ``{m,n}`` quantifiers in a ``pattern``.
MAX_REPEAT = 1000
#: Largest grammar, in characters, a schema may turn into.
MAX_GRAMMAR_CHARS = 200_000

_REPEAT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties",
                "maxProperties")
# Keywords whose value is a map of name -> schema, a schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "if", "then", "else", "contains",
                  "propertyNames", "unevaluatedProperties", "unevaluatedItems",
                  "additionalItems")
_DEFS = ("$defs", "definitions")
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
_FIX = ("simplify the schema, or use response_format='json' (any JSON object) and validate "
        "the answer yourself")


def _error(message: str) -> OptionsError:
    return OptionsError(f"response_format: {message}")


def _where(path: str) -> str:
    return "at #" + path


class _Normaliser:
    """One pass over a schema: references resolved and hoisted, limits checked."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.names: dict[str, str] = {}
        self.defs: dict[str, Any] = {}

    def target(self, ref: str, path: str) -> Any:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            kind = ("an anchor" if ref.startswith("#") else
                    "a remote reference" if "://" in ref else "a reference to another document")
            raise _error(f'"$ref": {ref!r} {_where(path)} is {kind}, which llamacpp does not '
                         'resolve: put the referenced schema under "$defs" and use '
                         '"$ref": "#/$defs/NAME"')
        node: Any = self.root
        for raw in ref[2:].split("/"):
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise _error(f'"$ref": {ref!r} {_where(path)} points to nothing (no {part!r} '
                             'there): define the schema it names (for example under '
                             '"$defs") or remove the reference')
        if node is True:
            return {}
        if not isinstance(node, dict):
            raise _error(f'"$ref": {ref!r} {_where(path)} points to {json.dumps(node)[:60]}, '
                         "which is not a schema: point it at an object schema")
        return node

    def ref(self, ref: Any, path: str, depth: int) -> dict[str, Any]:
        if not isinstance(ref, str):
            raise _error(f'"$ref" {_where(path)} must be a string (got {ref!r})')
        name = self.names.get(ref)
        if name is None:
            name = self.names[ref] = f"ref-{len(self.names)}"
            self.defs[name] = {}  # placeholder: a reference back to it ends the recursion
            self.defs[name] = self.schema(self.target(ref, path), ref.removeprefix("#"), depth + 1)
        return {"$ref": f"#/$defs/{name}"}

    def schema(self, node: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _error(f"the schema is nested more than {MAX_DEPTH} levels deep "
                         f"({_where(path)}): {_FIX}")
        if node is True:
            return {}
        if node is False:
            raise _error(f"the schema {_where(path)} is false, which no answer can match: "
                         "remove it (or the property it describes)")
        if not isinstance(node, dict):
            raise _error(f"the schema {_where(path)} must be an object "
                         f"(got {json.dumps(node)[:60]})")
        if "$ref" in node:  # the converter ignores a reference's siblings
            return self.ref(node["$ref"], path, depth)
        out: dict[str, Any] = {}
        for key, value in node.items():
            here = f"{path}/{key}"
            if key in _DEFS:
                continue  # what is referenced is hoisted, the rest is unused
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: self.schema(sub, f"{here}/{name}", depth + 1)
                            for name, sub in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.schema(sub, f"{here}/{i}", depth + 1)
                            for i, sub in enumerate(value)]
            elif key in _SCHEMA_VALUES and isinstance(value, dict | list):
                out[key] = (self.schema(value, here, depth + 1) if isinstance(value, dict)
                            else [self.schema(sub, f"{here}/{i}", depth + 1)
                                  for i, sub in enumerate(value)])
            else:
                self.check_value(key, value, here, depth)
                out[key] = value
        return out

    def check_value(self, key: str, value: Any, path: str, depth: int) -> None:
        if key in _REPEAT_KEYS and isinstance(value, int | float) and value > MAX_REPEAT:
            raise _error(f'"{key}": {value} {_where(path)} is more than {MAX_REPEAT}: '
                         "llama.cpp grammars spell out every repetition; use a smaller "
                         f"bound or leave it out (the answer's length is bounded by max_tokens)")
        if key == "pattern" and isinstance(value, str):
            for match in _QUANTIFIER.finditer(value):
                counts = [int(n) for n in match.groups() if n]
                if any(n > MAX_REPEAT for n in counts):
                    raise _error(f'"pattern" {_where(path)} repeats {match.group(0)}, more than '
                                 f"{MAX_REPEAT} times: use a smaller count, '+' or '*'")
        if key in ("enum", "const", "default", "examples") and _depth(value) + depth > MAX_DEPTH:
            raise _error(f'"{key}" {_where(path)} is nested more than {MAX_DEPTH} levels deep: '
                         f"{_FIX}")


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def normalise_schema(schema: Any) -> dict[str, Any]:
    """The schema in the form llama-cpp-python's converter handles; :class:`OptionsError`
    naming the construct when it cannot be."""
    if schema is True or schema == {}:
        return {}
    if not isinstance(schema, dict):
        raise _error(f"the JSON schema must be an object (got {json.dumps(schema)[:60]})")
    if _depth(schema) > 2 * MAX_DEPTH + 2:  # before any recursion
        raise _error(f"the schema is nested more than {MAX_DEPTH} levels deep: {_FIX}")
    normaliser = _Normaliser(schema)
    root = normaliser.schema(schema, "", 0)
    if not normaliser.defs:
        return root if isinstance(root, dict) else {}
    if "$ref" in root:  # the converter resolves nothing under a reference: wrap it
        root = {"anyOf": [root]}
    return {**root, "$defs": normaliser.defs}


def schema_grammar(schema: Any) -> str:
    """The GBNF grammar of a JSON schema; :class:`OptionsError` naming what is unsupported."""
    from llama_cpp import llama_grammar

    normalised = normalise_schema(schema)
    try:
        grammar = str(llama_grammar.json_schema_to_gbnf(json.dumps(normalised)))
    except RecursionError:
        raise _error(f"the schema is nested too deeply: {_FIX}") from None
    except (AssertionError, ValueError, KeyError, TypeError, AttributeError,
            NotImplementedError, IndexError) as err:
        detail = str(err).replace("stdin#", "#")
        if isinstance(err, KeyError):
            detail = f"cannot resolve {detail}"
        raise _error(f"llamacpp cannot turn this JSON schema into a grammar ({detail[:200]}): "
                     f"{_FIX}") from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise _error(f"the schema makes a grammar of {len(grammar):,} characters, more than "
                     f"llamacpp's {MAX_GRAMMAR_CHARS:,}: lower its repetition counts "
                     f"(maxLength, maxItems, ...) or its number of alternatives")
    return grammar
