"""Training data: any dataset TRL takes, checked before any worker starts.

Where it comes from: a parquet or JSONL file (path or URI: ``generate-preferences`` writes
parquet), a ``datasets`` ``save_to_disk`` directory, or a hub dataset id (``org/name``, pinned
with ``org/name@revision``; read by ``datasets.load_dataset``).  What identifies it in the stage
key and the lineage: a file's sha256; a ``save_to_disk`` directory's Arrow files (sha256 of
their names and bytes); a hub dataset's revision sha.

Formats, as TRL names them: SFT takes ``prompt`` / ``completion`` or ``messages`` (the loss is on
the completion, or on the assistant turns); DPO and BoNBoN take ``prompt`` / ``chosen`` /
``rejected``.  Each text is a string (standard format) or a list of ``{"role", "content"}``
messages (conversational format, rendered by the model's chat template).  BoNBoN's beta needs
the ``n`` its pairs were drawn from: a column ``n``, else the ``bonbon_n`` setting.

Examples are tracked by ``instruction_id`` across a resume.  A dataset without that column gets
ids derived from each row's prompt (``prompt:<sha256 prefix>#<k>``, k counting rows that share
the prompt: several pairs may), and ``TrainingData.ids`` records the derivation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import fsspec

from codealign.tasks.artifacts.store import storage_options, to_uri
from codealign.tasks.errors import CodealignError
from codealign.tasks.generation.hub import hub_offline, hub_timeout

COLUMNS = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected"),
           "bonbon": ("prompt", "chosen", "rejected")}
MESSAGES = "messages"  # TRL's conversational SFT column
ID_COLUMN = "instruction_id"
DERIVED_IDS = "prompt:sha256"  # TrainingData.ids when instruction_id was derived from the prompt
_HUB_DATASET = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?")


class DatasetError(CodealignError, ValueError):
    """A dataset that cannot be trained on; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TrainingData:
    uri: str
    sha256: str  # the identity: file bytes, save_to_disk Arrow files, or hub revision sha
    rows: int
    n: int | None  # best-of-n size (BoNBoN data only)
    ids: str = ID_COLUMN  # where example ids come from: the instruction_id column, or DERIVED_IDS
    columns: tuple[str, ...] = ()  # the TRL columns trained on (messages, or prompt/completion/...)
    conversational: bool = False


# ---------------------------------------------------------------------------- reading


def read_bytes(uri: str) -> bytes:
    uri = to_uri(uri)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise DatasetError(f"{uri}: no such dataset") from None


def _is_hub_id(ref: str) -> bool:
    """``org/name`` or ``org/name@rev`` that is not a path here (``data/sft.parquet`` is one)."""
    return ("://" not in ref and not ref.startswith(("/", ".", "~")) and not os.path.exists(ref)
            and bool(_HUB_DATASET.fullmatch(ref)))


def load_rows(ref: str) -> tuple[list[dict[str, Any]], str, str]:
    """``(rows, identity, uri)`` of a dataset reference (see the module's docstring)."""
    if _is_hub_id(ref):
        return _hub_rows(ref)
    uri = to_uri(ref)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    if fs.isdir(path):
        return _disk_rows(uri, fs, path)
    data = read_bytes(uri)
    identity = hashlib.sha256(data).hexdigest()
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(io.BytesIO(data)).to_pylist(), identity, uri
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise DatasetError(f"{uri}: not a readable parquet dataset ({exc})") from None
    if path.endswith((".jsonl", ".json")):
        return _jsonl_rows(uri, data), identity, uri
    raise DatasetError(f"{uri}: not a parquet, JSONL or save_to_disk dataset")


def read_rows(uri: str, expected_sha256: str | None = None) -> list[dict[str, Any]]:
    """The dataset's rows; with ``expected_sha256``, refuse one that changed since it was checked."""
    rows, identity, uri = load_rows(uri)
    if expected_sha256 and identity != expected_sha256:
        raise DatasetError(f"{uri}: changed since the stage was planned (its identity differs)")
    return rows


def _jsonl_rows(uri: str, data: bytes) -> list[dict[str, Any]]:
    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith("["):  # a JSON array of rows
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{uri}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        return [_object(uri, i + 1, r) for i, r in enumerate(rows)]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(_object(uri, number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{uri}: line {number}: not valid JSON ({exc.msg})") from None
    return rows


def _object(uri: str, line: int, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{uri}: line {line}: a row must be a JSON object, not {type(value).__name__}")
    return value


def _disk_rows(uri: str, fs: Any, path: str) -> tuple[list[dict[str, Any]], str, str]:
    """A ``save_to_disk`` directory (a Dataset, or a DatasetDict's ``train`` split)."""
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(uri, storage_options=storage_options(uri) or None)
    except FileNotFoundError as exc:
        raise DatasetError(f"{uri}: a directory, but not a datasets save_to_disk directory ({exc})") from None
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise DatasetError(f"{uri}: a DatasetDict without a 'train' split (it has {', '.join(loaded)})")
        loaded = loaded["train"]
    arrows = sorted(p for p in fs.find(path) if p.endswith(".arrow"))
    h = hashlib.sha256()
    for arrow in arrows:
        h.update(arrow[len(path):].encode() + b"\0" + fs.cat_file(arrow))
    return loaded.to_list(), h.hexdigest(), uri


def _hub_rows(ref: str) -> tuple[list[dict[str, Any]], str, str]:
    """A hub dataset's train split at a pinned revision (the revision's sha is its identity)."""
    from datasets import load_dataset
    from huggingface_hub import HfApi

    name, _, revision = ref.partition("@")
    if hub_offline():
        raise DatasetError(f"{ref}: a hub dataset, and HF_HUB_OFFLINE is set; pass a local file or a "
                           "save_to_disk directory")
    try:
        with hub_timeout():
            sha = HfApi().dataset_info(name, revision=revision or None).sha
    except Exception as exc:  # noqa: BLE001 - missing, gated, unreachable: one line each way
        raise DatasetError(f"{ref}: the Hugging Face Hub cannot give this dataset ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); pass a local file or a save_to_disk "
                           "directory") from None
    data = load_dataset(name, revision=sha, split="train")
    return data.to_list(), str(sha), f"hf://datasets/{name}@{sha}"


# ---------------------------------------------------------------------------- checking


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in value))


def _text_kind(value: Any) -> str | None:
    """"standard" for non-empty text, "conversational" for a message list, None otherwise."""
    if isinstance(value, str) and value.strip():
        return "standard"
    if _is_messages(value):
        return "conversational"
    return None


def training_columns(present: set[str], stage: str) -> tuple[str, ...]:
    if stage == "sft" and MESSAGES in present and not {"prompt", "completion"} <= present:
        return (MESSAGES,)
    return COLUMNS[stage]


def derive_ids(rows: list[dict[str, Any]]) -> list[str]:
    """``prompt:<sha256 of the prompt, 16 hex>#<k>``: the k-th row with that prompt."""
    seen: Counter[str] = Counter()
    ids = []
    for row in rows:
        prompt = row.get("prompt", row.get(MESSAGES, [])[:-1] if isinstance(row.get(MESSAGES), list) else None)
        digest = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]
        ids.append(f"prompt:{digest}#{seen[digest]}")
        seen[digest] += 1
    return ids


def example_ids(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's example id: its instruction_id, or one derived from its prompt."""
    if rows and ID_COLUMN in rows[0]:
        return [str(r[ID_COLUMN]) for r in rows]
    return derive_ids(rows)


def check_dataset(ref: str, stage: str, bonbon_n: int | None = None) -> TrainingData:
    """Read and check the dataset for ``stage``: TRL's columns in one format, ids, BoNBoN's n,
    no empty text."""
    rows, identity, uri = load_rows(ref)
    if not rows:
        raise DatasetError(f"{uri}: no rows")
    present = set(rows[0])
    columns = training_columns(present, stage)
    missing = [c for c in columns if c not in present]
    if missing:
        other = " (or messages)" if stage == "sft" else ""
        raise DatasetError(f"{uri}: a {stage} dataset needs column(s) {', '.join(missing)}{other}; "
                           f"it has {', '.join(sorted(present))}")
    has_ids = ID_COLUMN in present
    ids = example_ids(rows)
    if has_ids and len(set(ids)) != len(ids):
        raise DatasetError(f"{uri}: {ID_COLUMN} repeats ({len(ids) - len(set(ids))} duplicates)")
    kinds = set()
    for line, row in enumerate(rows):
        for column in columns:
            kind = _text_kind(row.get(column))
            if kind is None:
                raise DatasetError(f"{uri}: row {line} ({ids[line]}): empty or non-text {column!r} (a string, or a "
                                   "list of {role, content} messages)")
            kinds.add(kind)
        if columns == (MESSAGES,) and row[MESSAGES][-1]["role"] != "assistant":
            raise DatasetError(f"{uri}: row {line} ({ids[line]}): its messages do not end with an assistant turn")
    if len(kinds) > 1:
        raise DatasetError(f"{uri}: mixes plain text and message lists; TRL takes one format per dataset")
    return TrainingData(uri, identity, len(rows), _best_of_n(uri, rows, stage, bonbon_n),
                        ID_COLUMN if has_ids else DERIVED_IDS, columns, kinds == {"conversational"})


def _best_of_n(uri: str, rows: list[dict[str, Any]], stage: str, setting: int | None) -> int | None:
    """BoNBoN's n: the data's ``n`` column when present, else the setting."""
    if stage != "bonbon":
        return None
    if "n" not in rows[0]:
        if setting is None:
            raise DatasetError(f"{uri}: a BoNBoN dataset needs the n its best and worst were drawn from: a column "
                               "n, or the bonbon_n setting")
        return setting
    ns = {int(r["n"]) for r in rows}
    if len(ns) != 1 or min(ns) < 2:
        raise DatasetError(f"{uri}: column n must hold one best-of-n size >= 2, found {sorted(ns)}")
    return ns.pop()
