"""The ``modelplex`` command end to end, with every installed plugin, in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from modelplex.__about__ import __version__

QUESTION = "What is the capital of France?"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLEX_")}
    env.update(extra)
    return env


def modelplex(*args: str, input: str | None = None, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelplex", *args], input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          env=env or clean_env(), check=False)


def test_version() -> None:
    proc = modelplex("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"modelplex, version {__version__}"


def test_installed_script() -> None:
    script = shutil.which("modelplex")
    assert script is not None, "the modelplex console script is not on PATH"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60,
                          check=False, env=clean_env())
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
    by_env = modelplex("chat", "-m", "nope:x", "hi", env=clean_env(MODELPLEX_DEBUG="1"))
    assert plain.returncode == debug.returncode == by_env.returncode == 1
    assert "Traceback" not in plain.stderr
    for proc in (debug, by_env):
        assert proc.stderr.startswith("Traceback (most recent call last):")
        assert "UnknownProviderError" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown provider 'nope'")


def test_empty_prompt_from_stdin() -> None:
    proc = modelplex("chat", input="   \n")
    assert proc.returncode == 1
    assert "Error: message: content must not be empty" in proc.stderr


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
    proc = modelplex("plugins", "--json", env=clean_env(MODELPLEX_DISABLE_PLUGINS="llamacpp"))
    assert proc.returncode == 0
    assert "llamacpp" not in [i["name"] for i in json.loads(proc.stdout)]
    chat = modelplex("chat", "-m", "llamacpp:smollm2", "hi",
                     env=clean_env(MODELPLEX_DISABLE_PLUGINS="llamacpp"))
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
    assert header.split() == ["MODEL", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT"]
    assert any(row.startswith("llamacpp:smollm2") for row in rows)


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
    proc = subprocess.Popen([sys.executable, "-m", "modelplex", "chat"], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
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
    proc = subprocess.run([sys.executable, "-m", "modelplex", "chat", "-m", "nosuch:x", "hi",
                           "--debug"], capture_output=True, text=True, check=False, timeout=60)
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
