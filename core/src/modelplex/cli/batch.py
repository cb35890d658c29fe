"""``modelplex batch INPUT -m MODEL -o OUTPUT``: one request per input row, resumable.

The input is read twice, line by line (never held whole): once to check every row and count
them (``--dry-run`` stops there with a token estimate), then to run them through
:func:`modelplex.batch.run` (or, with ``--provider-batch``, the provider's own Batch API:
:mod:`modelplex.cli.batch_jobs`). The output gets one JSON line per finished row, flushed as
it is written; running the same command again skips the ids already answered.

``batch`` is a group whose default command is that run (``modelplex batch INPUT ...``);
``batch status ID``, ``batch fetch ID`` and ``batch cancel ID`` look up a provider's job.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelplex.cli._batchprogress import Progress
from modelplex.cli._common import options as option_pairs, run

if TYPE_CHECKING:
    from collections.abc import Iterator

    from modelplex.batch import BatchOutput

__all__ = ["Progress", "batch", "run_command"]


class _BatchGroup(click.Group):
    """``modelplex batch INPUT ...`` runs rows; ``modelplex batch status|fetch|cancel ID``
    looks up a job (an input file named like a subcommand is given as ``./status``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        elif not args:
            args = ["run"]
        return super().parse_args(ctx, args)


def _check_input(path: str, fmt: str, template: Any, writer: BatchOutput | None,
                 retry_errors: bool) -> tuple[int, int, int]:
    """Check every row; (rows to run, rows already done, estimated prompt tokens)."""
    from modelplex.batch import estimate_tokens, parse_row, read_rows
    from modelplex.batch.problems import BatchInputError

    todo = skipped = tokens = 0
    first: dict[str, int] = {}  # id -> its line: an id twice would be answered twice
    for line, value in read_rows(path, format=fmt):
        row = parse_row(value, line, source=path, template=template)
        if first.setdefault(row.key, line) != line:
            raise BatchInputError(f"id {row.id!r} is also the id of line {first[row.key]}: "
                                  "give every row its own id", source=path, line=line)
        if writer is not None and _skipped(row.key, writer, retry_errors):
            skipped += 1
            continue
        todo += 1
        tokens += estimate_tokens(row)
    return todo, skipped, tokens


def _format_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return "jsonl"


def _skipped(key: str, writer: BatchOutput, retry_errors: bool) -> bool:
    if retry_errors:
        return key not in writer.failed
    return key in writer.done or key in writer.failed


def _load_schema(path: str) -> dict[str, Any]:
    import json

    from modelplex.batch import check_schema
    from modelplex.errors import ConfigurationError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigurationError(f"--schema {path}: cannot read it ({err.strerror}): check "
                                 "the path") from None
    try:
        schema = json.loads(text)
    except ValueError as err:
        raise ConfigurationError(f"--schema {path}: not JSON ({err}): give a JSON schema "
                                 "file") from None
    return check_schema(schema, f"--schema {path}")


@click.group(cls=_BatchGroup)
def batch() -> None:
    """Ask a model once per row of a file (modelplex batch INPUT -m MODEL -o OUTPUT), or look
    up a provider's batch job (status, fetch, cancel).

    See `modelplex batch run --help` for the options of a run.
    """


@batch.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-m", "--model", help="provider:model or a named model (default: the config's).")
@click.option("-o", "--output", "output", required=False,
              help="JSONL file the results are appended to (default: INPUT.out.jsonl).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Rows asked at once (default: the model's max_concurrency or rpm, else 8).")
@click.option("-t", "--template",
              help="A prompt template name, a text file, or text with {variable} fields "
                   "filled from each row.")
@click.option("--schema", "schema_path", type=str,
              help="JSON schema file each answer must match (re-asked when it does not).")
@click.option("-s", "--system", help="System prompt for every row.")
@click.option("-O", "--option", "option_pairs_", nargs=2, multiple=True,
              metavar="KEY VALUE", help="Provider option for every row (rows may override).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default=None,
              help="Input format (default: from the extension, else jsonl; parquet needs "
                   "modelplex[parquet]).")
@click.option("--provider-batch", is_flag=True,
              help="Send the rows through the provider's Batch API (OpenAI, Anthropic: half "
                   "the price, answered within 24 h); the job ids are kept in OUTPUT.job.json "
                   "so a run stopped while it waits resumes.")
@click.option("--poll-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="With --provider-batch: seconds between looks at a job.")
@click.option("--retry-errors", is_flag=True, help="Run again only the rows that failed.")
@click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Re-asks of an answer that does not match --schema.")
@click.option("--dry-run", is_flag=True,
              help="Check and count the rows and estimate tokens; send nothing.")
@click.option("--progress-every", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="When stderr is not a terminal: seconds between progress lines (0: one "
                   "per row); on a terminal: a progress bar.")
def run_command(input_path: str, model: str | None, output: str | None,
                concurrency: int | None, template: str | None, schema_path: str | None,
                system: str | None, option_pairs_: tuple[tuple[str, str], ...],
                fmt: str | None, provider_batch: bool, poll_every: float, retry_errors: bool,
                max_retries: int, dry_run: bool, progress_every: float) -> None:
    """Ask MODEL once per row of INPUT (JSONL, CSV or Parquet) and append the results to OUTPUT.

    Each row has an "id" (else its line number) and "messages", a "prompt", or the
    variables of -t TEMPLATE; its "options" override the command's. Re-running the same
    command skips ids already answered (a run killed midway resumes where it stopped).
    """
    from modelplex.batch import BatchOutput, _Template, fingerprint
    from modelplex.config import get_config
    from modelplex.pipeline import resolve_spec

    fmt = fmt or _format_of(input_path)
    output = output or str(Path(input_path).with_suffix("")) + ".out.jsonl"
    if Path(output).resolve() == Path(input_path).resolve():
        raise click.UsageError("-o OUTPUT is the INPUT file: give another output file")
    spec = resolve_spec(model, get_config())
    shape = _Template(template) if template is not None else None
    schema = _load_schema(schema_path) if schema_path is not None else None
    opts = option_pairs(option_pairs_)
    writer = BatchOutput(output, model=spec,
                         run=fingerprint(spec, shape and shape.name, schema, system, opts))
    if not Path(input_path).exists():  # before the output is touched
        raise click.ClickException(f"{input_path}: no such file: check the path")
    if dry_run:
        if Path(output).exists():
            writer.read()
        todo, skipped, tokens = _check_input(input_path, fmt, shape, writer, retry_errors)
        click.echo(f"{todo} rows to run ({skipped} already in {output}), about {tokens} "
                   f"prompt tokens; nothing sent")
        return
    writer.read()  # refuses another run's output before anything is checked or written
    todo, skipped, _ = _check_input(input_path, fmt, shape, writer, retry_errors)
    progress = Progress(todo, sys.stderr, every=progress_every)
    with _no_empty_output(output):
        if provider_batch:
            from modelplex.cli.batch_jobs import provider_run

            run(provider_run(input_path, fmt, spec, writer, progress, template=shape,
                             schema=schema, system=system, options=opts,
                             poll_every=poll_every, retry_errors=retry_errors))
        else:
            writer.open()
            run(_run(input_path, fmt, spec, writer, progress, concurrency=concurrency,
                     template=shape, schema=schema, system=system, options=opts,
                     max_retries=max_retries, retry_errors=retry_errors))
    progress.finish(skipped, output)
    if progress.errors:
        sys.exit(3)


@contextlib.contextmanager
def _no_empty_output(output: str) -> Iterator[None]:
    """A run that fails before its first line (an unknown model, a provider without a Batch
    API) leaves no empty OUTPUT behind that it created."""
    existed = Path(output).exists()
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            if not existed and Path(output).stat().st_size == 0:
                Path(output).unlink()
        raise


async def _run(input_path: str, fmt: str, spec: str | None, writer: BatchOutput,
               progress: Progress, *, retry_errors: bool, **kw: Any) -> None:
    from modelplex import batch as batching

    skip_done = (lambda row: row.key not in writer.failed) if retry_errors else (
        lambda row: row.key in writer.failed)
    try:
        async for result in batching.run(batching.read_rows(input_path, format=fmt),
                                         model=spec, output=writer, skip=skip_done,
                                         source=input_path, **kw):
            progress.add(result)
    finally:
        writer.close()
