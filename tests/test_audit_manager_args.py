"""ChatManager arguments of the wrong type are refused when the manager is made, naming the
argument and what it takes; a path to a missing GGUF file is named as such."""

from __future__ import annotations

import pytest

from modelplex import ChatManager
from modelplex.errors import ConfigurationError, ModelNotFoundError


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"config": {}}, "config must be a Config"),
    ({"pool": 5}, "pool must be a ProviderPool"),
    ({"plugins": 5}, "plugins must be a Plugins"),
    ({"conversation": 5}, "conversation must be True"),
    ({"logs": 5}, "logs must be the path"),
    ({"retries": -1}, "retries must be a whole number"),
    ({"retries": "3"}, "retries must be a whole number"),
    ({"confirm": 5}, "confirm must be a function"),
])
def test_wrong_types_are_refused_at_once(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named) as caught:
        ChatManager("openai:gpt-4o-mini", **kwargs)  # type: ignore[arg-type]
    assert type(next(iter(kwargs.values()))).__name__ in str(caught.value)


def test_right_types_are_taken(tmp_path: object) -> None:
    from modelplex.config import parse_config
    from modelplex.plugins import get_plugins
    from modelplex.pool import get_pool

    chat = ChatManager("openai:gpt-4o-mini", config=parse_config({}), pool=get_pool(),
                       plugins=get_plugins(), conversation=True, logs="x.db", retries=0,
                       confirm=lambda *a: True)
    assert chat.mcp_servers == ()


def test_one_mcp_server_may_be_named_as_text() -> None:
    assert ChatManager("openai:gpt-4o-mini", mcp="files").mcp_servers == ("files",)
    assert ChatManager("openai:gpt-4o-mini", mcp=["a", "b"]).mcp_servers == ("a", "b")


async def test_a_missing_gguf_path_is_named(tmp_path: object) -> None:
    pytest.importorskip("modelplex_llamacpp")
    from modelplex_llamacpp.provider import LlamaCppProvider

    provider = LlamaCppProvider(models_dir=str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"/missing/x\.gguf is not a file") as caught:
        provider.resolve("/missing/x.gguf")
    assert ".gguf.gguf" not in str(caught.value)
