"""Audit: ``modelplex batch`` and ``modelplex.batch.run`` with two rows of the same id.

Both rows were answered and both lines written under one id, so the output no longer said
which answer was whose (and a resumed run skipped the second row as done)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplex import batch
from modelplex.batch.problems import BatchInputError
from modelplex.testing import Cli


def test_the_command_refuses_a_repeated_id_before_asking(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "prompt": "a"}) + "\n"
                    + json.dumps({"id": "x", "prompt": "b"}) + "\n"
                    + json.dumps({"id": 1, "prompt": "c"}) + "\n")
    proc = Cli(env={"OLLAMA_HOST": "127.0.0.1:9"}, timeout=120).run(
        "batch", "run", str(rows), "-m", "ollama:x")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"Error: {rows}:3: id 1 is also the id of line 1: give every "
                                   "row its own id")
    assert not (tmp_path / "rows.out.jsonl").exists() or not (
        tmp_path / "rows.out.jsonl").read_text()


async def test_the_python_api_refuses_a_repeated_id() -> None:
    seen = []
    with pytest.raises(BatchInputError, match=r"^<rows>:2: id 'a' is also the id of line 1"):
        async for result in batch.run([{"id": "a", "prompt": "hi"}, {"id": "a", "prompt": "x"}],
                                      model="llamacpp:smollm2", options={"max_tokens": 2}):
            seen.append(result.id)
    assert seen in ([], ["a"])
