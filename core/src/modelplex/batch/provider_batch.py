"""Rows through a provider's Batch API: :func:`run_provider_batch` submits them as jobs,
waits for the jobs, and writes their results in the same lines as :func:`modelplex.batch.run`.

The job ids are kept in a job file beside the output (``OUTPUT.job.json``, written atomically
after each job is created and after each job's results are written), so that a run stopped
while it waits (Ctrl-C, a reboot, ``kill -9``) resumes on the next run: the jobs it had
submitted are polled and fetched, not sent again, and the rows no job holds yet are submitted.
Each id ends up in the output once: rows already answered are neither sent nor written again.
A job that ends ``expired``, ``cancelled`` or ``failed`` leaves the rows it did not answer as
errors (``BatchExpiredError``, ``BatchCancelledError``, ``BatchFailedError``), which a direct
run with ``--retry-errors`` asks again. When every job was fetched the job file is removed.

:func:`job_status` and :func:`fetch_job` are ``modelplex batch status ID`` and
``modelplex batch fetch ID``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.batch.concurrency import _aiter
from modelplex.batch.jobs import (
    _JOB_ID,
    BatchItem,
    BatchJob,
    BatchRequest,
    JobState,
    custom_id,
    row_id,
)
from modelplex.batch.output import BatchOutput, BatchResult
from modelplex.batch.rows import (
    BatchInputError,
    Row,
    _Template,
    check_schema,
    fingerprint,
    parse_row,
)
from modelplex.errors import ConfigurationError, ParseError

if TYPE_CHECKING:
    from modelplex.config import Config
    from modelplex.parsers import Parser
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool
    from modelplex.provider import Provider

__all__ = ["BatchTarget", "JobFile", "fetch_job", "job_file_for", "job_status", "open_target",
           "run_provider_batch"]

JOB_SUFFIX = ".job.json"
DEFAULT_POLL_EVERY = 30.0
_UNFINISHED = {JobState.EXPIRED: "BatchExpiredError", JobState.CANCELLED: "BatchCancelledError",
               JobState.FAILED: "BatchFailedError", JobState.CANCELLING: "BatchCancelledError"}


# -- the provider ------------------------------------------------------------------------------
@attrs.define
class BatchTarget:
    """The provider a batch goes to: ``provider``, the ``model`` name it is sent, the
    ``spec`` the user named and the named model's ``options``; :meth:`release` gives it back."""

    provider: Provider
    model: str
    spec: str
    options: dict[str, Any] = attrs.Factory(dict)
    _release: Callable[[], Any] | None = None

    async def release(self) -> None:
        """Give the provider back to the pool."""
        if self._release is not None:
            release, self._release = self._release, None
            await release()


async def open_target(spec: str | None, *, config: Config | None = None,
                      pool: ProviderPool | None = None, plugins: Plugins | None = None,
                      need_model: bool = True) -> BatchTarget:
    """The provider serving ``spec`` (``provider:model`` or a named model of one deployment),
    checked to have a Batch API (and a model, with ``need_model``)."""
    from modelplex.config import get_config
    from modelplex.pipeline import resolve_spec
    from modelplex.plugins import get_plugins
    from modelplex.pool import get_pool
    from modelplex.specs import parse_model_spec

    config = config or get_config()
    pool = pool or get_pool()
    plugins = plugins or get_plugins()
    resolved = resolve_spec(spec, config)
    options: dict[str, Any] = {}
    if resolved is not None and resolved in config.models:
        named = config.models[resolved]
        if len(named.deployments) != 1:
            raise ConfigurationError(
                f"model {resolved!r} has {len(named.deployments)} deployments; a provider's "
                "Batch API sends every row to one of them: name it as provider:model")
        dep = named.deployments[0]
        name, model = dep.provider, dep.model_name
        kwargs = {**config.provider_kwargs(name), **dep.provider_kwargs}
        options = {**named.options, **dep.options}
    else:
        name, requested = parse_model_spec(resolved, plugins)
        kwargs = config.provider_kwargs(name)
        model = requested or ""
    provider = await pool.acquire(name, kwargs, plugins=plugins)

    async def release() -> None:
        await pool.release(provider)

    target = BatchTarget(provider, model or provider.default_model or "",
                         resolved or name, options, release)
    if not provider.has_batch_api:
        await target.release()
        raise provider._no_batch_api()
    if not target.model and need_model:
        await target.release()
        raise ConfigurationError(f"provider {name!r} has no default model: name one as "
                                 f"'{name}:MODEL'")
    return target


def _provider_of(job_id: str) -> str:
    if job_id.startswith("msgbatch_"):
        return "anthropic"
    if job_id.startswith("batch_"):
        return "openai"
    raise ConfigurationError(f"cannot tell the provider of job {job_id!r}: give -m "
                             "PROVIDER:MODEL")


# -- the job file ------------------------------------------------------------------------------
def job_file_for(output: str | os.PathLike[str]) -> Path:
    """The job file of an output: ``OUTPUT.job.json``."""
    return Path(str(output) + JOB_SUFFIX)


class JobFile:
    """The jobs a run submitted (``OUTPUT.job.json``), rewritten atomically on each change.

    ``data`` holds ``model``, ``provider``, ``run`` (the run's fingerprint), ``submitted``
    (every row is in a job) and ``jobs``: for each, its ``id``, ``retry`` (it re-asks failed
    rows), ``fetched`` and ``rows``, the ``[custom_id, row id, line]`` of each row it holds.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {}

    def load(self) -> bool:
        """Read the file; whether there was one."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as err:
            raise BatchInputError(f"cannot read the job file ({err.strerror})",
                                  source=str(self.path)) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
            raise BatchInputError("not a job file of modelplex batch --provider-batch: move "
                                  "it away or write to another -o", source=str(self.path))
        for number, entry in enumerate(data["jobs"], 1):
            problem = _damage(entry)
            if problem is not None:
                raise BatchInputError(
                    f"job {number} of the job file is damaged ({problem}): fetch its results "
                    "with `modelplex batch fetch ID`, or move the file away and run again",
                    source=str(self.path))
        self.data = data
        return True

    def save(self) -> None:
        """Write the file atomically (a new file renamed over the old)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, ensure_ascii=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the file (every job was fetched)."""
        self.path.unlink(missing_ok=True)

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """The jobs submitted."""
        jobs: list[dict[str, Any]] = self.data.setdefault("jobs", [])
        return jobs


def _damage(entry: Any) -> str | None:
    """What is wrong with one job of a job file (None: nothing): its ``id`` goes into URLs,
    its ``rows`` are unpacked as ``[custom_id, row id, line]``."""
    if not isinstance(entry, dict):
        return "not an object"
    job_id = entry.get("id")
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        return "its id is not a job id"
    rows = entry.get("rows", [])
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
            and isinstance(r[2], int) and not isinstance(r[2], bool) for r in rows):
        return "its rows are not [custom_id, row id, line] lists"
    if not all(isinstance(entry.get(flag, False), bool) for flag in ("fetched", "retry")):
        return "fetched and retry must be true or false"
    return None


# -- requests and results ----------------------------------------------------------------------
def _request(target: BatchTarget, row: Row, *, system: str | None, options: Mapping[str, Any],
             parser: Parser | None) -> BatchRequest:
    from modelplex.types import ChatMessage

    messages = []
    prompt = row.system if row.system is not None else system
    if prompt:
        messages.append(ChatMessage.system(prompt))
    messages.extend(row.messages)
    use = row.parser or parser
    text = row.text
    response_format = None
    if use is not None:
        schema = use.json_schema
        if schema is not None and target.provider.capabilities.json_schema:
            response_format = {"type": "json_schema", "name": use.schema_name,
                               "schema": schema}
        elif use.format_instruction:
            text = f"{text}\n\n{use.format_instruction}"
    messages.append(ChatMessage(role="user", content=text))
    request = target.provider.build_request(
        messages, model=target.model, options={**target.options, **options, **row.options},
        response_format=response_format)
    return BatchRequest(custom_id(row.id), request)


def _result(item: BatchItem, rid: Any, line: int, target: BatchTarget,
            parser: Parser | None, config: Config | None) -> BatchResult:
    from modelplex.cost import cost_of

    result = BatchResult(id=rid, line=line)
    response = item.response
    if response is None or item.error is not None:
        result.error = item.error or "the provider returned no answer"
        result.error_type = item.error_type or "ProviderError"
        return result
    result.answer = response.content
    usage = response.usage
    if usage is not None:
        result.prompt_tokens, result.completion_tokens = (usage.prompt_tokens,
                                                          usage.completion_tokens)
    name = target.provider.name
    served = response.model or target.model
    result.model = f"{name}:{served}"
    spent = cost_of(name, served, usage, config=config, batch=True)
    if spent.known:
        result.cost, result.currency = spent.amount, spent.currency
    if parser is not None:
        try:
            result.value = parser.parse(response.content).parsed
        except ParseError as err:
            result.error, result.error_type = str(err), type(err).__name__
    return result


def _unfinished(state: JobState, job_id: str) -> tuple[str, str]:
    kind = _UNFINISHED.get(state, "BatchFailedError")
    return kind, (f"job {job_id} ended {state} before this row was answered: run again "
                  "without --provider-batch and with --retry-errors to ask it directly")


# -- running -----------------------------------------------------------------------------------
@attrs.define
class _Run:
    target: BatchTarget
    writer: BatchOutput
    jobs: JobFile
    parser: Parser | None
    config: Config | None
    poll_every: float
    on_status: Callable[[BatchJob], Any] | None


async def _wait(run: _Run, job_id: str) -> BatchJob:
    """Poll the job until it ends."""
    while True:
        job = await run.target.provider.batch_status(job_id)
        if run.on_status is not None:
            run.on_status(job)
        if job.state.ended:
            return job
        await asyncio.sleep(run.poll_every)


async def _collect(run: _Run, entry: dict[str, Any], job: BatchJob
                   ) -> AsyncIterator[BatchResult]:
    """The results of one ended job, each row's once (rows already written are skipped)."""
    writer = run.writer
    rows = {cid: (rid, line) for cid, rid, line in entry.get("rows", [])}
    retry = bool(entry.get("retry"))
    seen: set[str] = set()
    parser = run.parser
    if job.state is not JobState.FAILED:
        async for item in run.target.provider.batch_results(job.id):
            if item.custom_id in seen:
                continue
            seen.add(item.custom_id)
            rid, line = rows.get(item.custom_id, (row_id(item.custom_id), 0))
            key = json.dumps(rid, sort_keys=True)
            if key in writer.done or (key in writer.failed and not retry):
                continue
            result = _result(item, rid, line, run.target, parser, run.config)
            writer.write(result)
            yield result
    for cid, (rid, line) in rows.items():
        if cid in seen:
            continue
        key = json.dumps(rid, sort_keys=True)
        if key in writer.done or (key in writer.failed and not retry):
            continue
        kind, message = _unfinished(job.state, job.id)
        if job.state is JobState.COMPLETED:
            message = (f"job {job.id} ended without a result for this row: run again "
                       "without --provider-batch and with --retry-errors to ask it directly")
        elif job.detail:
            message = f"{message} ({job.detail})"
        result = BatchResult(id=rid, line=line, error=message, error_type=kind)
        writer.write(result)
        yield result


async def _finish_jobs(run: _Run) -> AsyncIterator[BatchResult]:
    for entry in run.jobs.jobs:
        if entry.get("fetched"):
            continue
        job = await _wait(run, entry["id"])
        async for result in _collect(run, entry, job):
            yield result
        entry["fetched"] = True
        run.jobs.save()


async def run_provider_batch(
        rows: Iterable[Any] | AsyncIterable[Any], *, model: str | None = None,
        output: str | os.PathLike[str], template: Any = None, schema: Any = None,
        system: str | None = None, options: Mapping[str, Any] | None = None,
        skip: Callable[[Row], bool] | None = None, retry_errors: bool = False,
        source: str = "<rows>", poll_every: float = DEFAULT_POLL_EVERY,
        max_requests: int | None = None, on_status: Callable[[BatchJob], Any] | None = None,
        config: Config | None = None, pool: ProviderPool | None = None,
        plugins: Plugins | None = None) -> AsyncIterator[BatchResult]:
    """Ask every row through the provider's Batch API; yields a :class:`BatchResult` per row
    as each job's results are read. See the module docs.

    Args:
        rows, model, template, schema, system, options, skip, source, config, pool,
            plugins: as for :func:`modelplex.batch.run` (a schema's answers are checked, not
            re-asked: an answer that does not fit is an error).
        output: the results file (required: the job file lives beside it).
        retry_errors: the rows given are failed ones asked again (their new line replaces
            the old).
        poll_every: seconds between two looks at a job's status.
        max_requests: most rows per job (default the provider's ``batch_max_requests``).
        on_status: called with each :class:`BatchJob` seen while waiting (progress).
    """
    from modelplex.parsers import resolve_output
    from modelplex.pipeline import resolve_spec

    if output is None:
        raise ConfigurationError("output is required with a provider's Batch API: the job "
                                 "ids are kept beside it")
    if isinstance(poll_every, bool) or not isinstance(poll_every, int | float) or \
            poll_every < 0:
        raise ConfigurationError(f"poll_every must be a number of seconds >= 0 (got "
                                 f"{poll_every!r})")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError("options must map option names to values")
    from modelplex.config import get_config

    spec = resolve_spec(model, config or get_config())
    shape = (template if isinstance(template, _Template) or template is None
             else _Template(template, plugins))
    if isinstance(schema, Mapping):
        schema = check_schema(schema)
    parser = resolve_output(schema, plugins) if schema is not None else None
    fp = fingerprint(spec, shape and shape.name, schema, system, options)
    writer = BatchOutput(output, model=spec, run=fp)
    writer.open()
    jobs = JobFile(job_file_for(output))
    if jobs.load() and (jobs.data.get("run") != fp or jobs.data.get("model") != spec):
        writer.close()
        raise BatchInputError(
            f"the jobs in this file were submitted by a run of model "
            f"{jobs.data.get('model')!r} with other settings: resume with the same command, "
            "or fetch them with `modelplex batch fetch ID`", source=str(jobs.path))
    try:
        target = await open_target(spec, config=config, pool=pool, plugins=plugins)
    except BaseException:
        writer.close()
        raise
    run = _Run(target, writer, jobs, parser, config, float(poll_every), on_status)
    try:
        if not jobs.data:
            jobs.data = {"version": 1, "model": spec, "provider": target.provider.name,
                         "run": fp, "submitted": False, "jobs": []}
            jobs.save()
        if not jobs.data.get("submitted"):
            await _submit(run, rows, shape=shape, system=system, options=options or {},
                          skip=skip, retry=retry_errors, source=source,
                          limit=max_requests or target.provider.batch_max_requests)
        async for result in _finish_jobs(run):
            yield result
        jobs.remove()
    finally:
        await target.release()
        writer.close()


async def _submit(run: _Run, rows: Iterable[Any] | AsyncIterable[Any], *,
                  shape: _Template | None, system: str | None, options: Mapping[str, Any],
                  skip: Callable[[Row], bool] | None, retry: bool, source: str,
                  limit: int) -> None:
    """Send the rows no job holds yet, ``limit`` rows (and the provider's byte limit) a job."""
    jobs = run.jobs
    held = {cid for entry in jobs.jobs for cid, _, _ in entry.get("rows", [])}
    provider = run.target.provider
    max_bytes = provider.batch_max_bytes or 0
    chunk: list[BatchRequest] = []
    ids: list[list[Any]] = []
    size = 0
    line = 0

    async def send() -> None:
        nonlocal chunk, ids, size
        if not chunk:
            return
        job = await provider.submit_batch(chunk)
        jobs.jobs.append({"id": job.id, "retry": retry, "fetched": False, "rows": ids})
        jobs.save()
        if run.on_status is not None:
            run.on_status(job)
        chunk, ids, size = [], [], 0

    async for item in _aiter(rows):
        line += 1
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int):
            line, item = item
        row = item if isinstance(item, Row) else parse_row(item, line, source=source,
                                                            template=shape)
        if row.key in run.writer.done or (skip is not None and skip(row)):
            continue
        request = _request(run.target, row, system=system, options=options, parser=run.parser)
        if request.custom_id in held:
            continue
        held.add(request.custom_id)
        weight = sum(len(m.content) for m in request.request.messages) + 512
        if chunk and ((limit and len(chunk) >= limit) or (max_bytes and size + weight >
                                                         max_bytes)):
            await send()
        chunk.append(request)
        ids.append([request.custom_id, row.id, row.line])
        size += weight
    await send()
    jobs.data["submitted"] = True
    jobs.save()


# -- jobs by id --------------------------------------------------------------------------------
async def _open_for(job_id: str, model: str | None, config: Config | None,
                    pool: ProviderPool | None, plugins: Plugins | None) -> BatchTarget:
    spec = model or _provider_of(job_id)
    return await open_target(spec, config=config, pool=pool, plugins=plugins, need_model=False)


async def job_status(job_id: str, *, model: str | None = None, config: Config | None = None,
                     pool: ProviderPool | None = None, plugins: Plugins | None = None
                     ) -> BatchJob:
    """The job ``job_id`` as it is now (its provider from ``model``, else from the id:
    ``batch_...`` is OpenAI's, ``msgbatch_...`` Anthropic's)."""
    target = await _open_for(job_id, model, config, pool, plugins)
    try:
        return await target.provider.batch_status(job_id)
    finally:
        await target.release()


async def fetch_job(job_id: str, output: str | os.PathLike[str], *, model: str | None = None,
                    poll_every: float = DEFAULT_POLL_EVERY,
                    on_status: Callable[[BatchJob], Any] | None = None,
                    config: Config | None = None, pool: ProviderPool | None = None,
                    plugins: Plugins | None = None) -> AsyncIterator[BatchResult]:
    """Wait for the job ``job_id`` and append its results to ``output`` (rows already there
    are skipped). The job file beside ``output``, when it holds the job, gives each row its id
    and line; otherwise ids come from the custom ids."""
    jobs = JobFile(job_file_for(output))
    entry: dict[str, Any] = {"id": job_id, "rows": []}
    spec = model
    if jobs.load():
        found = [e for e in jobs.jobs if e.get("id") == job_id]
        if found:
            entry = found[0]
            spec = model or jobs.data.get("model")
    writer = BatchOutput(output, model=spec if entry.get("rows") else None,
                         run=jobs.data.get("run") if entry.get("rows") else None)
    writer.open()
    try:
        target = await _open_for(job_id, spec, config, pool, plugins)
    except BaseException:
        writer.close()
        raise
    run = _Run(target, writer, jobs, None, config, float(poll_every), on_status)
    try:
        job = await _wait(run, job_id)
        async for result in _collect(run, entry, job):
            yield result
        if entry.get("rows"):
            entry["fetched"] = True
            if all(e.get("fetched") for e in jobs.jobs) and jobs.data.get("submitted"):
                jobs.remove()
            else:
                jobs.save()
    finally:
        await target.release()
        writer.close()
