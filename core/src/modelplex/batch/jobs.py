"""The providers' Batch APIs as one optional capability: the typed values passed across it.

A provider with a Batch API (OpenAI's ``/v1/batches``, Anthropic's Message Batches) overrides
:meth:`~modelplex.provider.Provider.submit_batch`, :meth:`~modelplex.provider.Provider.
batch_status`, :meth:`~modelplex.provider.Provider.batch_results` and, optionally,
:meth:`~modelplex.provider.Provider.cancel_batch`; one without raises
:class:`~modelplex.errors.UnsupportedOperationError` (:func:`no_batch_api`).

* :class:`BatchRequest`: one request of a job, a ``custom_id`` and a validated
  :class:`~modelplex.provider.ChatRequest`;
* :class:`BatchJob`: a job's status: ``id``, ``state`` (:class:`JobState`), ``counts``
  (:class:`BatchCounts`), ``created_at``/``ended_at``/``expires_at``;
* :class:`BatchItem`: one request's outcome, a :class:`~modelplex.chunks.ChatResponse` or an
  error (an expired or cancelled request is an error whose type says so);
* :func:`custom_id` / :func:`row_id`: a row id as the ``custom_id`` both APIs accept
  (``[A-Za-z0-9_-]{1,64}``) and back.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from modelplex.errors import ModelplexError, UnsupportedOperationError

if TYPE_CHECKING:
    from modelplex.chunks import ChatResponse
    from modelplex.provider import ChatRequest

__all__ = ["BatchCounts", "BatchItem", "BatchJob", "BatchNotEndedError", "BatchRequest",
           "JobState", "check_job_id", "custom_id", "no_batch_api", "parse_time", "row_id"]


class BatchNotEndedError(ModelplexError):
    """The results of a job that has not ended were asked for."""


class JobState(enum.StrEnum):
    """The state of a provider's batch job (OpenAI's names; Anthropic's are mapped to them)."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether the job will change no more (its results can be read)."""
        return self in _ENDED


_ENDED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.EXPIRED,
                    JobState.CANCELLED})


@attrs.frozen
class BatchCounts:
    """How many requests of a job are where: ``succeeded``, ``errored``, ``processing``
    (not finished yet), ``cancelled`` and ``expired``, of ``total``."""

    total: int = 0
    succeeded: int = 0
    errored: int = 0
    processing: int = 0
    cancelled: int = 0
    expired: int = 0

    @property
    def finished(self) -> int:
        """Requests that will change no more."""
        return self.succeeded + self.errored + self.cancelled + self.expired


@attrs.frozen
class BatchJob:
    """A provider's batch job as last seen.

    ``provider`` is the provider's name, ``detail`` the provider's reason for a failed job
    (a validation error of the input file, say), ``raw`` the provider's own object.
    """

    id: str
    provider: str
    state: JobState
    counts: BatchCounts = BatchCounts()
    created_at: datetime | None = None
    ended_at: datetime | None = None
    expires_at: datetime | None = None
    detail: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``modelplex batch status --json``)."""
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {"id": self.id, "provider": self.provider, "state": str(self.state),
                "counts": attrs.asdict(self.counts), "created_at": when(self.created_at),
                "ended_at": when(self.ended_at), "expires_at": when(self.expires_at),
                "detail": self.detail}


@attrs.frozen
class BatchRequest:
    """One request of a job: ``custom_id`` names it in the results."""

    custom_id: str
    request: ChatRequest


@attrs.define
class BatchItem:
    """One request's outcome: ``response``, or ``error`` and ``error_type`` (an exception's
    class name, ``BatchExpiredError`` or ``BatchCancelledError`` for a request the job did not
    reach)."""

    custom_id: str
    response: ChatResponse | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the request was answered."""
        return self.response is not None and self.error is None


def no_batch_api(provider: str) -> UnsupportedOperationError:
    """The error of a provider without a Batch API."""
    return UnsupportedOperationError(f"provider {provider!r} has no Batch API; run without "
                                     "--provider-batch")


_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


def check_job_id(job_id: Any) -> str:
    """``job_id`` if it can be a job id (letters, digits, ``_`` and ``-``): it goes into URL
    paths."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        from modelplex.errors import ConfigurationError

        raise ConfigurationError(f"{job_id!r} is not a batch job id: give the id "
                                 "`modelplex batch` printed (batch_... or msgbatch_...)")
    return job_id


def parse_time(value: Any) -> datetime | None:
    """A timestamp from Unix seconds (OpenAI) or RFC 3339 text (Anthropic); ``None`` else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


# -- custom ids --------------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z0-9-][A-Za-z0-9_-]{0,63}")


def custom_id(row: Any) -> str:
    """The ``custom_id`` of a row id: a plain string id as it is, others encoded so that
    :func:`row_id` gives them back (``1`` is ``_i1``, ``"a b"`` is ``_x`` and its JSON in
    hex), or ``_h`` and a hash when the encoding is longer than 64 characters (the job file
    keeps those)."""
    if isinstance(row, str) and _PLAIN.fullmatch(row):
        return row
    if isinstance(row, int) and not isinstance(row, bool) and len(str(row)) <= 60:
        return f"_i{row}"
    text = json.dumps(row, sort_keys=True, ensure_ascii=False)
    hexed = text.encode().hex()
    if len(hexed) <= 62:
        return "_x" + hexed
    return "_h" + hashlib.sha256(text.encode()).hexdigest()[:40]


def row_id(cid: str, known: Mapping[str, Any] | None = None) -> Any:
    """The row id of a ``custom_id`` made by :func:`custom_id` (a hashed one looked up in
    ``known``; one that is not found is returned as it is)."""
    if known is not None and cid in known:
        return known[cid]
    if cid.startswith("_i"):
        try:
            return int(cid[2:])
        except ValueError:
            return cid
    if cid.startswith("_x"):
        try:
            return json.loads(bytes.fromhex(cid[2:]).decode())
        except ValueError:
            return cid
    return cid
