"""Running rows through the request path: :func:`run` asks each row (at most ``concurrency`` at
once) on a stack from :func:`modelplex.pipeline.open_model` and writes the results.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from modelplex.batch.concurrency import _check_concurrency, default_concurrency
from modelplex.batch.output import BatchOutput, BatchResult
from modelplex.batch.problems import BatchInputError
from modelplex.batch.rows import Row, _Template, check_schema, fingerprint, parse_row
from modelplex.errors import ConfigurationError, ParseError

if TYPE_CHECKING:
    from modelplex.config import Config
    from modelplex.cost import PriceBook
    from modelplex.parsers import Parser
    from modelplex.pipeline import Lease
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool
    from modelplex.provider import CommonOptions
    from modelplex.types import ChatMessage, ChatSession


class _Asker:
    """What every row of one run shares, worked out once: the validated run options (a row
    with options of its own is validated with them) and, for rows with neither history nor a
    system prompt of their own, the session their requests are built over, the run's system
    message checked once (never changed: a plain row's answer does not join a history,
    nobody reads it)."""

    __slots__ = ("_options", "_question", "_session", "_turn", "cache", "lease", "max_retries",
                 "options", "parser", "prices", "system")

    def __init__(self, lease: Lease, *, system: str | None, options: Mapping[str, Any],
                 parser: Parser | None, max_retries: int, cache: bool | None,
                 prices: PriceBook | None = None) -> None:
        self.lease, self.system, self.options = lease, system, options
        self.parser, self.max_retries, self.cache = parser, max_retries, cache
        self.prices = prices  # the run's config's (None: the process-wide config's)
        self._options: CommonOptions | None = None
        self._session: ChatSession | None = None
        self._question: ChatMessage | None = None
        from modelplex.exchange import Turn  # imported when a run starts, not per row

        self._turn = Turn

    def question(self, text: str) -> ChatMessage:
        """The user's message of a row: a checked copy of one validated once per run, with
        the row's text (:meth:`ChatMessage.with_content`: the same rules, the same error)."""
        if self._question is None:
            from modelplex.exchange import user_message

            self._question = user_message("?")
        try:
            return self._question.with_content(text)
        except ValueError as err:
            raise ConfigurationError(f"message: {err}") from None

    def parsed_options(self, row: Row) -> CommonOptions:
        """The run's options (validated on the first row that needs them; an invalid one is
        that row's error, and the next row's) with the row's own on top."""
        if row.options:
            return self.lease.provider.parse_options({**self.options, **row.options})
        if self._options is None:
            self._options = self.lease.provider.parse_options(dict(self.options))
        return self._options

    def session(self, row: Row, plain: bool) -> ChatSession:
        from modelplex.types import ChatSession

        if plain and not row.messages and row.system is None:
            if self._session is None:  # the run's system prompt checked once, sent first
                from modelplex.types import ChatMessage

                first = [ChatMessage.system(self.system)] if self.system else []
                self._session = ChatSession(model=self.lease.model,
                                            provider=self.lease.provider_name, messages=first)
            return self._session
        return ChatSession(model=self.lease.model, provider=self.lease.provider_name,
                           system_prompt=row.system if row.system is not None else self.system,
                           messages=list(row.messages))

    async def ask(self, row: Row) -> BatchResult:
        """Ask one row; its failure is its result's error."""
        start = time.perf_counter()
        result = BatchResult(id=row.id, line=row.line)
        try:
            options = self.parsed_options(row)  # checked in the order they always were:
            use = row.parser or self.parser  # options, the question, the system prompt
            if use is None:  # the answer alone: no history to add it to
                question = self.question(row.text)
                turn = self._turn(self.lease.provider, self.session(row, True), options,
                                  cache=self.cache, prices=self.prices)
                meta = await turn.complete(turn.request([question]))
                result.answer = meta.content
                result.prompt_tokens, result.completion_tokens = (meta.prompt_tokens,
                                                                  meta.completion_tokens)
            else:
                from modelplex import structured

                turn = self._turn(self.lease.provider, self.session(row, False), options,
                                  cache=self.cache, prices=self.prices)
                done = await structured.get_structured(turn, row.text, use,
                                                       max_retries=self.max_retries)
                meta = done.meta
                result.answer, result.value = meta.content, done.value
                result.prompt_tokens, result.completion_tokens = (done.prompt_tokens,
                                                                  done.completion_tokens)
                result.attempts = done.attempts
            spent = meta.cost
            if use is not None and result.attempts > 1:  # every attempt was paid for
                from modelplex.chunks import Usage
                from modelplex.cost import cost_of

                used = Usage(prompt_tokens=result.prompt_tokens,
                             completion_tokens=result.completion_tokens)
                spent = (cost_of(meta.provider, meta.model, used) if self.prices is None
                         else self.prices.cost(meta.provider, meta.model, used))
            if spent is not None and spent.known:
                result.cost, result.currency = spent.amount, spent.currency
            result.model = (meta.deployment or
                            (f"{meta.provider}:{meta.model}" if meta.provider else meta.model))
            if meta.attempts > 1:
                result.attempts = max(result.attempts, meta.attempts)
        except asyncio.CancelledError:
            raise
        except ParseError as err:
            result.error, result.error_type = str(err), type(err).__name__
            result.attempts = len(err.answers) or result.attempts
        except Exception as err:
            result.error, result.error_type = str(err) or type(err).__name__, type(err).__name__
        result.latency = time.perf_counter() - start
        return result


#: results after which a run moves the objects alive then out of the collector's way
FREEZE_AFTER = 256
#: young objects per row in flight before a collection, while a long run lasts (see _Collector)
YOUNG_PER_ROW = 150
#: the most young objects a long run lets build up before a collection
YOUNG_MOST = 100_000


class _Collector:
    """The cyclic garbage collector's settings while a long run lasts, put back at its end.

    A run's requests keep allocating; every so often the collector then scans everything
    alive, most of it the imported modules, the price data and the pools, which live as long
    as the process (measured in docs/performance.md M10: about a fifth of a row's CPU at
    10,000 rows). After :data:`FREEZE_AFTER` results, :meth:`start` freezes what is alive
    (``gc.freeze()``: left out of the scans) and raises the youngest generation's threshold
    to :data:`YOUNG_PER_ROW` objects per row in flight (at most :data:`YOUNG_MOST`): a row's
    objects almost all die with it, by reference counting, so at the default threshold of
    700 the collector ran about once every ten rows only to find the objects of the rows in
    flight alive. :meth:`end` unfreezes and puts the threshold back (garbage already there
    is collected then). A process that froze objects itself, or turned the collector off, is
    left as it is; a threshold the process set higher is kept."""

    __slots__ = ("frozen", "threshold")

    def __init__(self) -> None:
        self.frozen = False
        #: (the threshold before, the one the run set)
        self.threshold: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None

    def start(self, in_flight: int) -> None:
        if not gc.isenabled():
            return
        if not gc.get_freeze_count():
            gc.freeze()
            self.frozen = True
        before = gc.get_threshold()
        young = min(YOUNG_MOST, YOUNG_PER_ROW * in_flight)
        if before[0] and young > before[0]:
            gc.set_threshold(young, before[1], before[2])
            self.threshold = (before, gc.get_threshold())

    def end(self) -> None:
        if self.frozen:
            self.frozen = False
            gc.unfreeze()
        if self.threshold is not None:
            (before, ours), self.threshold = self.threshold, None
            if gc.get_threshold() == ours:  # unless the process changed it meanwhile
                gc.set_threshold(*before)


async def run(rows: Iterable[Any] | AsyncIterable[Any], *, model: str | None = None,
              concurrency: int | None = None, output: str | os.PathLike[str] | BatchOutput |
              None = None, ordered: bool = False, template: Any = None, schema: Any = None,
              system: str | None = None, options: Mapping[str, Any] | None = None,
              max_retries: int = 2, skip: Callable[[Row], bool] | None = None,
              source: str = "<rows>", config: Config | None = None,
              pool: ProviderPool | None = None, plugins: Plugins | None = None,
              cache: Any = None, logs: Any = None,
              provider_config: Mapping[str, Mapping[str, Any]] | None = None
              ) -> AsyncIterator[BatchResult]:
    """Ask every row; yields a :class:`BatchResult` per row as each finishes (in the rows'
    order with ``ordered=True``). See the module docs.

    Args:
        rows: mappings (or ``(line, mapping)`` pairs, as :func:`read_rows` gives), an
            iterable or async iterable, read as needed.
        model: ``"provider:model"``, a named model, or ``None`` for the default.
        concurrency: rows asked at once (default :func:`default_concurrency`).
        output: a path (or :class:`BatchOutput`) each result is appended to; ids it already
            answered are skipped.
        template: a prompt template name or class, or text with ``{variable}`` fields.
        schema: the structure of each answer: a JSON schema dict, a parser name, a
            :class:`~modelplex.parsers.Parser` or a pydantic model class.
        max_retries: re-asks of an answer that does not fit ``schema``.
        skip: rows for which it returns true are not asked (nothing is yielded for them).
        source: the name given in errors about rows (the input file).
        cache, logs, config, pool, plugins, provider_config: as for
            :func:`~modelplex.pipeline.open_model`.
    """
    from modelplex.parsers import resolve_output
    from modelplex.pipeline import open_model

    if max_retries is None or isinstance(max_retries, bool) or not isinstance(
            max_retries, int) or max_retries < 0:
        raise ConfigurationError(f"max_retries must be a whole number >= 0 (got {max_retries!r})")
    if not isinstance(rows, Iterable | AsyncIterable) or isinstance(rows, str | bytes | Mapping):
        raise ConfigurationError("rows must be an iterable of row objects, e.g. "
                                 '[{"id": 1, "prompt": "..."}]')
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError("options must map option names to values")
    shape = (template if isinstance(template, _Template) or template is None
             else _Template(template, plugins))
    if isinstance(schema, Mapping):
        schema = check_schema(schema)
    parser = resolve_output(schema, plugins) if schema is not None else None
    limit = _check_concurrency(concurrency if concurrency is not None
                               else default_concurrency(model, config))
    writer: BatchOutput | None
    if output is None or isinstance(output, BatchOutput):
        writer = output
    else:
        writer = BatchOutput(output, model=model,
                             run=fingerprint(model, shape and shape.name, schema, system,
                                             options))
    if writer is not None and writer._handle is None:
        writer.open()
    lease = await open_model(model, config=config, pool=pool, plugins=plugins, cache=cache,
                             logs=logs, provider_config=provider_config, caller="batch")
    from modelplex.cost import PriceBook

    asker = _Asker(lease, system=system, options=options or {}, parser=parser,
                   max_retries=max_retries, cache=None,
                   prices=PriceBook.from_config(config) if config is not None else None)
    gate = _Slots(limit)  # rows asked and results not yet taken, at most limit
    finished = _Finished()
    feed = _Feed(rows, source=source, template=shape, writer=writer, skip=skip)

    workers: list[asyncio.Task[None]] = []

    def spawn() -> None:
        feed.working += 1
        workers.append(asyncio.ensure_future(work()))

    async def work() -> None:
        """One of at most ``limit`` workers (a worker per slot, not a task per row): takes a
        slot, then the next row, asks it, hands on its result. The first row a worker takes
        starts the next worker, so a short run starts no more workers than it has rows."""
        try:
            while True:
                await gate.take()
                taken = await feed.next()
                if taken is None:
                    gate.give()
                    return
                if len(workers) < limit and workers[-1] is asyncio.current_task():
                    spawn()
                seq, row = taken
                try:
                    result: BatchResult | BaseException = await asker.ask(row)
                except BaseException as err:
                    finished.put((seq, err))
                    raise
                finished.put((seq, result))
        finally:
            feed.working -= 1
            if not feed.working:
                finished.put((-1, _FED))

    spawn()
    waiting: dict[int, BatchResult] = {}
    next_seq = 0
    yielded = 0
    collector = _Collector()
    try:
        while True:
            seq, item = await finished.get()
            if item is _FED:  # every worker has ended: each result came before this
                break
            if isinstance(item, BaseException):
                raise item
            ready: list[BatchResult] = []
            if ordered:
                waiting[seq] = item
                while next_seq in waiting:
                    ready.append(waiting.pop(next_seq))
                    next_seq += 1
            else:
                ready.append(item)
            for result in ready:
                if writer is not None:
                    writer.write(result)
                yielded += 1
                if yielded == FREEZE_AFTER:
                    collector.start(limit)
                gate.give()
                yield result
        if feed.error is not None:
            raise feed.error
    finally:
        collector.end()
        for worker in workers:
            worker.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*workers, return_exceptions=True)
        await lease.release()
        if writer is not None and not isinstance(output, BatchOutput):
            writer.close()


_FED: Any = object()
_END: Any = object()


class _Slots:
    """``limit`` slots the workers take and the run gives back, first come first served: a
    semaphore whose release hands the slot straight to the longest waiter (``asyncio``'s
    looks through every waiter already woken on each release, and a run has ``limit`` of
    them)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def take(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over as the taker was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # unless give() dropped it already
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class _Finished:
    """The results the workers hand to the run, in the order they finished: an unbounded
    queue (the run's slots bound it) with one reader, lighter than ``asyncio.Queue``."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[tuple[int, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: tuple[int, Any]) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> tuple[int, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class _Feed:
    """The rows of a run as the workers take them: parsed, numbered, those already answered
    (``writer.done``) or skipped left out; the first error reading them ends the feed (the
    rows taken before it are still asked, then the run raises it)."""

    def __init__(self, rows: Iterable[Any] | AsyncIterable[Any], *, source: str,
                 template: _Template | None, writer: BatchOutput | None,
                 skip: Callable[[Row], bool] | None) -> None:
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if isinstance(rows, AsyncIterable):
            self._async = aiter(rows)
        else:
            self._sync = iter(rows)
        self._lock = asyncio.Lock()  # one worker at a time in an async source
        self.source, self.template, self.writer, self.skip = source, template, writer, skip
        self.line = 0  # the line of the last row read
        self.fed = 0  # rows handed to a worker
        self.working = 0  # workers not ended yet
        self.ended = False
        self.error: Exception | None = None  # why the rows stopped
        self.seen: dict[str, int] = {}  # each row's id -> its line: an id twice is an error

    async def next(self) -> tuple[int, Row] | None:
        """``(sequence number, row)`` of the next row to ask, or None when there is none."""
        while not self.ended:
            try:
                item = next(self._sync, _END) if self._sync is not None else await self._take()
                if item is _END:
                    self.ended = True
                    return None
                row = self._row(item)
            except Exception as err:
                self.error, self.ended = err, True
                return None
            if row is None:
                continue
            seq = self.fed
            self.fed += 1
            return seq, row
        return None

    async def _take(self) -> Any:
        assert self._async is not None
        async with self._lock:  # another worker may have ended the rows meanwhile
            return _END if self.ended else await anext(self._async, _END)

    def _row(self, item: Any) -> Row | None:
        self.line += 1
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int):
            self.line, item = item
        if isinstance(item, Row):
            row = item
        else:
            row = parse_row(item, self.line, source=self.source, template=self.template)
        if self.seen.setdefault(row.key, self.line) != self.line:
            raise BatchInputError(f"id {row.id!r} is also the id of line {self.seen[row.key]}"
                                  ": give every row its own id", source=self.source,
                                  line=self.line)
        if self.writer is not None and row.key in self.writer.done:
            return None
        if self.skip is not None and self.skip(row):
            return None
        return row
