"""The test kit's own helpers: ``server_process`` (a server program started and waited on)
and ``Cli`` (the ``modelplex`` command run as a user runs it)."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from modelplex.testing.cli import Cli
from modelplex.testing.process import ServerProcessError, free_port, server_process

#: answers 503 to its first two asks (a model loading), then 200; says so on stdout
SLOW_START = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        asked = 0

        def do_GET(self):
            Handler.asked += 1
            self.send_response(503 if Handler.asked <= 2 else 200)
            self.end_headers()

        def log_message(self, *args):
            print("asked", Handler.asked, flush=True)

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


def test_server_process_waits_for_a_2xx_and_stops_the_server(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with server_process([sys.executable, "-c", SLOW_START, str(port)],
                        ready_url=f"http://127.0.0.1:{port}/health", log=log) as proc:
        assert proc.poll() is None
    assert proc.returncode is not None  # stopped on leaving the block
    assert "asked 3" in log.read_text()  # two 503s, then the 200


def test_server_process_reports_an_exit_with_its_log(tmp_path: Path) -> None:
    port = free_port()
    code = "import sys; print('no model at /nowhere.gguf', file=sys.stderr); sys.exit(3)"
    with pytest.raises(ServerProcessError) as info, server_process(
            [sys.executable, "-c", code], ready_url=f"http://127.0.0.1:{port}/health",
            log=tmp_path / "server.log", name="fake-server"):
        pytest.fail("not ready")
    message = str(info.value)
    assert message.startswith(f"fake-server exited with 3 before it answered http://127.0.0.1:"
                              f"{port}/health")
    assert message.endswith("no model at /nowhere.gguf\n")


def test_server_process_gives_up_at_its_deadline(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ServerProcessError, match=r"^sleeper did not answer .* within 0.5 s"), \
            server_process([sys.executable, "-c", "import time; time.sleep(60)"],
                           ready_url=f"http://127.0.0.1:{port}/", log=tmp_path / "server.log",
                           name="sleeper", timeout=0.5):
        pytest.fail("not ready")


# -- Cli: the modelplex command as a test runs it ----------------------------------------------
def test_cli_environment_drops_the_developers_settings(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("MODELPLEX_DEFAULT_MODEL", "mine:model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-developer-0123456789")
    monkeypatch.setenv("KEPT", "yes")
    cli = Cli(tmp_path / "config.toml", env={"MODELPLEX_LOAD_PLUGINS": "openai"},
              drop=("MODELPLEX_", "OPENAI_"))
    env = cli.environ({"KEPT": None, "EXTRA": "1"})
    assert env["MODELPLEX_CONFIG"] == str(tmp_path / "config.toml")
    assert env["MODELPLEX_LOAD_PLUGINS"] == "openai" and env["EXTRA"] == "1"
    assert not {"MODELPLEX_DEFAULT_MODEL", "OPENAI_API_KEY", "KEPT"} & set(env)
    assert Cli(drop=()).environ()["MODELPLEX_DEFAULT_MODEL"] == "mine:model"
    assert cli.command("chat")[1:] == ["-m", "modelplex", "chat"]
    assert Cli(program=["-c", "pass"]).command("x")[1:] == ["-c", "pass", "x"]


def test_the_fixture_keeps_the_folders_in_tmp_path(modelplex_cli: Cli, tmp_path: Path) -> None:
    env = modelplex_cli.environ()
    for name, folder in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                         ("XDG_CACHE_HOME", "cache")):
        assert env[name] == str(tmp_path / folder)
    assert not [k for k in env if k.startswith("MODELPLEX_")]


def test_cli_run_and_invoke_give_the_code_and_the_output(modelplex_cli: Cli) -> None:
    code, out, err = modelplex_cli.run("chat", "-m", "nosuch:x", input="hi\n")
    assert (code, out) == (1, "")
    assert err.startswith("Error: unknown provider 'nosuch'")
    in_process = modelplex_cli.invoke("chat", "-m", "nosuch:x", "hi")
    assert in_process == (code, out, err)


async def test_cli_start_kills_and_reaps_a_command_left_running(modelplex_cli: Cli) -> None:
    async with modelplex_cli.start("chat", "-m", "openai:x",
                                   stdin=asyncio.subprocess.PIPE) as proc:
        assert proc.returncode is None  # waits for its input
    assert proc.returncode == -signal.SIGKILL
    result = await modelplex_cli.arun("chat", "-m", "nosuch:x", "hi")
    assert result.returncode == 1 and "unknown provider 'nosuch'" in result.stderr
