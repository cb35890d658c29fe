"""Audit: the ``modelplex`` command from a user's side -- empty and oversized standard input,
and the other one-line errors found by using it."""

from __future__ import annotations

import pytest

from modelplex.testing import Cli, CliResult


def modelplex(*args: str, input: bytes | None = None, **env: str) -> CliResult:
    """``modelplex ARGS`` in a child process, without the developer's MODELPLEX_* settings."""
    return Cli(env=env, timeout=120).run(*args, input=input)


@pytest.mark.parametrize(("args", "stdin"), [((), b""), ((), b"\n  \n"), (("  ",), None)])
def test_an_empty_prompt_says_how_to_give_one(args: tuple[str, ...], stdin: bytes | None
                                              ) -> None:
    proc = modelplex("chat", *args, input=stdin)
    assert proc.returncode == 1
    assert proc.stderr == ("Error: the prompt is empty: give it as PROMPT (modelplex chat "
                           "\"...\") or on standard input, or run modelplex chat alone in a "
                           "terminal to chat\n")
    assert proc.stdout == ""


def test_oversized_standard_input_is_refused_without_reading_it_all() -> None:
    proc = modelplex("chat", input=b"x" * 1000, MODELPLEX_MAX_MESSAGE_LENGTH="10")
    assert proc.returncode == 1
    assert proc.stderr == ("Error: standard input holds more than 10 characters, the longest "
                           "message accepted: shorten it or raise MODELPLEX_MAX_MESSAGE_LENGTH\n")


def test_a_misspelt_plugin_allow_list_says_so() -> None:
    proc = modelplex("chat", "hi", MODELPLEX_LOAD_PLUGINS="llamcpp")
    assert proc.returncode == 1
    assert ("MODELPLEX_LOAD_PLUGINS names 'llamcpp', which no installed plugin has (did you "
            "mean 'llamacpp'?); installed plugins: ") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_capability_no_model_has_is_named() -> None:
    proc = modelplex("models", "list", "-p", "llamacpp", "-c", "tols",
                     MODELPLEX_LOAD_PLUGINS="llamacpp")
    assert proc.returncode == 0
    assert ("no model lists the capability 'tols' (did you mean 'tools'?); the models listed "
            "have: ") in proc.stderr


def test_mcp_serve_on_a_port_in_use_is_one_error_line() -> None:
    """uvicorn logged ``ERROR: [Errno 98] ...`` and the command exited with status 3."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = modelplex("mcp", "serve", "--transport", "http", "--port", str(port))
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; "
                           "choose another --port (0 picks a free one) or --host\n")


def test_json_and_schema_together_is_a_usage_error(tmp_path) -> None:
    """--schema silently won over --json."""
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object"}')
    proc = modelplex("chat", "--json", "--schema", str(schema), "-m", "ollama:x", "hi")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("Error: --schema asks for JSON matching a schema and "
                                        "--json for any JSON object: give one of them")


@pytest.mark.parametrize(("args", "message"), [
    ((b"logs", b"search", b"caf\xe9"), "Error: an argument or input is not valid text: it "
                                       "holds an undecodable byte ('\\udce9'); give the text "
                                       "as UTF-8"),
    ((b"logs", b"show", b"\xe9"), "Error: an argument or input is not valid text"),
    ((b"chat", b"-o", b"stop", b"\xe9", b"-m", b"ollama:x", b"hi"),
     "Error: option 'stop' is not valid text: character 0 is an undecodable byte ('\\udce9'); "
     "give the text as UTF-8"),
    ((b"chat", b"-t", b"chain_of_thought", b"-p", b"task", b"\xe9", b"-m", b"ollama:x"),
     "Error: field 'task' is not valid text: character 0 is an undecodable byte"),
])
def test_undecodable_arguments_are_one_error_line(tmp_path, args: tuple[bytes, ...],
                                                  message: str) -> None:
    """``logs search``/``logs show`` printed a UnicodeEncodeError traceback; ``-o stop`` with
    such bytes was "the provider failed unexpectedly"."""
    proc = Cli(env={"MODELPLEX_DATA_DIR": str(tmp_path), "OLLAMA_HOST": "127.0.0.1:9"},
               timeout=120).run(*args)
    stderr = proc.stderr
    assert proc.returncode == 1, stderr
    assert stderr.startswith(message), stderr
    assert "Traceback" not in stderr


def test_config_path_says_a_missing_explicit_file_is_an_error(tmp_path) -> None:
    """It said "modelplex uses defaults", while every other command failed on that file."""
    missing = tmp_path / "nope.toml"
    proc = modelplex("config", "path", MODELPLEX_CONFIG=str(missing))
    assert proc.returncode == 0
    assert proc.stdout == f"{missing}\n"
    assert proc.stderr == ("(the file does not exist: MODELPLEX_CONFIG names it, so commands "
                           "fail until you create it or unset the variable)\n")
    assert modelplex("config", "show", MODELPLEX_CONFIG=str(missing)).returncode == 1
