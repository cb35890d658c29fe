"""The test kit's own helpers: ``server_process`` (a server program started and waited on)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

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
