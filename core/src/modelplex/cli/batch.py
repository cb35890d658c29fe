"""``modelplex batch INPUT -m MODEL -o OUTPUT``: one request per input row, resumable.

The input is read twice, line by line (never held whole): once to check every row and count
them (``--dry-run`` stops there with a token estimate), then to run them through
:func:`modelplex.batch.run`. The output gets one JSON line per finished row, flushed as it is
written; running the same command again skips the ids already answered.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from modelplex.cli._common import options as option_pairs, run

if TYPE_CHECKING:
    from modelplex.batch import BatchOutput, BatchResult

__all__ = ["Progress", "batch"]


class Progress:
    """Progress of a run on ``out``: a bar redrawn in place on a terminal, a plain line every
    ``every`` seconds otherwise, and a closing summary."""

    def __init__(self, total: int, out: TextIO, *, every: float = 10.0, width: int = 24,
                 tty: bool | None = None) -> None:
        self.total = total
        self.out = out
        self.every = every
        self.width = width
        self.tty = out.isatty() if tty is None else tty
        self.done = self.errors = self.tokens = 0
        self.cost = 0.0
        self.currency = ""
        self.started = time.monotonic()
        self._last = self.started

    def add(self, result: BatchResult) -> None:
        self.done += 1
        self.errors += 0 if result.ok else 1
        self.tokens += result.prompt_tokens + result.completion_tokens
        if result.cost:
            self.cost += result.cost
            self.currency = result.currency or "USD"
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1 or self.done == self.total:
                self._last = now
                self.out.write("\r" + self.line(now, bar=True))
                self.out.flush()
        elif now - self._last >= self.every:
            self._last = now
            self.out.write(self.line(now) + "\n")
            self.out.flush()

    def line(self, now: float | None = None, *, bar: bool = False) -> str:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(0, self.total - self.done)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        text = (f"{self.done}/{self.total} rows, {rate:.1f}/s, {self.errors} errors, "
                f"{self.tokens} tokens{self._spent()}, ETA {eta}")
        if bar:
            filled = int(self.width * min(self.done, self.total) / self.total) if self.total \
                else self.width
            return f"[{'#' * filled}{'-' * (self.width - filled)}] {text}"
        return text

    def _spent(self) -> str:
        return f", {self.cost:.4f} {self.currency}" if self.currency else ""

    def finish(self, skipped: int, output: str) -> None:
        if self.tty:
            self.out.write("\n")
        elapsed = time.monotonic() - self.started
        self.out.write(f"done: {self.done - self.errors} answered, {self.errors} errors, "
                       f"{skipped} already in {output}; {self.tokens} tokens{self._spent()} in "
                       f"{elapsed:.1f}s\n")
        self.out.flush()


def _check_input(path: str, fmt: str, template: Any, writer: BatchOutput | None,
                 retry_errors: bool) -> tuple[int, int, int]:
    """Check every row; (rows to run, rows already done, estimated prompt tokens)."""
    from modelplex.batch import estimate_tokens, parse_row, read_rows

    todo = skipped = tokens = 0
    for line, value in read_rows(path, format=fmt):
        row = parse_row(value, line, source=path, template=template)
        if writer is not None and _skipped(row.key, writer, retry_errors):
            skipped += 1
            continue
        todo += 1
        tokens += estimate_tokens(row)
    return todo, skipped, tokens


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


@click.command()
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
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Input format (default: from the extension, else jsonl).")
@click.option("--retry-errors", is_flag=True, help="Run again only the rows that failed.")
@click.option("--max-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Re-asks of an answer that does not match --schema.")
@click.option("--dry-run", is_flag=True,
              help="Check and count the rows and estimate tokens; send nothing.")
@click.option("--progress-every", type=float, default=10.0, hidden=True)
def batch(input_path: str, model: str | None, output: str | None, concurrency: int | None,
          template: str | None, schema_path: str | None, system: str | None,
          option_pairs_: tuple[tuple[str, str], ...], fmt: str | None, retry_errors: bool,
          max_retries: int, dry_run: bool, progress_every: float) -> None:
    """Ask MODEL once per row of INPUT (JSONL or CSV) and append the results to OUTPUT.

    Each row has an "id" (else its line number) and "messages", a "prompt", or the
    variables of -t TEMPLATE; its "options" override the command's. Re-running the same
    command skips ids already answered (a run killed midway resumes where it stopped).
    """
    from modelplex.batch import BatchOutput, _Template, fingerprint
    from modelplex.config import get_config
    from modelplex.pipeline import resolve_spec

    fmt = fmt or ("csv" if input_path.lower().endswith(".csv") else "jsonl")
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
    writer.open()
    progress = Progress(todo, sys.stderr, every=progress_every)
    run(_run(input_path, fmt, spec, writer, progress, concurrency=concurrency,
             template=shape, schema=schema, system=system, options=opts,
             max_retries=max_retries, retry_errors=retry_errors))
    progress.finish(skipped, output)
    if progress.errors:
        sys.exit(3)


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
