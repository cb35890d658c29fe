"""benchmarks/parsing.py runs: every HTTP provider's stream reading over an in-memory body."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "parsing.py"


def test_parsing_benchmark_runs_every_provider() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--chunks", "50", "--rounds", "1"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["openai", "ollama", "anthropic", "tgi"]
    assert all("ns CPU per chunk" in line for line in result.stdout.splitlines())
