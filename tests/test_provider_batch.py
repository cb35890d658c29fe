"""The providers' Batch APIs (#23): OpenAI's /v1/files + /v1/batches and Anthropic's Message
Batches against a stand-in server on 127.0.0.1 (modelplex.testing.batches) that implements
their endpoints, job states and result files, including expired, cancelled and failed jobs;
modelplex.batch.run_provider_batch and ``modelplex batch --provider-batch`` end to end, with
a wait interrupted by kill -9 and resumed without submitting again."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modelplex import batch
from modelplex.batch.jobs import BatchRequest, JobState, custom_id, row_id
from modelplex.chunks import Usage
from modelplex.config import Config, parse_config
from modelplex.cost import cost_of
from modelplex.errors import AuthenticationError, UnsupportedOperationError
from modelplex.pool import ProviderPool
from modelplex.testing import Cli
from modelplex.testing.batches import BatchUpstream
from modelplex.testing.upstream import FaultyUpstream
from modelplex_anthropic.provider import AnthropicProvider
from modelplex_openai.provider import OpenAIProvider

KINDS = ["openai", "anthropic"]


def provider_for(kind: str, up: BatchUpstream, key: str | None = None) -> Any:
    if kind == "openai":
        return OpenAIProvider(base_url=up.url + "/v1", api_key=key or up.api_key)
    return AnthropicProvider(base_url=up.url, api_key=key or up.api_key)


def config_for(kind: str, up: BatchUpstream) -> Config:
    base = up.url + "/v1" if kind == "openai" else up.url
    return parse_config({"providers": {kind: {"base_url": base, "api_key": up.api_key}}},
                        source="t.toml")


def requests_for(provider: Any, count: int, fail: int | None = None) -> list[BatchRequest]:
    out = []
    for i in range(count):
        text = f"question {i}" + (" FAIL" if i == fail else "")
        out.append(BatchRequest(f"r{i}", provider.build_request(
            [{"role": "user", "content": text}], model="gpt-4o-mini")))
    return out


async def drain(provider: Any, job_id: str) -> dict[str, Any]:
    return {item.custom_id: item async for item in provider.batch_results(job_id)}


# -- the providers against the stand-in --------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_a_job_is_submitted_polled_and_read(kind: str) -> None:
    async with BatchUpstream(polls=2) as up:
        async with provider_for(kind, up) as provider:
            job = await provider.submit_batch(requests_for(provider, 5, fail=3))
            assert job.provider == kind and not job.state.ended
            assert job.counts.total == 5 and job.created_at is not None
            states = []
            while not job.state.ended:
                job = await provider.batch_status(job.id)
                states.append(job.state)
            assert states[-1] is JobState.COMPLETED and len(states) == 3
            assert job.counts.succeeded == 4 and job.counts.errored == 1
            assert job.ended_at is not None
            items = await drain(provider, job.id)
            assert sorted(items) == [f"r{i}" for i in range(5)]
            good = items["r0"]
            assert good.ok and good.response.content == "answer: question 0"
            assert good.response.usage.prompt_tokens == 5
            assert good.response.model == "gpt-4o-mini"
            bad = items["r3"]
            assert not bad.ok and bad.error_type == "BadRequestError"
            assert "FAIL is not allowed" in bad.error
        sent = up.created(kind)[0].requests
        assert [cid for cid, _ in sent] == [f"r{i}" for i in range(5)]
        assert sent[0][1]["messages"][-1]["content"] == "question 0"
        if kind == "anthropic":
            assert sent[0][1]["max_tokens"] == 4096  # the Messages API requires it
        else:
            assert ("POST", "/v1/files") in up.received


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outcome", ["expired", "cancelled"])
async def test_expired_and_cancelled_jobs_report_the_rows_they_did_not_answer(
        kind: str, outcome: str) -> None:
    async with BatchUpstream(polls=0) as up, provider_for(kind, up) as provider:
        if outcome == "expired":
            up.outcomes.append("expired")
            job = await provider.submit_batch(requests_for(provider, 4))
        else:
            up.polls = None  # it would run for ever
            job = await provider.submit_batch(requests_for(provider, 4))
            job = await provider.cancel_batch(job.id)
            assert job.state in (JobState.CANCELLING, JobState.VALIDATING)
        job = await provider.batch_status(job.id)
        want = JobState.EXPIRED if outcome == "expired" else JobState.CANCELLED
        assert job.state is want
        items = await drain(provider, job.id)
        kinds = {cid: item.error_type for cid, item in items.items()}
        error = "BatchExpiredError" if outcome == "expired" else "BatchCancelledError"
        assert kinds == {"r0": None, "r1": None, "r2": error, "r3": error}


async def test_a_failed_openai_job_says_why() -> None:
    async with BatchUpstream(polls=0) as up, provider_for("openai", up) as provider:
        up.outcomes.append("failed")
        job = await provider.submit_batch(requests_for(provider, 2))
        job = await provider.batch_status(job.id)
        assert job.state is JobState.FAILED
        assert job.detail == "line 1: the input file is not valid"
        assert await drain(provider, job.id) == {}


@pytest.mark.parametrize("kind", KINDS)
async def test_errors_are_mapped_and_the_key_masked(kind: str) -> None:
    secret = "sk-wrong-key-0123456789abcdef"
    async with BatchUpstream() as up:
        async with provider_for(kind, up, key=secret) as provider:
            with pytest.raises(AuthenticationError) as caught:
                await provider.submit_batch(requests_for(provider, 1))
            assert secret not in str(caught.value) and secret not in repr(provider)
        async with provider_for(kind, up) as provider:
            with pytest.raises(batch.jobs.BatchNotEndedError, match="is still"):
                up.polls = None
                job = await provider.submit_batch(requests_for(provider, 1))
                await drain(provider, job.id)
            with pytest.raises(Exception, match="not a batch job id"):
                await provider.batch_status("../../v1/models")


async def test_a_provider_without_a_batch_api_says_so() -> None:
    from modelplex.testing.upstream import FaultyUpstream as Upstream

    async with Upstream() as up:
        cfg = parse_config({"providers": {"ollama": {"host": up.url}}}, source="t.toml")
        with pytest.raises(UnsupportedOperationError) as caught:
            await batch.provider_batch.open_target("ollama:m", config=cfg, pool=ProviderPool())
        assert str(caught.value) == ("provider 'ollama' has no Batch API; run without "
                                     "--provider-batch")


def test_custom_ids_round_trip() -> None:
    for rid in ["fr", "a-b_c", 7, -3, "a b", "_x", "", 1.5, ["x", 1], "é", "x" * 64]:
        cid = custom_id(rid)
        assert 1 <= len(cid) <= 64 and cid.replace("-", "").replace("_", "").isalnum()
        assert row_id(cid) == rid, rid
    assert custom_id(1) != custom_id("1")
    long = "y" * 100
    assert row_id(custom_id(long), {custom_id(long): long}) == long


def test_batch_prices_are_half_where_known() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    for provider, model in [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku")]:
        full, half = cost_of(provider, model, usage), cost_of(provider, model, usage,
                                                              batch=True)
        if full.known:
            assert half.amount == pytest.approx(full.amount / 2)
    cfg = parse_config({"prices": {"openai:mine": {"input": 2, "output": 4}}}, source="t")
    assert cost_of("openai", "mine", usage, config=cfg, batch=True).amount == 3.0
    assert cost_of("ollama", "x", usage, batch=True).amount == 0.0


# -- modelplex.batch.run_provider_batch --------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_run_provider_batch_writes_each_id_once_in_jobs_of_max_requests(
        kind: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rows = [{"id": rid, "prompt": f"q {n}"} for n, rid in
            enumerate(["a", 2, "with space", "z" * 80, "e", "f", "g"])]
    async with BatchUpstream(polls=0) as up:
        cfg = config_for(kind, up)
        got = [r async for r in batch.run_provider_batch(
            rows, model=f"{kind}:gpt-4o-mini", output=out, max_requests=3, poll_every=0,
            config=cfg, pool=ProviderPool())]
        assert len(up.created(kind)) == 3  # 3 + 3 + 1 rows
        assert sorted(map(str, (r.id for r in got))) == sorted(str(r["id"]) for r in rows)
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert Counter(json.dumps(w["id"]) for w in written) == Counter(
            json.dumps(r["id"]) for r in rows)
        first = next(w for w in written if w["id"] == 2)
        assert first["answer"] == "answer: q 1" and first["line"] == 2
        assert first["model"] == f"{kind}:gpt-4o-mini"
        assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 3}
        price = cost_of(kind, "gpt-4o-mini", Usage(prompt_tokens=5, completion_tokens=3),
                        batch=True)
        assert first["cost"] == (price.amount if price.known else None)
        assert not batch.provider_batch.job_file_for(out).exists()  # all fetched
        # run again: nothing is sent
        again = [r async for r in batch.run_provider_batch(
            rows, model=f"{kind}:gpt-4o-mini", output=out, poll_every=0, config=cfg,
            pool=ProviderPool())]
        assert again == [] and len(up.created(kind)) == 3


async def test_a_job_file_of_another_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    batch.provider_batch.job_file_for(out).write_text(json.dumps({
        "model": "openai:other", "run": "x", "jobs": [], "submitted": False}))
    async with BatchUpstream() as up:
        with pytest.raises(batch.BatchInputError, match="submitted by a run of model "
                                                         "'openai:other'"):
            async for _ in batch.run_provider_batch([{"prompt": "x"}], model="openai:m",
                                                    output=out, config=config_for("openai",
                                                                                  up)):
                pass
    assert out.read_text() == ""


# -- modelplex batch --provider-batch ----------------------------------------------------------
async def modelplex(*args: str, config: Path) -> tuple[int, str]:
    """``modelplex ARGS`` with ``config``: its exit code and its stdout followed by its
    stderr."""
    code, out, err = await Cli(config).arun(*args)
    return code, out + err


def write_config(path: Path, kind: str, up: Any, key: str) -> Path:
    base = up.url + "/v1" if kind == "openai" else up.url
    path.write_text(f'[providers.{kind}]\nbase_url = "{base}"\napi_key = "{key}"\n')
    return path


@pytest.mark.parametrize("kind", KINDS)
async def test_cli_wait_killed_then_resumed_without_submitting_again(
        kind: str, tmp_path: Path) -> None:
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"q {i}"}) + "\n"
                            for i in range(30)))
    jobs = batch.provider_batch.job_file_for(out)
    async with BatchUpstream(polls=None) as up:
        config = write_config(tmp_path / "c.toml", kind, up, up.api_key)
        args = ("batch", str(data), "-m", f"{kind}:gpt-4o-mini", "-o", str(out),
                "--provider-batch", "--poll-every", "0.05")
        async with Cli(config).start(*args, stdout=asyncio.subprocess.DEVNULL,
                                     stderr=asyncio.subprocess.DEVNULL) as proc:
            for _ in range(2400):  # the job was created and is being waited for
                if jobs.exists() and any(j.polls >= 2 for j in up.created(kind)):
                    break
                await asyncio.sleep(0.05)
            proc.kill()
            assert await proc.wait() == -9
        stored = json.loads(jobs.read_text())
        assert stored["submitted"] and len(stored["jobs"]) == 1
        assert out.read_text() == ""
        up.finish()
        code, text = await modelplex(*args, config=config)
        assert code == 0, text
        assert len(up.created(kind)) == 1  # resumed, not submitted again
        assert f"{kind} job {stored['jobs'][0]['id']}: completed, 30/30 finished" in text
        assert "done: 30 answered, 0 errors" in text
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        assert Counter(ids) == Counter(f"r{i}" for i in range(30))
        assert not jobs.exists()
        job_id = stored["jobs"][0]["id"]
        code, text = await modelplex("batch", "status", job_id, config=config)
        assert code == 0 and text.startswith(f"{kind} job {job_id}: completed, 30/30"), text
        code, text = await modelplex("batch", "status", job_id, "--json", config=config)
        assert json.loads(text)["counts"]["succeeded"] == 30
        other = tmp_path / "fetched.jsonl"
        code, text = await modelplex("batch", "fetch", job_id, "-o", str(other),
                                     config=config)
        assert code == 0, text
        fetched = [json.loads(line) for line in other.read_text().splitlines()]
        assert sorted(r["id"] for r in fetched) == sorted(ids)
        assert fetched[0]["answer"].startswith("answer: q ")


async def test_cli_expired_rows_are_errors_that_retry_errors_asks_directly(
        tmp_path: Path) -> None:
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"q {i}"}) + "\n"
                            for i in range(6)))
    key = "sk-batch-test-secret-123456"
    async with BatchUpstream(api_key=key, polls=0) as up:
        up.outcomes.append("expired")
        config = write_config(tmp_path / "c.toml", "openai", up, key)
        args = ("batch", str(data), "-m", "openai:fault", "-o", str(out))
        code, text = await modelplex(*args, "--provider-batch", "--poll-every", "0",
                                     config=config)
        assert code == 3, text
        assert "done: 3 answered, 3 errors" in text
        failed = [json.loads(line) for line in out.read_text().splitlines()
                  if "error" in json.loads(line)]
        assert [r["error_type"] for r in failed] == ["BatchExpiredError"] * 3
        assert [r["line"] for r in failed] == [4, 5, 6]
    async with FaultyUpstream(tail_delay=0) as direct:
        config = write_config(tmp_path / "c.toml", "openai", direct, key)
        code, text = await modelplex(*args, "--retry-errors", config=config)
        assert code == 0, text
        assert "done: 3 answered, 0 errors, 3 already in" in text
    final = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in final) == [f"r{i}" for i in range(6)]
    assert not [r for r in final if "error" in r]


async def test_cli_provider_without_batch_api_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1, "prompt": "x"}\n')
    config = tmp_path / "c.toml"
    config.write_text("")
    code, text = await modelplex("batch", str(data), "-m", "ollama:m", "-o",
                                 str(tmp_path / "o.jsonl"), "--provider-batch",
                                 config=config)
    assert code == 1
    assert text.strip() == ("Error: provider 'ollama' has no Batch API; run without "
                            "--provider-batch")


async def test_results_read_halfway_are_finished_once_on_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(6)]
    async with BatchUpstream(polls=0) as up:
        cfg = config_for("anthropic", up)
        from contextlib import aclosing

        async with aclosing(batch.run_provider_batch(
                rows, model="anthropic:claude-x", output=out, poll_every=0, config=cfg,
                pool=ProviderPool())) as results:
            async for result in results:
                if result.id == "r1":
                    break  # stopped while writing the results
        stored = json.loads(batch.provider_batch.job_file_for(out).read_text())
        assert [j["fetched"] for j in stored["jobs"]] == [False]
        assert len(out.read_text().splitlines()) == 2
        rest = [r.id async for r in batch.run_provider_batch(
            rows, model="anthropic:claude-x", output=out, poll_every=0, config=cfg,
            pool=ProviderPool())]
        assert rest == [f"r{i}" for i in range(2, 6)]
        assert len(up.created()) == 1
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        assert sorted(ids) == [f"r{i}" for i in range(6)]


async def test_cli_cancel_then_fetch(tmp_path: Path) -> None:
    async with BatchUpstream(polls=None) as up:
        config = write_config(tmp_path / "c.toml", "openai", up, up.api_key)
        async with provider_for("openai", up) as provider:
            job = await provider.submit_batch(requests_for(provider, 4))
        code, text = await modelplex("batch", "cancel", job.id, config=config)
        assert code == 0 and text.startswith(f"openai job {job.id}: cancelling"), text
        out = tmp_path / "out.jsonl"
        code, text = await modelplex("batch", "fetch", job.id, "-o", str(out),
                                     "--poll-every", "0", config=config)
        assert code == 3, text
        assert f"openai job {job.id}: cancelled" in text
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert [w.get("error_type") for w in written] == [None, None, "BatchCancelledError",
                                                          "BatchCancelledError"]
        code, text = await modelplex("batch", "status", "nonsense", config=config)
        assert code == 1 and "cannot tell the provider of job 'nonsense'" in text


async def test_a_named_model_of_one_deployment_is_batched(tmp_path: Path) -> None:
    async with BatchUpstream(polls=0) as up:
        cfg = parse_config({"models": {
            "cheap": {"model": "openai:gpt-4o-mini", "options": {"max_tokens": 7}},
            "two": {"deployments": [{"model": "openai:a"}, {"model": "openai:b"}]}},
            "providers": {"openai": {"base_url": up.url + "/v1", "api_key": up.api_key}}},
            source="t.toml")
        got = [r async for r in batch.run_provider_batch(
            [{"id": 1, "prompt": "x"}], model="cheap", output=tmp_path / "o.jsonl",
            poll_every=0, config=cfg, pool=ProviderPool())]
        assert got[0].ok and got[0].model == "openai:gpt-4o-mini"
        body = up.created("openai")[0].requests[0][1]
        assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 7
        with pytest.raises(Exception, match="'two' has 2 deployments"):
            async for _ in batch.run_provider_batch(
                    [{"id": 1, "prompt": "x"}], model="two", output=tmp_path / "p.jsonl",
                    config=cfg, pool=ProviderPool()):
                pass


@pytest.mark.parametrize("jobs", [
    ["not a job"],
    [{"rows": []}],
    [{"id": "../../v1/files/file-x/content", "rows": []}],
    [{"id": 12, "rows": []}],
    [{"id": "batch_1", "rows": [["r0", "r0"]]}],
    [{"id": "batch_1", "rows": "r0"}],
    [{"id": "batch_1", "rows": [[1, "r0", "x"]]}],
    [{"id": "batch_1", "rows": [], "fetched": "yes"}],
])
async def test_a_damaged_job_file_is_a_clear_error(tmp_path: Path, jobs: list[Any]) -> None:
    """A job file of the same run (model and fingerprint match) whose jobs were tampered with or
    damaged: a BatchInputError naming the file and the fix, nothing sent upstream (an id with
    path characters never reaches a URL)."""
    out = tmp_path / "out.jsonl"
    spec = "openai:gpt-4o-mini"
    batch.provider_batch.job_file_for(out).write_text(json.dumps({
        "version": 1, "model": spec, "provider": "openai",
        "run": batch.rows.fingerprint(spec, None, None, None, None), "submitted": True,
        "jobs": jobs}))
    async with BatchUpstream() as up:
        with pytest.raises(batch.BatchInputError, match=r"out\.jsonl\.job\.json: .*damaged"):
            async for _ in batch.run_provider_batch([{"prompt": "x"}], model=spec, output=out,
                                                    poll_every=0,
                                                    config=config_for("openai", up)):
                pass
        assert up.created("openai") == []
