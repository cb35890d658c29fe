"""``modelplex serve`` and ``modelplex server-key`` as a user runs them: in a subprocess."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from modelplex.testing import Cli
from modelplex_server.settings import hash_key
from modelplex_server.testing import ServeProcess

#: ``modelplex ARGS`` in a child process (``env``: variables added to this process's)
modelplex = Cli(drop=()).run


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServeProcess, str, str]]:
    """``modelplex serve --port 0`` with one key; yields the process, its URL and the key."""
    key = "mpx-" + "k" * 40
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nmax_concurrency = 8\n[[server.keys]]\nname = "ci"\n'
                      f'hash = "{hash_key(key)}"\n')
    server = ServeProcess("--port", "0", "--config", str(config),
                          env={"MODELPLEX_LOAD_PLUGINS": "llamacpp,server",
                               "MODELPLEX_DATA_DIR": str(tmp_path / "data")})
    try:
        assert re.search(r"serving on \S+ \(1 API keys\)", server.text), server.text
        yield server, server.url, key
    finally:
        server.stop(10)


def test_serve_answers_and_stops_on_sigterm(
        served: tuple[ServeProcess, str, str], tmp_path: Path) -> None:
    server, url, key = served
    # conversations are kept in SQLite in the data dir by default
    assert (tmp_path / "data" / "server-conversations.db").is_file()
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        assert json.load(resp)["status"] == "ok"
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    assert "llamacpp:smollm2" in [m.id for m in client.models.list()]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    client.close()
    assert server.stop(20) == 0  # SIGTERM
    log = server.text
    assert '"GET /v1/models HTTP/1.1" 200' in log  # the access log
    assert key not in log


def test_server_key() -> None:
    proc = modelplex("server-key", "--name", "alice")
    assert proc.returncode == 0, proc.stderr
    key = re.search(r"API key \(shown once\): (mpx-\S+)", proc.stderr)
    assert key is not None
    assert proc.stdout == f'[[server.keys]]\nname = "alice"\nhash = "{hash_key(key.group(1))}"\n'


def test_bad_settings_are_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[server]\nprot = 8000\nmax_concurrency = -1\n')
    proc = modelplex("serve", "--config", str(config))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "server.prot: unknown setting (valid: host, port" in proc.stderr
    assert "server.max_concurrency: Input should be greater than 0" in proc.stderr
    proc = modelplex("serve", "--config", str(tmp_path / "missing.toml"))
    assert proc.returncode == 1 and "cannot read the modelplex config" in proc.stderr
    assert "--config" in proc.stderr
    config.write_text('[[server.keys]]\nname = "a"\nhash = "mpx-plain-key-here"\n')
    proc = modelplex("serve", "--config", str(config))
    assert proc.returncode == 1 and "server.keys.0.hash: must be 'sha256:'" in proc.stderr
    assert "mpx-plain-key-here" not in proc.stderr
    (tmp_path / "a-file").write_text("")
    config.write_text("")
    proc = modelplex("serve", "--config", str(config),
                     "--conversations", str(tmp_path / "a-file" / "c.db"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot open the server's conversation database" in proc.stderr
    assert "server.conversations (or --conversations)" in proc.stderr


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = modelplex("serve", "--port", str(port), "--conversations", "memory",
                         env={"MODELPLEX_DATA_DIR": str(tmp_path / "data"),
                              "MODELPLEX_LOAD_PLUGINS": "openai,llamacpp,server",
                              "PYTHONWARNINGS": "always"})
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: the address is already in use (another "
        "server is running there): stop it, or choose another port (--port, or 0 for a free "
        "one)"], proc.stderr


def test_the_served_config_file_is_the_process_config(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --config FILE``: settings read process-wide (the Retry-After cap) come from
    FILE, not from MODELPLEX_CONFIG or the user's config."""
    from click.testing import CliRunner

    import modelplex_server.app as app_module
    from modelplex import errors
    from modelplex.config import get_config, set_config
    from modelplex_server.cli import serve

    other = tmp_path / "other.toml"
    other.write_text("max_retry_after = 11\n")
    served_file = tmp_path / "served.toml"
    served_file.write_text('max_retry_after = 42\n[server]\nconversations = "memory"\n')
    monkeypatch.setenv("MODELPLEX_CONFIG", str(other))
    seen: dict[str, float] = {}

    async def no_serving(app: object, **kwargs: object) -> None:
        seen["cap"] = errors.max_retry_after()

    monkeypatch.setattr(app_module, "serve", no_serving)
    old = set_config(None)
    try:
        assert get_config().max_retry_after == 11
        result = CliRunner().invoke(serve, ["--config", str(served_file), "--port", "0"])
        assert result.exit_code == 0, result.output
        assert seen == {"cap": 42}
    finally:
        set_config(old)
