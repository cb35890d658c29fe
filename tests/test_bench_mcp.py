"""benchmarks/mcp_overhead.py runs (a few calls): every arm answers, and two messages of a
conversation cost one tools/list round trip. Its timings are not checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "mcp_overhead.py"


def test_mcp_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "mcp.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--calls", "5", "--rounds", "1",
                             "--json", str(out)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(out.read_text())
    assert set(found["arms"]) == {"python", "mcp", "sdk", "mcp-lean"}
    assert found["tools/list round trips for two messages"] == 1
    assert "tools/list round trips for two messages: 1" in result.stdout
