"""``Cli``: the ``modelplex`` command run by a test as a user runs it -- modelplex's own tests
and a plugin's (its subcommands, its provider through ``modelplex chat``).

Each run gets this process's environment, read at the run, without the developer's
settings (the variables starting with ``MODELPLEX_``; ``drop`` names other prefixes), plus
the variables given to the ``Cli`` and to the call (``None`` removes one); ``config`` is the
configuration file (``MODELPLEX_CONFIG``). Standard input is empty unless ``input`` is given.

::

    cli = Cli(config=tmp_path / "config.toml", env={"MODELPLEX_LOAD_PLUGINS": "openai"})
    result = cli.run("models", "list", "--json")      # a child process; waits for it
    assert result.returncode == 0, result.stderr
    result = await cli.arun("chat", "-m", "openai:m", "hi")  # awaited: the test's own
                                                              # servers keep answering
    async with cli.start("chat", "-m", "openai:m") as proc:  # an asyncio process to signal
        ...                                                   # or read; killed on leaving
    result = cli.invoke("providers")  # in this process: replayed HTTP, plugins registered
                                      # by the test

The ``modelplex_cli`` fixture (:mod:`modelplex.testing.pytest_plugin`) is a ``Cli`` whose
configuration, data and cache folders are in the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Cli", "CliResult"]

Arg = str | bytes | os.PathLike[str]
Env = Mapping[str, str | None]

#: a guard against a hang, not a speed check: a run taking longer fails
TIMEOUT = 300.0


class CliResult(NamedTuple):
    """What one run of ``modelplex`` did: its exit code and its output, decoded (UTF-8);
    ``code, out, err = result`` unpacks it."""

    returncode: int
    stdout: str
    stderr: str


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


class Cli:
    """Runs ``modelplex ARGS`` isolated from the developer's settings (see the module docs).

    ``config``: the configuration file (``MODELPLEX_CONFIG``); ``env``: variables to set
    (``None`` removes one); ``drop``: the prefixes of the variables left out of this process's
    environment; ``timeout``: the longest a run may take (seconds); ``program``: what this
    interpreter runs in a child process, the arguments after it (``-m modelplex``; ``-c
    CODE``: a script that, say, registers a plugin and then calls
    :func:`modelplex.cli.main`).
    """

    def __init__(self, config: str | os.PathLike[str] | None = None, *,
                 env: Env | None = None, drop: Sequence[str] = ("MODELPLEX_",),
                 timeout: float = TIMEOUT,
                 program: Sequence[str] = ("-m", "modelplex")) -> None:
        self.config = None if config is None else Path(config)
        self.extra: dict[str, str | None] = dict(env or {})
        self.drop = tuple(drop)
        self.timeout = timeout
        self.program = tuple(program)

    def __repr__(self) -> str:
        return f"Cli(config={self.config!r}, env={sorted(self.extra)!r}, drop={self.drop!r})"

    def changes(self, env: Env | None = None) -> dict[str, str | None]:
        """What a run changes in this process's environment: the dropped variables (None),
        the config file, the ``Cli``'s and ``env``'s variables."""
        found: dict[str, str | None] = dict.fromkeys(
            (k for k in os.environ if self.drop and k.startswith(self.drop)), None)
        if self.config is not None:
            found["MODELPLEX_CONFIG"] = str(self.config)
        found.update(self.extra)
        found.update(env or {})
        return found

    def environ(self, env: Env | None = None) -> dict[str, str]:
        """The environment a run of the command gets (``env``: more variables)."""
        full = dict(os.environ)
        for key, value in self.changes(env).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        return full

    def command(self, *args: Arg) -> list[Arg]:
        """The command line: this interpreter running ``python -m modelplex ARGS`` (the
        ``program``)."""
        return [sys.executable, *self.program, *args]

    def run(self, *args: Arg, input: str | bytes | None = None,
            env: Env | None = None) -> CliResult:
        """``modelplex ARGS`` in a child process; waits for it (``input``: its stdin)."""
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(self.command(*args), input=data, capture_output=True,
                              stdin=subprocess.DEVNULL if data is None else None,
                              env=self.environ(env), timeout=self.timeout,
                              check=False)
        return CliResult(proc.returncode, _text(proc.stdout), _text(proc.stderr))

    async def arun(self, *args: Arg, input: str | bytes | None = None,
                   env: Env | None = None) -> CliResult:
        """:meth:`run`, awaited: the event loop (a test's upstream in it) goes on meanwhile."""
        data = input.encode() if isinstance(input, str) else input
        async with self.start(*args, env=env,
                              stdin=asyncio.subprocess.DEVNULL if data is None
                              else asyncio.subprocess.PIPE) as proc:
            out, err = await asyncio.wait_for(proc.communicate(data), self.timeout)
        assert proc.returncode is not None
        return CliResult(proc.returncode, _text(out), _text(err))

    @asynccontextmanager
    async def start(self, *args: Arg, env: Env | None = None, **options: Any
                    ) -> AsyncIterator[asyncio.subprocess.Process]:
        """``async with cli.start(ARGS) as proc``: ``modelplex ARGS`` started as an asyncio
        process (stdin empty, stdout and stderr piped; ``options`` go to
        :func:`asyncio.create_subprocess_exec`: ``stdin=``, ``preexec_fn=``), for a test that
        signals it or reads it as it goes. Killed if still running on leaving, and reaped:
        no transport is left for another test's event loop to close."""
        settings: dict[str, Any] = {"stdin": asyncio.subprocess.DEVNULL,
                                    "stdout": asyncio.subprocess.PIPE,
                                    "stderr": asyncio.subprocess.PIPE, **options}
        proc = await asyncio.create_subprocess_exec(*self.command(*args),
                                                    env=self.environ(env), **settings)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()

    def invoke(self, *args: str, input: str | bytes | None = None,
               env: Env | None = None) -> CliResult:
        """``modelplex ARGS`` in this process (:func:`modelplex.cli.main`, with the
        environment changed for the call and the output captured), for what only this
        process has: replayed HTTP, a plugin the test registered. Exceptions other than the
        command's exit propagate."""
        from click.testing import CliRunner

        from modelplex.cli import main

        with CliRunner().isolation(input=input, env=self.changes(env)) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
        return CliResult(code, _text(out.getvalue()), _text(err.getvalue()))
