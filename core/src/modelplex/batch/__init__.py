"""Batch runs: one prompt per row over many rows, through the one request path.

::

    from modelplex import batch

    rows = [{"id": "a", "prompt": "2+2?"}, {"id": "b", "prompt": "3+3?"}]
    async for result in batch.run(rows, model="openai:gpt-4o-mini", concurrency=16,
                                  output="answers.jsonl"):
        print(result.id, result.answer or result.error)

Each row is a mapping with an ``id`` (else its line number) and one of ``messages`` (chat
messages), ``prompt`` (one user message) or, with ``template=``, the template's variables;
``options`` (provider options) and ``system`` override the run's for that row. Rows are read
as they are needed (an iterator or async iterator of a million rows stays flat in memory)
and at most ``concurrency`` are asked at once, each as one non-streaming request of a stack
from :func:`modelplex.pipeline.open_model` (``caller="batch"``: named models with their
routers, the cache, recording).

With ``schema=`` (a JSON schema, a parser name or class) each answer is validated and, when
it is not valid, re-asked as :func:`modelplex.structured.get_structured` does; a row whose
last attempt failed is a result with ``error`` and ``error_type``. A row that cannot be
asked (no messages or prompt, a template variable missing) raises :class:`BatchInputError`
naming its line; the rows in flight finish first.

With ``output=`` (a path) each result is appended as one JSON line, flushed as it is written;
:class:`BatchOutput` reads such a file back to resume a run (ids answered are skipped, a torn
last line is cut off, a file written by a different run is refused).

:func:`bounded` runs any coroutine function over items with bounded concurrency.

:func:`run_provider_batch` sends the rows through the provider's own Batch API instead
(OpenAI's ``/v1/batches``, Anthropic's Message Batches: half the price, answered within a
day), resumably; :mod:`modelplex.batch.jobs` holds the typed values of that optional
provider capability, :func:`job_status` and :func:`fetch_job` look a job up by its id.
"""

from __future__ import annotations

from modelplex.batch.concurrency import (
    answer_each,
    batch_model_operation,
    bounded,
    default_concurrency,
)
from modelplex.batch.jobs import (
    BatchCounts,
    BatchItem,
    BatchJob,
    BatchRequest,
    JobState,
)
from modelplex.batch.output import BatchOutput, BatchResult
from modelplex.batch.provider_batch import fetch_job, job_status, run_provider_batch
from modelplex.batch.rows import (
    BatchInputError,
    Row,
    _Template as _Template,  # modelplex.cli.batch uses it
    check_schema,
    estimate_tokens,
    fingerprint,
    parse_row,
    read_rows,
)
from modelplex.batch.running import run

__all__ = ["BatchCounts", "BatchInputError", "BatchItem", "BatchJob", "BatchOutput",
           "BatchRequest", "BatchResult", "JobState", "Row", "answer_each",
           "batch_model_operation", "bounded", "check_schema",
           "default_concurrency", "estimate_tokens", "fetch_job", "fingerprint", "job_status",
           "parse_row", "read_rows", "run", "run_provider_batch"]
