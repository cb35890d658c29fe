"""Audit: reading commands given a path that does not exist made it.

``modelplex logs list --database /no/such/x.db`` created the folders and an empty database
and printed nothing; ``modelplex cache clear --path /no/such/dir/c.db`` created the folders
and said "Removed 0 entries"."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplex.testing import Cli, CliResult


def modelplex(*args: str, home: Path) -> CliResult:
    return Cli(env={"MODELPLEX_DATA_DIR": str(home / "data"),
                    "MODELPLEX_CACHE_DIR": str(home / "cache")}, timeout=120).run(*args)


@pytest.mark.parametrize("command", [("logs", "list"), ("logs", "search", "x"),
                                     ("logs", "show", "abc"), ("usage",)])
def test_a_log_database_that_does_not_exist_is_not_made(tmp_path: Path,
                                                         command: tuple[str, ...]) -> None:
    missing = tmp_path / "no" / "such" / "logs.db"
    proc = modelplex(*command, "--database", str(missing), home=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: --database {missing}: no such file; check the path "
                           "(`modelplex logs path` prints the one modelplex chat uses)\n")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("command", [("cache", "stats"), ("cache", "clear")])
def test_a_cache_in_a_folder_that_does_not_exist_is_not_made(tmp_path: Path,
                                                              command: tuple[str, ...]) -> None:
    missing = tmp_path / "no" / "such" / "cache.db"
    proc = modelplex(*command, "--path", str(missing), home=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: --path {missing}: no such folder; check the path")
    assert not (tmp_path / "no").exists()


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("name", "text", "args", "message"), [
    ("c.json", '{"a": ' + DEEP + "}", ("config", "show"),
     "nests its tables or lists too deeply to be read"),
    ("c.toml", "a = " + DEEP, ("config", "show"), "nests its tables or lists too deeply"),
    ("rows.jsonl", '{"id": 1, "prompt": "hi", "options": ' + DEEP + "}",
     ("batch", "run", "-m", "ollama:x"), ":1: nested too deeply to be read"),
    ("schema.json", DEEP, ("chat", "-m", "ollama:x", "hi", "--schema"),
     ": nested too deeply to be read"),
], ids=["json-config", "toml-config", "batch-rows", "schema"])
def test_a_file_nested_thousands_deep_is_one_error_line(tmp_path: Path, name: str, text: str,
                                                        args: tuple[str, ...],
                                                        message: str) -> None:
    """Each printed a RecursionError traceback."""
    path = tmp_path / name
    path.write_text(text)
    env_args = list(args)
    if args[0] == "batch":
        env_args.insert(2, str(path))
    elif args[0] == "chat":
        env_args.append(str(path))
    cli = Cli(path if args[0] == "config" else None, env={"OLLAMA_HOST": "127.0.0.1:9"},
              timeout=120)
    proc = cli.run(*env_args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
