"""benchmarks/start_cost.py runs: every user path's turns, bytecodes and CPU before its send."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "start_cost.py"


def test_start_cost_probe_measures_every_path() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1", "--seq", "5",
                             "--bursts", "1", "--width", "4", "--json"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[0])
    assert sorted(found) == sorted(["raw-openai", "modelplex-openai", "modelplex-manager",
                                    "modelplex-router2"])
    for runs in found.values():
        assert runs[0]["seq_turns"] >= 0
        assert runs[0]["py_ops_send"] > 0
        assert runs[0]["burst_cpu_first_max_us"] > 0
