"""The ``modelplex`` command end to end, with every installed plugin, in subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from modelplex.__about__ import __version__
from modelplex.testing import Cli
from modelplex.testing.upstream import PIECE, FaultyUpstream

QUESTION = "What is the capital of France?"


#: ``modelplex ARGS`` in a child process, without the developer's MODELPLEX_* settings
CLI = Cli()
modelplex = CLI.run


def test_version() -> None:
    proc = modelplex("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"modelplex, version {__version__}"


def test_installed_script() -> None:
    script = shutil.which("modelplex")
    assert script is not None, "the modelplex console script is not on PATH"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60,
                          check=False, env=CLI.environ())
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_help_lists_the_commands() -> None:
    proc = modelplex("--help")
    assert proc.returncode == 0
    for command in ("chat", "models", "providers", "plugins"):
        assert command in proc.stdout


def test_option_out_of_range() -> None:
    proc = modelplex("chat", "-o", "temperature", "5", "hi")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("Error: option 'temperature' must be between 0 and 2 "
                                   "(got 5)")
    assert proc.stdout == ""


def test_unknown_option_lists_the_valid_ones() -> None:
    proc = modelplex("chat", "-o", "temprature", "0.5", "hi")
    assert proc.returncode == 1
    assert "unknown option 'temprature' for provider 'llamacpp'" in proc.stderr
    assert "temperature" in proc.stderr.split("valid options:")[1]


def test_unknown_provider() -> None:
    proc = modelplex("chat", "-m", "nope:some-model", "hi")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: unknown provider 'nope'")
    assert "llamacpp" in lines[0].split("Installed providers:")[1]
    assert "pip install modelplex-nope" in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_a_traceback() -> None:
    plain = modelplex("chat", "-m", "nope:x", "hi")
    debug = modelplex("--debug", "chat", "-m", "nope:x", "hi")
    by_env = modelplex("chat", "-m", "nope:x", "hi", env={"MODELPLEX_DEBUG": "1"})
    assert plain.returncode == debug.returncode == by_env.returncode == 1
    assert "Traceback" not in plain.stderr
    for proc in (debug, by_env):
        assert proc.stderr.startswith("Traceback (most recent call last):")
        assert "UnknownProviderError" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown provider 'nope'")


def test_empty_prompt_from_stdin() -> None:
    proc = modelplex("chat", input="   \n")
    assert proc.returncode == 1
    assert "Error: the prompt is empty" in proc.stderr


def test_usage_error_from_click() -> None:
    proc = modelplex("chat", "--mode", "wild", "hi")
    assert proc.returncode == 2
    assert "'wild' is not one of" in proc.stderr


def test_plugins_json() -> None:
    proc = modelplex("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    llamacpp = infos["llamacpp"]
    assert llamacpp["distribution"] == "modelplex-llamacpp"
    assert llamacpp["version"]
    assert llamacpp["hooks"] == ["register_providers"]
    assert llamacpp["error"] is None
    assert llamacpp["builtin"] is False
    assert "modelplex.builtins" not in infos

    everything = json.loads(modelplex("plugins", "--json", "--all").stdout)
    builtins = [i for i in everything if i["name"] == "modelplex.builtins"]
    assert builtins and builtins[0]["builtin"] is True


def test_plugins_respects_the_block_list() -> None:
    proc = modelplex("plugins", "--json", env={"MODELPLEX_DISABLE_PLUGINS": "llamacpp"})
    assert proc.returncode == 0
    assert "llamacpp" not in [i["name"] for i in json.loads(proc.stdout)]
    chat = modelplex("chat", "-m", "llamacpp:smollm2", "hi",
                     env={"MODELPLEX_DISABLE_PLUGINS": "llamacpp"})
    assert chat.returncode == 1
    assert "unknown provider 'llamacpp'" in chat.stderr


def test_models_list_json() -> None:
    proc = modelplex("models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    ids = [m["id"] for m in data["models"]]
    assert "llamacpp:smollm2" in ids
    assert "llamacpp" not in data["errors"]  # providers that are down are listed as errors

    only = json.loads(modelplex("models", "list", "-p", "llamacpp", "--json").stdout)
    assert {m["provider"] for m in only["models"]} == {"llamacpp"}
    assert only["errors"] == {}


def test_models_list_table() -> None:
    proc = modelplex("models", "list", "-p", "llamacpp")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["MODEL", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT",
                              "CAPABILITIES"]
    assert any(row.startswith("llamacpp:smollm2") for row in rows)


def test_models_list_search_and_filters() -> None:
    def ids(*args: str) -> list[str]:
        proc = modelplex("models", "list", "-p", "llamacpp", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return [m["id"] for m in json.loads(proc.stdout)["models"]]

    assert ids("--search", "SMOL", "--capability", "embeddings") == ["llamacpp:smollm2"]
    assert ids("--search", "no-such-model") == []
    assert ids("--capability", "tools") == []  # the embedded model cannot call tools
    assert ids("--min-context", "8192", "--local") == ["llamacpp:smollm2"]
    assert ids("--min-context", "100000") == []
    assert ids("--remote") == []


def test_models_list_unknown_provider() -> None:
    proc = modelplex("models", "list", "-p", "nope")
    assert proc.returncode == 1
    assert "unknown provider 'nope'" in proc.stderr


def test_models_show() -> None:
    text = modelplex("models", "show", "llamacpp:smollm2")
    assert text.returncode == 0, text.stderr
    fields = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert fields["id"] == "llamacpp:smollm2"
    assert fields["provider"] == "llamacpp"
    assert fields["size"].endswith("MB")
    assert int(fields["context_length"]) > 0

    proc = modelplex("models", "show", "llamacpp:smollm2", "--json")
    info = json.loads(proc.stdout)
    assert info["name"] == "smollm2"
    assert info["size_bytes"] > 1_000_000
    assert info["size"] == fields["size"]


def test_models_show_missing_model() -> None:
    proc = modelplex("models", "show", "llamacpp:no-such-model")
    assert proc.returncode == 1
    assert "no-such-model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_providers_json() -> None:
    proc = modelplex("providers", "--json")
    assert proc.returncode == 0, proc.stderr
    statuses = {s["provider"]: s for s in json.loads(proc.stdout)}
    assert statuses["llamacpp"]["healthy"] is True
    assert all(isinstance(s["healthy"], bool) for s in statuses.values())
    # a provider that is down is reported with a reason
    assert all(s["detail"] for s in statuses.values() if not s["healthy"])


@pytest.mark.slow
def test_one_shot_from_stdin_with_usage() -> None:
    proc = modelplex("chat", "-u", input=QUESTION + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "[llamacpp:smollm2] prompt" in proc.stderr
    assert "completion" in proc.stderr


@pytest.mark.slow
def test_one_shot_with_system_prompt_and_mode() -> None:
    proc = modelplex("chat", "-m", "llamacpp:smollm2", "-s", "Answer in one short sentence.",
                     "--mode", "precise", "-o", "max_tokens", "40", QUESTION)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


@pytest.mark.slow
def test_interactive_session_through_a_terminal() -> None:
    """The interactive session needs a terminal on stdin (piped stdin is a one-shot prompt)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(CLI.command("chat"), stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CLI.environ())
    os.close(slave)
    try:
        for line in ["/model nope:x", "", "/model llamacpp:smollm2", QUESTION, "/exit"]:
            os.write(master, (line + "\n").encode())
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, err
    assert "Chatting with llamacpp:smollm2" in err
    assert "Error: unknown provider 'nope'" in err  # reported, and the session went on
    assert "Now chatting with llamacpp:smollm2." in err
    assert "Paris" in out


def test_debug_flag_is_accepted_after_the_command() -> None:
    proc = modelplex("chat", "-m", "nosuch:x", "hi", "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "unknown provider 'nosuch'" in proc.stderr


def test_structured_chat_input_errors(tmp_path) -> None:
    proc = modelplex("chat", "--schema", str(tmp_path / "missing.json"), "hi")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"Error: --schema {tmp_path / 'missing.json'}: cannot read "
                                   "it: No such file or directory")
    (tmp_path / "list.json").write_text("[1, 2]")
    proc = modelplex("chat", "--schema", str(tmp_path / "list.json"), "hi")
    assert proc.stderr.strip().endswith("list.json: a JSON schema must be an object")
    proc = modelplex("chat", "-t", "haiku", "-p", "topic", "frogs")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: no prompt template named 'haiku'; available: "
                                          "chain_of_thought, extract, few_shot")


def test_templates_json_lists_fields() -> None:
    proc = modelplex("templates", "--json")
    assert proc.returncode == 0
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["chain_of_thought"]["output"] == "ChainOfThought"
    assert rows["chain_of_thought"]["fields"][0] == {
        "name": "task", "type": "str", "required": True, "default": None,
        "description": "What to solve."}

# -- issue #8: bad input, one table ---------------------------------------------------------------
CLOSED = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
FAST = {"MODELPLEX_LOAD_PLUGINS": "openai,ollama", "OPENAI_BASE_URL": CLOSED,
        "OPENAI_API_KEY": "sk-dummy-0123456789"}
BAD_ENDPOINT = '{"vllm": {"base_url": "http://127.0.0.1:9/v1", "headers": {"X-A": "a\\r\\nb"}}}'

# (args, stdin, extra environment, exit status, the last line of stderr)
BAD_INPUT: dict[str, tuple[list[str | bytes], bytes | None, dict[str, str], int, str]] = {
    "option out of range": (
        ["-o", "temperature", "5", "hi"], None, {}, 1,
        "Error: option 'temperature' must be between 0 and 2 (got 5)"),
    "true as a number": (
        ["-o", "max_tokens", "true", "hi"], None, {}, 1,
        "Error: option 'max_tokens': expected a number, not true/false (got True)"),
    "false as a number": (
        ["-o", "temperature", "false", "hi"], None, {}, 1,
        "Error: option 'temperature': expected a number, not true/false (got False)"),
    "unknown provider": (
        ["-m", "nope:x", "hi"], None, {}, 1,
        "Error: unknown provider 'nope'. Installed providers: ollama, openai. Install another "
        "with `pip install modelplex-nope` (run `modelplex plugins` to see what is installed)."),
    "bad mode": (
        ["--mode", "wild", "hi"], None, {}, 2,
        "Error: Invalid value for '--mode': 'wild' is not one of 'precise', 'balanced', "
        "'creative'."),
    "bad timeout flag": (
        ["--first-byte-timeout", "abc", "hi"], None, {}, 2,
        "Error: Invalid value for '--first-byte-timeout': 'abc' is not a number of seconds > 0 "
        "(or none for no limit)"),
    "bad timeout variable": (
        ["hi"], None, {"MODELPLEX_FIRST_BYTE_TIMEOUT": "-5"}, 1,
        "Error: MODELPLEX_FIRST_BYTE_TIMEOUT='-5' is not valid: use a number of seconds > 0, or "
        "none for no limit"),
    "message length not a number": (
        ["hi"], None, {"MODELPLEX_MAX_MESSAGE_LENGTH": "abc"}, 1,
        "Error: MODELPLEX_MAX_MESSAGE_LENGTH='abc' is not valid: use a whole number >= 1 "
        "(default 1000000)"),
    "message length zero": (
        ["hi"], None, {"MODELPLEX_MAX_MESSAGE_LENGTH": "0"}, 1,
        "Error: MODELPLEX_MAX_MESSAGE_LENGTH='0' is not valid: use a whole number >= 1 "
        "(default 1000000)"),
    "system prompt too long": (
        ["-s", "You are a very helpful assistant.", "hi"], None,
        {"MODELPLEX_MAX_MESSAGE_LENGTH": "10"}, 1,
        "Error: system_prompt: content is 33 characters, more than the maximum of 10; shorten it "
        "or raise MODELPLEX_MAX_MESSAGE_LENGTH"),
    "debug not yes or no": (
        ["hi"], None, {"MODELPLEX_DEBUG": "maybe"}, 1,
        "Error: MODELPLEX_DEBUG='maybe' is not a yes/no value: use 1, true, yes or on to turn it "
        "on, 0, false, no or off to turn it off"),
    "debug 0 is off": (
        ["-m", "nope:x", "hi"], None, {"MODELPLEX_DEBUG": "0"}, 1,
        "Error: unknown provider 'nope'. Installed providers: ollama, openai. Install another "
        "with `pip install modelplex-nope` (run `modelplex plugins` to see what is installed)."),
    "undecodable prompt argument": (
        [b"caf\xe9"], None, {}, 1,
        "Error: message: content is not valid text: character 3 is an undecodable byte "
        "('\\udce9'); give the text as UTF-8"),
    "undecodable stdin": (
        [], b"caf\xe9\n", {}, 1,
        "Error: message: content is not valid text: character 3 is an undecodable byte "
        "('\\udce9'); give the text as UTF-8"),
    "ollama port 0": (
        ["-m", "ollama:x", "hi"], None, {"OLLAMA_HOST": "127.0.0.1:0"}, 1,
        "Error: OLLAMA_HOST / host '127.0.0.1:0' has an invalid port: write it as HOST:PORT with "
        "a port from 1 to 65535, e.g. 127.0.0.1:11434"),
    "openai port 0": (
        ["hi"], None, {"OPENAI_BASE_URL": "http://127.0.0.1:0/v1"}, 1,
        "Error: openai: base URL 'http://127.0.0.1:0/v1' has an invalid port: use a number from "
        "1 to 65535"),
    "broken endpoints variable": (
        ["hi"], None, {"MODELPLEX_OPENAI_ENDPOINTS": "{bad"}, 1,
        "Error: MODELPLEX_OPENAI_ENDPOINTS is not valid JSON: Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)"),
    "header with a line break": (
        ["-m", "vllm:x", "hi"], None, {"MODELPLEX_OPENAI_ENDPOINTS": BAD_ENDPOINT}, 1,
        "Error: vllm: headers: the value of 'X-A' holds a line break or NUL character, which "
        "HTTP does not allow"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input(case: str) -> None:
    args, stdin, extra, status, message = BAD_INPUT[case]
    model = [] if "-m" in args else ["-m", "openai:gpt-x"]
    proc = modelplex("chat", *model, *args, input=stdin, env={**FAST, **extra})
    err = proc.stderr
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == message
    if status == 1:
        assert err.strip() == message  # one line
    assert "Traceback" not in err
    assert proc.stdout == ""


def test_broken_openai_config_keeps_the_provider_listed() -> None:
    proc = modelplex("providers", "--json",
                     env={**FAST, "MODELPLEX_OPENAI_ENDPOINTS": "{bad"})
    assert proc.returncode == 0, proc.stderr
    openai = {s["provider"]: s for s in json.loads(proc.stdout)}["openai"]
    assert openai["healthy"] is False
    assert openai["detail"].startswith("MODELPLEX_OPENAI_ENDPOINTS is not valid JSON")


def test_provider_name_with_a_colon_is_rejected_loudly() -> None:
    endpoints = '{"a:b": {"base_url": "http://127.0.0.1:9/v1"}, "ok": {"base_url": "http://x/v1"}}'
    proc = modelplex("plugins", "--json", env={**FAST, "MODELPLEX_OPENAI_ENDPOINTS": endpoints})
    assert proc.returncode == 0
    openai = {i["name"]: i for i in json.loads(proc.stdout)}["openai"]
    assert "provider name 'a:b' is not valid" in openai["error"]
    assert "provider name 'a:b' is not valid" in proc.stderr  # said, not silent
    names = json.loads(modelplex("providers", "--json", env={
        **FAST, "MODELPLEX_OPENAI_ENDPOINTS": endpoints}).stdout)
    assert "ok" in {s["provider"] for s in names}  # the plugin's valid endpoints still work


def test_a_full_disk_is_a_clear_error() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(CLI.command("plugins", "--json"), stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                              env=CLI.environ(FAST))
    assert proc.returncode == 1
    assert proc.stderr == "Error: cannot write the output: No space left on device\n"


# -- issue #8: Ctrl-C, `--`, and the line an error is printed on ---------------------------------
async def _read_until(stream: asyncio.StreamReader, text: bytes, within: float = 30) -> bytes:
    seen = b""
    async with asyncio.timeout(within):
        while text not in seen:
            data = await stream.read(1024)
            if not data:
                break
            seen += data
    return seen


def _upstream_env(upstream: FaultyUpstream) -> dict[str, str | None]:
    return {"MODELPLEX_LOAD_PLUGINS": "openai", "OPENAI_BASE_URL": upstream.url + "/v1",
            "OPENAI_API_KEY": "sk-dummy-0123456789"}


async def test_an_answer_longer_than_the_input_limit_is_printed() -> None:
    """Issue 19 #12: the input limit is not applied to the answer (it was a traceback)."""
    async with FaultyUpstream() as upstream:
        proc = await CLI.arun("chat", "-m", "openai:fault", "hi",
                              env={**_upstream_env(upstream), "MODELPLEX_MAX_MESSAGE_LENGTH": "5"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == PIECE * 5 + "\n"  # 20 characters, more than the limit of 5
    assert "Traceback" not in proc.stderr


def _ignoring_sigint() -> None:  # runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# A parent that ignores SIGINT (a test runner started in the background by a script, a CI
# service) makes its children inherit SIG_IGN, which Python keeps: each of these tests then
# waited its 30 s for an exit that never came. The command takes Ctrl-C back.
@pytest.mark.parametrize("parent", ["default", "ignoring_sigint"])
async def test_ctrl_c_in_one_shot_exits_130_and_closes_the_request(parent: str) -> None:
    async with FaultyUpstream() as upstream:
        upstream.faults.append("stall_mid")
        async with CLI.start(
                "chat", "-m", "openai:fault", "hi", env=_upstream_env(upstream),
                preexec_fn=_ignoring_sigint if parent == "ignoring_sigint" else None) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            out = await _read_until(proc.stdout, PIECE.encode() * 2)
            proc.send_signal(signal.SIGINT)
            rest, err = await asyncio.wait_for(proc.communicate(), 30)
            assert await upstream.wait_idle(5)
    assert proc.returncode == 130, err
    assert (out + rest).decode() == PIECE * 2 + "\n"  # the partial answer, its line ended
    assert b"Traceback" not in err
    assert b"Aborted" not in err
    assert upstream.disconnects == 1


BLOCKED_WORKER = """
import asyncio, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

from modelplex import hookimpl
from modelplex.chunks import StreamChunk
from modelplex.plugins import get_plugins
from modelplex.provider import Provider


class Blocked(Provider):
    name = "blocked"
    default_model = "m"

    async def _stream(self, request):
        # a call in a worker thread that never checks for Ctrl-C (llama.cpp loading a model)
        work = asyncio.get_running_loop().run_in_executor(
            ThreadPoolExecutor(1), time.sleep, 600)
        print("working", file=sys.stderr, flush=True)
        await work
        yield StreamChunk(content="never")


class Plugin:
    @hookimpl
    def register_providers(self, register):
        register(Blocked, name="blocked")


get_plugins().register(Plugin(), name="blocked")
from modelplex.cli import main

main()
"""


async def test_ctrl_c_does_not_wait_for_a_worker_thread_that_never_checks() -> None:
    cli = Cli(env={"MODELPLEX_LOAD_PLUGINS": ""}, program=["-c", BLOCKED_WORKER])
    async with cli.start("chat", "-m", "blocked:m", "--no-log", "hi") as proc:
        assert proc.stderr is not None
        await _read_until(proc.stderr, b"working")
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        took = time.monotonic() - interrupted
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert took < 30, took  # not the worker's 600 s


@asynccontextmanager
async def _chat_on_a_terminal(upstream: FaultyUpstream, parent: str
                              ) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``modelplex chat -m openai:fault`` in a session, a terminal on its stdin, started by a
    parent that ignores SIGINT or not; yields the process and the terminal's end to write."""
    import pty

    master, slave = pty.openpty()
    try:
        async with CLI.start(
                "chat", "-m", "openai:fault", stdin=slave, env=_upstream_env(upstream),
                preexec_fn=_ignoring_sigint if parent == "ignoring_sigint" else None) as proc:
            os.close(slave)
            assert proc.stdout is not None and proc.stderr is not None
            yield proc, master
    finally:
        os.close(master)


@pytest.mark.parametrize("parent", ["default", "ignoring_sigint"])
async def test_ctrl_c_in_a_session_stops_the_answer_and_keeps_its_part(parent: str) -> None:
    async with FaultyUpstream() as upstream:
        upstream.faults.append("stall_mid")
        async with _chat_on_a_terminal(upstream, parent) as (proc, master):
            assert proc.stdout is not None and proc.stderr is not None
            os.write(master, b"hi\n")
            await _read_until(proc.stdout, PIECE.encode() * 2)
            proc.send_signal(signal.SIGINT)
            await _read_until(proc.stderr, b"(stopped")
            os.write(master, b"again\n")
            await _read_until(proc.stdout, PIECE.encode() * 5)
            os.write(master, b"/exit\n")
            _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    sent = upstream.chat_requests()[1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "hi"), ("assistant", (PIECE * 2).strip()), ("user", "again")]


@pytest.mark.parametrize("parent", ["default", "ignoring_sigint"])
async def test_ctrl_c_at_the_prompt_exits_130(parent: str) -> None:
    async with FaultyUpstream() as upstream, \
            _chat_on_a_terminal(upstream, parent) as (proc, _):
        assert proc.stdout is not None and proc.stderr is not None
        await _read_until(proc.stderr, b"Chatting with openai:fault")
        await _read_until(proc.stdout, b"> ")  # the prompt: it waits for a line now
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err


async def test_error_after_a_partial_answer_starts_its_own_line() -> None:
    async with FaultyUpstream() as upstream:
        upstream.faults.append("error_event")
        proc = await CLI.arun("chat", "-m", "openai:fault", "--", "--debug",
                              env=_upstream_env(upstream))
    assert proc.returncode == 1
    assert proc.stdout == PIECE * 2 + "\n"
    assert proc.stderr.startswith("Error: openai: the server reported an error")
    assert "Traceback" not in proc.stderr  # `--debug` after `--` is the prompt, not the flag
    assert upstream.chat_requests()[0].json["messages"][-1]["content"] == "--debug"


async def test_timeout_flags_reach_the_provider() -> None:
    async with FaultyUpstream() as upstream:
        upstream.faults.append("stall_headers")
        proc = await CLI.arun(
            "chat", "-m", "openai:fault", "--between-chunks-timeout", "0.5", "hi",
            env={**_upstream_env(upstream), "MODELPLEX_BETWEEN_CHUNKS_TIMEOUT": "600"})
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("was silent for more than 0.5 s")


def test_a_hosted_api_without_a_key_is_not_configured_and_not_contacted() -> None:
    """`modelplex providers` says "not configured: set ANTHROPIC_API_KEY" (it cannot reach
    api.anthropic.com here: a contacted provider would say "cannot connect")."""
    cli = Cli(env={"MODELPLEX_LOAD_PLUGINS": "anthropic"}, drop=("MODELPLEX_", "ANTHROPIC_"))
    proc = cli.run("providers")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["anthropic", "off", "not", "configured:", "set",
                                   "ANTHROPIC_API_KEY"]
    proc = cli.run("models", "list", "-p", "anthropic")
    assert "anthropic: not configured: set ANTHROPIC_API_KEY" in proc.stderr
    assert "cannot connect" not in proc.stderr
