"""Audit: seed 002's API (get_model_manager, configure_load_balancer, get_model) with bad
input, as a first user writes it.

Before: a config without ``model_name`` (or with a misspelt provider) was accepted, and then
every ``get_model`` failed, the good configs' too, with "write it as provider:model";
``configure_load_balancer(strategy="fastest")`` and ``model_configs="gpt-4"`` were accepted;
a script's ``asyncio.run`` ended with "Unclosed client session" (the seed API has no close)."""

from __future__ import annotations

import textwrap

import pytest

from modelplex import ConfigurationError
from modelplex.compat import ModelManager
from modelplex.testing import Cli

GOOD = {"config_name": "local", "model_type": "llamacpp_chat", "model_name": "smollm2"}


@pytest.mark.parametrize(("entry", "message"), [
    ({"config_name": "c", "model_type": "openai_chat"},
     "model config[0]: 'model_name' is required"),
    ({"config_name": "c", "model_type": "opena_chat", "model_name": "x"},
     "model config[0]: model_type 'opena_chat': unknown provider 'opena' (did you mean "
     "'openai'?)"),
    ({"config_name": "c", "model_type": "openai_chat", "model_name": "x", "api_key": 5},
     "model config[0]: 'api_key' must be a string (got int)"),
    ({"config_name": "c", "model_type": "_chat", "model_name": "x"},
     "model config[0]: model_type '_chat' must be PROVIDER_chat"),
])
def test_a_bad_config_is_refused_when_loaded_and_spoils_nothing(entry: dict,
                                                                message: str) -> None:
    manager = ModelManager()
    manager.load_model_configs(GOOD)
    with pytest.raises(ConfigurationError) as info:
        manager.load_model_configs(entry)
    assert str(info.value).startswith(message)
    assert repr(manager.get_model("local")) == "<ModelAdapter 'local' (chat)>"
    with pytest.raises(ConfigurationError, match="no model config named 'c'"):
        manager.get_model("c")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model_configs": ["local"], "strategy": "fastest"},
     "unknown routing strategy 'fastest'; use one of"),
    ({"model_configs": "local"}, "load balancer 'load_balancer': model_configs must be a list "
                                 "of config names, e.g. ['gpt-4', 'local'] (got 'local')"),
])
def test_a_bad_load_balancer_is_refused(kwargs: dict, message: str) -> None:
    manager = ModelManager()
    manager.load_model_configs(GOOD)
    with pytest.raises(ConfigurationError) as info:
        manager.configure_load_balancer(**kwargs)
    assert str(info.value).startswith(message)


def test_a_script_leaves_no_unclosed_session() -> None:
    script = textwrap.dedent("""
        import asyncio
        from modelplex import get_model_manager, get_model, UserMessage

        get_model_manager().load_model_configs({"config_name": "remote",
            "model_type": "openai_chat", "model_name": "m", "api_key": "k-123456789",
            "base_url": "http://127.0.0.1:9/v1"})

        async def main():
            model = get_model("remote")
            try:
                await model.acall(model.format(UserMessage("hi")))
            except Exception as err:
                print(type(err).__name__)

        asyncio.run(main())
    """)
    proc = Cli(program=("-c", script), timeout=120).run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "RoutingError"
    assert "Unclosed" not in proc.stderr, proc.stderr
