"""``modelplex config show`` prints the config format and round-trips; ``server-key --name`` is
escaped (issue 19, #20).

Round trip: the printed text, parsed back as a config file, is the same configuration (with
the secrets masked on both sides: a masked secret cannot come back), for TOML and ``--json``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from modelplex.config import parse_config, to_toml
from modelplex.testing import Cli, CliResult

ODD = 'say "hi"\\ \t new\nline é ∑ \x7f \x01 end'  # quotes, backslash, controls, DEL, unicode

CONFIG = f"""
default_model = "fast"

[providers.ollama]
host = "http://gpu-box:11434"
keep_alive = "5m"

[providers."my.odd name"]
base_url = "http://127.0.0.1:9/v1"
note = {json.dumps(ODD)}

[models.fast]
strategy = "least_busy"
fallbacks = ["local"]
retries = {{ attempts = 2, timeout = 12.5 }}

[[models.fast.deployments]]
model = "ollama:llama3.2"
weight = 3
max_concurrency = 8
options = {{ num_ctx = 4096 }}

[[models.fast.deployments]]
model = "ollama:llama3.2"
host = "http://gpu-2:11434"
rpm = 600

[models.local]
model = "llamacpp:smollm2"
options = {{ temperature = 0.0, stop = ["\\n\\n", "END"] }}

[cache]
backend = "sqlite"
path = "/tmp/some cache.db"
ttl = 60
nondeterministic = true

[state]
backend = "redis"
url = "redis://cache-host:6379/2"

[conversations]
log = false

[server]
host = "127.0.0.1"
port = 8765
cors_origins = ["http://localhost:3000"]
keys = [{{ name = "a", hash = "sha256:{'0' * 64}" }}]
"""


def modelplex(*args: str, config: Path) -> CliResult:
    return Cli(config).run(*args)


def masked(data: dict[str, Any]) -> dict[str, Any]:
    return parse_config(data).masked()


def test_config_show_is_the_config_format_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    original = tomllib.loads(CONFIG)
    proc = modelplex("config", "show", config=path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "[cache]\n" in text and "[state]\n" in text
    assert "[cache.backend]" not in text and "value = " not in text
    assert 'backend = "sqlite"' in text
    printed = tomllib.loads(text)
    assert printed["cache"] == original["cache"]
    assert masked(printed) == masked(original)
    assert printed["providers"]["my.odd name"]["note"] == ODD


def test_config_show_json_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    proc = modelplex("config", "show", "--json", config=path)
    assert proc.returncode == 0, proc.stderr
    assert masked(json.loads(proc.stdout)) == masked(tomllib.loads(CONFIG))


def test_config_show_of_a_json_config_and_of_no_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tomllib.loads(CONFIG)), encoding="utf-8")
    proc = modelplex("config", "show", config=path)
    assert masked(tomllib.loads(proc.stdout)) == masked(tomllib.loads(CONFIG))
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    proc = modelplex("config", "show", config=empty)
    assert proc.returncode == 0 and tomllib.loads(proc.stdout) == {}


def test_to_toml_writes_what_tomllib_reads() -> None:
    data = {"a": 1, "b": 2.5, "c": True, "d": [1, 2], "e": {"f": {"g": "h"}, "i": None},
            "j k": {"l.m": ODD}, "n": float("inf"), "o": [{"p": {"q": [1]}}], "r": {}}
    assert tomllib.loads(to_toml(data)) == {
        "a": 1, "b": 2.5, "c": True, "d": [1, 2], "e": {"f": {"g": "h"}},
        "j k": {"l.m": ODD}, "n": float("inf"), "o": [{"p": {"q": [1]}}], "r": {}}


def test_server_key_name_cannot_inject_settings(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    crafted = 'x"\nhash = "sha256:' + "1" * 64 + '"\n[server]\nhost = "0.0.0.0'
    proc = modelplex("server-key", "--name", crafted, config=empty)
    assert proc.returncode == 0, proc.stderr
    block = tomllib.loads(proc.stdout)
    assert list(block) == ["server"] and list(block["server"]) == ["keys"]
    [key] = block["server"]["keys"]
    assert key["name"] == crafted
    assert key["hash"].startswith("sha256:") and key["hash"] != "sha256:" + "1" * 64
