"""Audit: a parser built with a bad argument is one ConfigurationError naming it.

``JsonDictParser(required_keys="name")`` required the keys 'n', 'a', 'm' and 'e';
``PydanticParser(5)`` raised pydantic's pages-long schema error; ``ListParser(min_items=-1)``
and ``CodeBlockParser(language=5)`` were accepted."""

from __future__ import annotations

from typing import Any

import pytest

from modelplex import (
    CodeBlockParser,
    ConfigurationError,
    JsonDictParser,
    ListParser,
    PydanticParser,
)
from modelplex.parsers.json_parsers import JsonDictParser as SeedJsonDictParser


@pytest.mark.parametrize(("build", "message"), [
    (lambda: JsonDictParser(required_keys="name"),  # type: ignore[arg-type]
     "JsonDictParser: required_keys must be a list of key names, e.g. ['name'] (got 'name')"),
    (lambda: JsonDictParser(required_keys=[1]),  # type: ignore[list-item]
     "JsonDictParser: required_keys must be a list of key names"),
    (lambda: PydanticParser(5), "PydanticParser: model must be a pydantic model class or a "
                                "type pydantic can validate"),
    (lambda: ListParser(min_items=-1), "ListParser: min_items must be a whole number >= 0 "
                                       "(got -1)"),
    (lambda: ListParser(min_items="a"),  # type: ignore[arg-type]
     "ListParser: min_items must be a whole number >= 0"),
    (lambda: CodeBlockParser(language=5),  # type: ignore[arg-type]
     "CodeBlockParser: language must be text"),
])
def test_a_bad_parser_argument_is_named(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_the_seed_parser_still_works() -> None:
    parser = SeedJsonDictParser(required_keys=["name", "description"])
    assert parser.parse('{"name": "a", "description": "b"}').parsed == {"name": "a",
                                                                        "description": "b"}
    assert ListParser(min_items=0).min_items == 0
    assert CodeBlockParser(language="python").language == "python"
