"""Parquet input for ``modelplex batch`` (#23), through a real pyarrow file: read by record
batches with memory flat, by extension or ``--format parquet``, nulls as missing columns,
``messages`` as structs or JSON, and a clear line when pyarrow is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelplex import batch
from modelplex.errors import ConfigurationError
from modelplex.pool import ProviderPool
from modelplex.testing.upstream import PIECE, FaultyUpstream

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def write_table(path: Path, columns: dict[str, list[object]], row_group_size: int = 2) -> None:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def test_rows_nulls_structs_and_json_columns(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_table(path, {
        "id": ["a", "b", "c"],
        "prompt": ["one", None, None],
        "messages": [None,
                     [{"role": "user", "content": "two"}],
                     None],
        "options": [None, None, '{"max_tokens": 5}'],
        "city": [None, None, "Paris"],
    })
    rows = list(batch.read_rows(path, format="parquet"))
    assert rows[0] == (1, {"id": "a", "prompt": "one"})
    assert rows[1] == (2, {"id": "b", "messages": [{"role": "user", "content": "two"}]})
    assert rows[2] == (3, {"id": "c", "options": {"max_tokens": 5}, "city": "Paris"})
    parsed = batch.parse_row(rows[2][1], 3, source=str(path),
                             template=batch._Template("About {city}"))
    assert parsed.text == "About Paris" and parsed.options == {"max_tokens": 5}


def test_a_big_file_is_read_with_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    count = 100_000
    write_table(path, {"id": list(range(count)),
                       "prompt": [f"question {i} " + "x" * 200 for i in range(count)]},
                row_group_size=10_000)
    assert path.stat().st_size > 500_000
    peak = 0
    seen = 0
    for number, row in batch.read_rows(path, format="parquet"):
        seen += 1
        if number % 997 == 0:
            peak = max(peak, pa.total_allocated_bytes())
        assert row["id"] == number - 1
    assert seen == count
    # one row group (~2 MB of text) at most is held, never the ~21 MB of the whole column
    assert peak < 8_000_000, peak


def test_not_parquet_and_pyarrow_missing_are_clear(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "rows.parquet"
    text.write_text('{"id": 1, "prompt": "x"}\n')
    with pytest.raises(batch.BatchInputError, match="not a Parquet file"):
        list(batch.read_rows(text, format="parquet"))
    with pytest.raises(batch.BatchInputError, match="no such file"):
        list(batch.read_rows(tmp_path / "missing.parquet", format="parquet"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'modelplex\[parquet\]'"):
        list(batch.read_rows(text, format="parquet"))


async def test_run_over_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_table(path, {"id": [f"p{i}" for i in range(7)],
                       "prompt": [f"q{i}" for i in range(7)]}, row_group_size=3)
    out = tmp_path / "out.jsonl"
    async with FaultyUpstream(tail_delay=0) as up:
        from modelplex.config import parse_config

        cfg = parse_config({"providers": {"openai": {"base_url": up.url + "/v1",
                                                     "api_key": "sk-x-0123456789"}}},
                           source="t.toml")
        got = [r async for r in batch.run(batch.read_rows(path, format="parquet"),
                                          model="openai:fault", output=out, concurrency=2,
                                          config=cfg, pool=ProviderPool())]
    assert sorted(r.id for r in got) == [f"p{i}" for i in range(7)]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert {w["line"] for w in written} == set(range(1, 8))
    assert all(w["answer"] == PIECE * 5 for w in written)


def test_cli_takes_parquet_by_extension_or_format(tmp_path: Path) -> None:
    from modelplex.testing import Cli

    cli = Cli(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("")
    path = tmp_path / "rows.parquet"
    write_table(path, {"id": ["a", "b"], "prompt": ["hello there", "general"]})
    bare = tmp_path / "rows.data"
    bare.write_bytes(path.read_bytes())
    for args in ([str(path)], [str(bare), "--format", "parquet"]):
        result = cli.invoke("batch", *args, "-m", "openai:m", "-o", str(tmp_path / "o.jsonl"),
                            "--dry-run")
        assert "2 rows to run (0 already in" in result.stdout
