"""Parquet input for batch runs, through ``pyarrow`` (the optional extra ``modelplex[parquet]``).

The file is read one record batch at a time (``PARQUET_BATCH_ROWS`` rows, within its row
groups), so memory stays flat however many rows it holds. Each row is a dict of its columns,
numbered from 1 in the order of the file; a null value counts as a missing column (a row may
have a ``prompt`` and a null ``messages``); a ``messages`` column may hold a list of structs
or JSON text, an ``options`` column a struct or JSON text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from modelplex.batch.problems import BatchInputError
from modelplex.errors import ConfigurationError

__all__ = ["PARQUET_BATCH_ROWS", "read_parquet"]

#: rows read from the file at once
PARQUET_BATCH_ROWS = 1024


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise ConfigurationError("Parquet input needs pyarrow: pip install "
                                 "'modelplex[parquet]' (or give --format jsonl or csv)") from None
    return pq


def read_parquet(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(row number, dict)`` for each row of a Parquet file, read a batch at a time."""
    source = str(path)
    pq = _pyarrow()
    import pyarrow  # type: ignore[import-not-found,import-untyped,unused-ignore]

    try:
        handle = pq.ParquetFile(source)
    except FileNotFoundError:
        raise BatchInputError("no such file: check the path", source=source) from None
    except (OSError, pyarrow.ArrowException) as err:
        raise BatchInputError(f"not a Parquet file ({err}): give --format jsonl or csv for "
                              "text files", source=source) from None
    number = 0
    try:
        for chunk in handle.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for record in chunk.to_pylist():
                number += 1
                row = {k: v for k, v in record.items() if v is not None}
                for key in ("messages", "options"):
                    text = row.get(key)
                    if isinstance(text, str):
                        try:
                            row[key] = json.loads(text)
                        except ValueError as err:
                            raise BatchInputError(f"the {key} column is not JSON ({err})",
                                                  source=source, line=number) from None
                yield number, row
    except (OSError, pyarrow.ArrowException) as err:
        raise BatchInputError(f"cannot read the Parquet file ({err})", source=source,
                              line=number + 1) from None
    finally:
        handle.close()
