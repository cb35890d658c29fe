"""Audit: secrets never print -- a flag's value in an MCP server's ``args``, a key named like
``bearer``, and ``modelplex mcp list`` (which printed URLs with passwords and args as given)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplex.masking import MASK, mask
from modelplex.testing import Cli, CliResult

CONFIG = """
[providers.anthropic]
bearer = "LEAK-bearer"

[mcp.files]
command = "files-server"
args = ["--token", "LEAK-token", "--api-key=LEAK-apikey", "--port", "8000"]

[mcp.web]
url = "https://user:LEAK-pass@mcp.example/mcp?sig=LEAK-sig"
"""


def run(config: Path, *args: str) -> CliResult:
    return Cli(config, timeout=120).run(*args)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_the_value_of_a_secret_flag_in_args_is_masked() -> None:
    assert mask(["--token", "t0ken", "--api-key=k3y", "--port", "8000", "-v", "x"]) == [
        "--token", MASK, f"--api-key={MASK}", "--port", "8000", "-v", "x"]
    assert mask({"args": ["serve", "--auth-token", "abc"]}) == {
        "args": ["serve", "--auth-token", MASK]}
    assert mask(["--max-tokens", "5", "--token-file", "/run/t"]) == [
        "--max-tokens", "5", "--token-file", "/run/t"]


def test_a_key_named_bearer_is_masked() -> None:
    assert mask({"bearer": "abc"}) == {"bearer": MASK}


@pytest.mark.parametrize("args", [("mcp", "list"), ("mcp", "list", "--json"),
                                  ("config", "show"), ("config", "show", "--json")])
def test_listing_the_config_prints_no_secret(config: Path, args: tuple[str, ...]) -> None:
    proc = run(config, *args)
    assert proc.returncode == 0, proc.stderr
    assert "LEAK" not in proc.stdout + proc.stderr
    if "--json" in args:
        json.loads(proc.stdout)
    if args[0] == "mcp":
        assert "files-server --token ***" in proc.stdout or '"--token"' in proc.stdout
        assert "mcp.example/mcp" in proc.stdout


def test_a_config_repr_masks_every_secret() -> None:
    """repr(Config) showed auth_token, client_secret, header values, URL passwords and
    ``--token`` args (only the four SECRET_KEYS were SecretStr)."""
    from modelplex.config import parse_config

    config = parse_config({
        "providers": {"anthropic": {"auth_token": "LEAK-1", "api_key": "LEAK-2"},
                      "x": {"client_secret": "LEAK-3", "headers": {"Authorization": "LEAK-4"},
                            "base_url": "http://u:LEAK-5@h"}},
        "models": {"m": {"deployments": [{"model": "openai:x", "auth_token": "LEAK-6",
                                          "headers": {"X-Api-Key": "LEAK-7"}}]}},
        "mcp": {"s": {"command": "x", "args": ["--token", "LEAK-8"], "env": {"A": "LEAK-9"}}},
        "state": {"url": "redis://:LEAK-10@h"}})
    for text in (repr(config), str(config), repr(config.models["m"]),
                 repr(config.models["m"].deployments[0])):
        assert "LEAK" not in text, text
    assert "auth_token='***'" in repr(config)
    assert "fallbacks=()" in repr(config.models["m"])
    # the values themselves are unchanged: the provider still gets them
    assert config.models["m"].deployments[0].provider_kwargs["auth_token"] == "LEAK-6"
