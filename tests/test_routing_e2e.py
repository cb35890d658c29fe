"""Named models end to end: the CLI with a config file, and llama.cpp as the fallback of a
remote model that is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplex import ChatManager
from modelplex.config import parse_config
from modelplex.pool import ProviderPool
from modelplex.testing import Cli, CliResult
from modelplex.testing.upstream import PIECE, FaultyUpstream, closed_port_url


async def run_cli(*args: str, config: Path) -> CliResult:
    """``modelplex ARGS`` with ``config`` and no default model of the developer's."""
    return await Cli(config, drop=("MODELPLEX_DEFAULT_MODEL",)).arun(*args)


async def test_cli_chat_and_stats_through_a_named_model(tmp_path: Path) -> None:
    async with FaultyUpstream() as a, FaultyUpstream() as b:
        config = tmp_path / "config.toml"
        config.write_text(f"""
default_model = "duo"

[providers.openai]
api_key = "sk-cli-routing-secret-0123456789"

[models.duo]
deployments = [
    {{ model = "openai:fault", base_url = "{a.url}/v1", name = "a" }},
    {{ model = "openai:fault", base_url = "{b.url}/v1", name = "b" }},
]
""")
        a.faults.append("503:7")
        code, out, err = await run_cli("chat", "-m", "duo", "hello", config=config)
        assert code == 0, err
        assert out.strip() == (PIECE * 5).strip()
        assert (a.requests, b.requests) == (1, 1)

        code, out, err = await run_cli("chat", "hello", config=config)  # the default model
        assert code == 0, err
        assert a.requests + b.requests == 3

        code, out, err = await run_cli("config", "show", config=config)
        assert code == 0, err
        assert "[models.duo]" in out and "sk-cli-routing" not in out

        b.faults.append("500")
        code, out, err = await run_cli("stats", "-m", "duo", "--prompt", "hi", "-n", "4",
                                       "--json", config=config)
        assert code == 0, err
        stats = json.loads(out)[0]
        assert stats["model"] == "duo" and stats["requests"] == 4
        assert stats["errors"] == {}  # the 500 was retried on the other deployment
        assert stats["deployments"]["b"]["errors"] == {"ServerError": 1}
        assert stats["completion_tokens"] == 20

        config.write_text("[models.duo]\nmodel = 'fault'\n")
        code, out, err = await run_cli("chat", "-m", "duo", "hello", config=config)
        assert code == 1
        assert err.startswith(f"Error: {config}: models.duo.model: write it as")


@pytest.mark.slow
async def test_llamacpp_answers_when_the_remote_model_is_down(tmp_path: Path) -> None:
    from modelplex_llamacpp.tiny_gguf import write_tiny_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf", seed=0)
    config = parse_config({
        "providers": {"llamacpp": {"models_dir": str(tmp_path)}},
        "models": {
            "main": {"deployments": [{"model": "openai:gpt-4o-mini",
                                      "base_url": closed_port_url() + "/v1",
                                      "api_key": "sk-down-0123456789"}],
                     "fallbacks": ["local"]},
            "local": {"model": "llamacpp:tiny", "options": {"max_tokens": 4}},
        }})
    async with ChatManager("main", config=config, pool=ProviderPool()) as chat:
        meta = await chat.get_response_with_meta("hello")
        assert meta.provider == "llamacpp"
        assert meta.deployment == "llamacpp:tiny"
        assert meta.attempts == 2
        assert meta.completion_tokens > 0


async def test_provider_commands_use_the_config_providers_table(tmp_path: Path) -> None:
    async with FaultyUpstream() as up:
        config = tmp_path / "config.toml"
        config.write_text(f'[providers.ollama]\nhost = "{up.url}"\n')
        code, out, err = await run_cli("models", "list", "-p", "ollama", config=config)
        assert code == 0, err
        assert out.splitlines()[1].startswith("ollama:fault ")  # from the configured host


async def test_the_config_files_timeouts_beat_the_commands_defaults(tmp_path: Path) -> None:
    async with FaultyUpstream() as up:
        config = tmp_path / "config.toml"
        config.write_text(f"""
[providers.openai]
base_url = "{up.url}/v1"
api_key = "sk-timeout-test-0123456789"
timeouts = {{ first_byte = 0.5 }}
""")
        up.faults.append("hang")
        code, _, err = await run_cli("chat", "-m", "openai:fault", "hello", config=config)
        assert code == 1
        assert "within 0.5 s" in err  # not the command's default of 120 s
        up.faults.append("hang")
        code, _, err = await run_cli("chat", "-m", "openai:fault", "--first-byte-timeout",
                                     "0.2", "hello", config=config)
        assert code == 1 and "within 0.2 s" in err  # a flag beats the file
