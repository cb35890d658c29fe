"""Test helpers for modelplex and for third-party plugin authors.

* :class:`ProviderConformanceTests`: the base class every provider's test suite subclasses,
  made of seven suites (:mod:`modelplex.testing.conformance`) that can also be used alone.
* :class:`FaultyUpstream` (:mod:`modelplex.testing.upstream`): a real HTTP server on
  127.0.0.1 speaking the common wire formats, with faults, scripted replies (one
  :class:`Reply` type: text, tool calls, a fault) for one model or for a whole conversation,
  request recording, unknown models and header checks.
* :func:`serve_app` (:mod:`modelplex.testing.serve`): run an aiohttp application of your own
  on 127.0.0.1 at a free port; yields its base URL.
* :class:`Wire` (:mod:`modelplex.testing.wire`): how the test upstream writes one API's
  answers; the built-in wires (:mod:`modelplex.testing.wires`) are instances of it, and a
  wire of your own plugs into ``FaultyUpstream(wires=[...])`` and ``ConformanceBase.wire``.
* :class:`Cli` (:mod:`modelplex.testing.cli`): the ``modelplex`` command run as a user runs
  it, without the developer's settings, in a child process or in this one; each run gives a
  :class:`CliResult` (exit code, stdout, stderr).
* :func:`server_process` (:mod:`modelplex.testing.process`): a server program of your own
  (llama.cpp's ``llama-server``, ...) started in a child process, waited on until an HTTP
  check answers, stopped after; :func:`free_port` picks it a port.
* :class:`Replay` (:mod:`modelplex.testing.replay`): aioresponses on every aiohttp 3.x
  (import it from its module; it needs the ``aioresponses`` package).
* The pytest plugin (:mod:`modelplex.testing.pytest_plugin`, loaded automatically when
  modelplex is installed) provides the ``modelplex_plugins``, ``register_plugin`` and
  ``modelplex_cli`` fixtures, and ``mock``, ``transcript`` and ``sent`` for tests that
  replay recorded traffic.
"""

from __future__ import annotations

from modelplex.testing.cli import Cli, CliResult
from modelplex.testing.conformance import (
    CONFORMANCE_SECRET,
    CONFORMANCE_TIMEOUTS,
    BasicSuite,
    ConformanceBase,
    EmbeddingsSuite,
    HttpErrorsSuite,
    LifecycleSuite,
    ModelManagementSuite,
    OptionsSuite,
    ProviderConformanceTests,
    StreamingFaultsSuite,
)
from modelplex.testing.process import ServerProcessError, free_port, server_process
from modelplex.testing.serve import serve_app
from modelplex.testing.upstream import (
    PIECE,
    FaultyUpstream,
    ReceivedRequest,
    Reply,
    closed_port_url,
)
from modelplex.testing.wire import Answer, Wire
from modelplex.testing.wires import WIRES, get_wire

__all__ = [
    "CONFORMANCE_SECRET",
    "CONFORMANCE_TIMEOUTS",
    "PIECE",
    "WIRES",
    "Answer",
    "BasicSuite",
    "Cli",
    "CliResult",
    "ConformanceBase",
    "EmbeddingsSuite",
    "FaultyUpstream",
    "HttpErrorsSuite",
    "LifecycleSuite",
    "ModelManagementSuite",
    "OptionsSuite",
    "ProviderConformanceTests",
    "ReceivedRequest",
    "Reply",
    "ServerProcessError",
    "StreamingFaultsSuite",
    "Wire",
    "closed_port_url",
    "free_port",
    "get_wire",
    "serve_app",
    "server_process",
]
