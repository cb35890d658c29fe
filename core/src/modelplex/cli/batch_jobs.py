"""The provider's Batch API on the command line: ``modelplex batch INPUT --provider-batch``
(:func:`provider_run`), and ``modelplex batch status ID``, ``batch fetch ID -o OUTPUT`` and
``batch cancel ID``.

While a job is waited for, a line is printed on standard error each time its state or counts
change (``openai job batch_abc: in_progress, 120/1000 finished, 3 errors``); its results are
then written and counted by the same :class:`~modelplex.cli.batch.Progress` as a direct run.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

import click

from modelplex.cli._common import run

if TYPE_CHECKING:
    from modelplex.batch import BatchJob, BatchOutput
    from modelplex.cli._batchprogress import Progress

__all__ = ["cancel_command", "fetch_command", "provider_run", "status_command",
           "status_line"]


def status_line(job: BatchJob) -> str:
    """One line about a job: provider, id, state, counts."""
    counts = job.counts
    text = (f"{job.provider} job {job.id}: {job.state}, {counts.finished}/{counts.total} "
            f"finished, {counts.errored} errors")
    if counts.expired:
        text += f", {counts.expired} expired"
    if counts.cancelled:
        text += f", {counts.cancelled} cancelled"
    if job.detail:
        text += f" ({job.detail})"
    return text


class _Watcher:
    """Prints :func:`status_line` when a job's state or counts change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: dict[str, tuple[Any, ...]] = {}

    def __call__(self, job: BatchJob) -> None:
        seen = (job.state, job.counts)
        if self.last.get(job.id) == seen:
            return
        self.last[job.id] = seen
        self.out.write(status_line(job) + "\n")
        self.out.flush()


async def provider_run(input_path: str, fmt: str, spec: str | None, writer: BatchOutput,
                       progress: Progress, *, retry_errors: bool, poll_every: float,
                       **kw: Any) -> None:
    """Submit the rows of ``input_path`` as jobs (or resume the jobs of ``writer``'s job
    file), wait for them and write their results."""
    from modelplex import batch as batching

    failed = set(writer.failed)
    skip = (lambda row: row.key not in failed) if retry_errors else (
        lambda row: row.key in failed)
    async for result in batching.run_provider_batch(
            batching.read_rows(input_path, format=fmt), model=spec, output=writer.path,
            skip=skip, retry_errors=retry_errors, source=input_path, poll_every=poll_every,
            on_status=_Watcher(sys.stderr), **kw):
        progress.add(result)


@click.command("status")
@click.argument("job_id", metavar="ID")
@click.option("-m", "--model", help="provider:model whose provider holds the job (default: "
                                    "from the id: batch_... is openai, msgbatch_... anthropic).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def status_command(job_id: str, model: str | None, as_json: bool) -> None:
    """Show the state and counts of a provider's batch job."""
    from modelplex.batch import job_status

    job = run(job_status(job_id, model=model))
    if as_json:
        click.echo(json.dumps(job.to_dict(), indent=2))
        return
    click.echo(status_line(job))
    for name, value in (("created", job.created_at), ("ended", job.ended_at),
                        ("expires", job.expires_at)):
        if value is not None:
            click.echo(f"  {name}: {value.isoformat()}")


@click.command("fetch")
@click.argument("job_id", metavar="ID")
@click.option("-o", "--output", required=True,
              help="JSONL file the results are appended to (rows already in it are skipped).")
@click.option("-m", "--model", help="provider:model whose provider holds the job (default: "
                                    "the job file's, else from the id).")
@click.option("--poll-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds between looks at the job while it runs.")
def fetch_command(job_id: str, output: str, model: str | None, poll_every: float) -> None:
    """Wait for a provider's batch job and append its results to OUTPUT."""
    from modelplex.batch import fetch_job
    from modelplex.cli._batchprogress import Progress

    progress = Progress(0, sys.stderr, every=30.0, tty=False)

    async def go() -> None:
        async for result in fetch_job(job_id, output, model=model, poll_every=poll_every,
                                      on_status=_Watcher(sys.stderr)):
            progress.add(result)

    run(go())
    progress.finish(0, output)
    if progress.errors:
        sys.exit(3)


@click.command("cancel")
@click.argument("job_id", metavar="ID")
@click.option("-m", "--model", help="provider:model whose provider holds the job (default: "
                                    "from the id).")
def cancel_command(job_id: str, model: str | None) -> None:
    """Ask the provider to stop a batch job (fetch it after: the rows it did not answer are
    errors)."""
    from modelplex.batch.jobs import check_job_id
    from modelplex.batch.provider_batch import _open_for

    async def go() -> BatchJob:
        target = await _open_for(check_job_id(job_id), model, None, None, None)
        try:
            return await target.provider.cancel_batch(job_id)
        finally:
            await target.release()

    click.echo(status_line(run(go())))
