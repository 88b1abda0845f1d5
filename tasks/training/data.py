"""Training data: a ``generate-preferences`` parquet dataset, checked before any worker starts.

Columns follow TRL: SFT takes ``prompt`` / ``completion`` (the loss is on the completion only);
DPO and BoNBoN take ``prompt`` / ``chosen`` / ``rejected``; BoNBoN also needs the ``n`` its pairs
were drawn from (its beta depends on it).  Every row needs an ``instruction_id`` (examples are
tracked by it across a resume).  The dataset is identified by the sha256 of its bytes.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import fsspec

from codealign.tasks.artifacts.store import storage_options, to_uri
from codealign.tasks.errors import CodealignError

COLUMNS = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected"),
           "bonbon": ("prompt", "chosen", "rejected", "n")}
ID_COLUMN = "instruction_id"


class DatasetError(CodealignError, ValueError):
    """A dataset that cannot be trained on; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TrainingData:
    uri: str
    sha256: str
    rows: int
    n: int | None  # best-of-n size (BoNBoN data only)


def read_bytes(uri: str) -> bytes:
    uri = to_uri(uri)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise DatasetError(f"{uri}: no such dataset") from None


def read_rows(uri: str, expected_sha256: str | None = None) -> list[dict[str, Any]]:
    """The dataset's rows; with ``expected_sha256``, refuse a file that changed since it was checked."""
    import pyarrow.parquet as pq

    data = read_bytes(uri)
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise DatasetError(f"{uri}: changed since the stage was planned (sha256 differs)")
    try:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a non-parquet file
        raise DatasetError(f"{uri}: not a parquet dataset ({exc})") from None


def check_dataset(uri: str, stage: str) -> TrainingData:
    """Read and check the dataset for ``stage``: TRL's columns, ids, n for BoNBoN, no empty text."""
    uri = to_uri(uri)
    data = read_bytes(uri)
    rows = read_rows(uri)
    if not rows:
        raise DatasetError(f"{uri}: no rows")
    present = set(rows[0])
    missing = [c for c in (*COLUMNS[stage], ID_COLUMN) if c not in present]
    if missing:
        hint = " (a BoNBoN dataset records the n its best and worst were drawn from)" if missing == ["n"] else ""
        raise DatasetError(f"{uri}: a {stage} dataset needs column(s) {', '.join(missing)}{hint}; "
                           f"it has {', '.join(sorted(present))}")
    ids = [r[ID_COLUMN] for r in rows]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{uri}: {ID_COLUMN} repeats ({len(ids) - len(set(ids))} duplicates)")
    for line, row in enumerate(rows):
        for column in COLUMNS[stage]:
            if column != "n" and not isinstance(row[column], str) or row[column] in ("", None):
                raise DatasetError(f"{uri}: row {line} ({row[ID_COLUMN]}): empty or non-text {column!r}")
    n = None
    if stage == "bonbon":
        ns = {int(r["n"]) for r in rows}
        if len(ns) != 1 or min(ns) < 2:
            raise DatasetError(f"{uri}: column n must hold one best-of-n size >= 2, found {sorted(ns)}")
        n = ns.pop()
    return TrainingData(uri, hashlib.sha256(data).hexdigest(), len(rows), n)
