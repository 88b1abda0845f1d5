"""Generation fidelity: how well a sample keeps to the shape its mode asks for, per sample and
aggregated, stored with each verdict next to its failure class.

pass@k and the failure taxonomy judge the executed code; paper 001 (the instruction-tuning tax)
also measures *behaviour*: instruction tuning helps Command mode but hurts Flow mode, and the
damage shows as middles that do not join their suffix, completions that do not stop at the end
of the function, and answers in the wrong shape.  These metrics make that visible whether or not
the code passes.  Formulas and rationale: ``docs/metrics.md``.

===================  ==========================  ============================================
metric               applies to                  value
===================  ==========================  ============================================
``connects``         infilling (``suffix``)      the middle does not re-emit the suffix's
                                                 first non-blank lines
``exact_match``      infilling                   normalised middle == normalised reference
``edit_similarity``  infilling                   1 - Levenshtein / max(len), on normalised text
``length_ratio``     infilling                   len(middle) / len(reference), characters,
                                                 normalised (None for an empty reference)
``stop_adherent``    Flow completion, raw known  the raw text ended within the function body
``follows_format``   Command; Flow completion    Command: a fenced Python block; Flow: the raw
                     (raw known)                 text continues the prompt's function body
                                                 without writing its ``def`` again
===================  ==========================  ============================================

A metric that does not apply to a sample is None and is left out of its means; the stop and
format checks read Python, so a problem in another language gets only the infilling metrics.
Plain Python, no sandbox: the metrics read text, never run it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from codealign.tasks.evaluation.taxonomy import (
    format_problem,
    matched,
    reemits_function,
    repeats_suffix,
)
from codealign.tasks.generation.postprocess import end_of_function_body
from codealign.tasks.problems.problem import Problem


@dataclass(frozen=True)
class SampleFidelity:
    """One sample's metrics; None where a metric does not apply (see the module table)."""

    connects: bool | None = None
    exact_match: bool | None = None
    edit_similarity: float | None = None
    length_ratio: float | None = None
    stop_adherent: bool | None = None
    follows_format: bool | None = None


METRICS = tuple(f.name for f in fields(SampleFidelity))
RATES = ("connects", "exact_match", "stop_adherent", "follows_format")  # booleans: their mean is a share


@dataclass(frozen=True)
class MetricMean:
    """A metric averaged over the ``n`` samples it applies to (a share, for a boolean metric)."""

    mean: float
    n: int


def normalise(code: str) -> str:
    """Text as compared: ``\\r\\n`` as ``\\n``, trailing whitespace stripped from every line, blank
    lines dropped at both ends.  Indentation and inner blank lines are kept (they are code)."""
    lines = [line.rstrip() for line in code.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (unit-cost insertions, deletions, substitutions) between two strings.

    Bit-parallel (Myers 1999 / Hyyrö 2001): one pass over ``a`` with the DP column of ``b`` held
    in the bits of a Python int, exactly the textbook DP's result at O(len(a)·len(b)/64) word
    operations, so long raw generations cost milliseconds, with no dependency."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask, last = (1 << m) - 1, 1 << (m - 1)
    pv, mv, dist = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & last:
            dist += 1
        elif mh & last:
            dist -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return dist


def edit_similarity(a: str, b: str) -> float:
    """``1 - levenshtein(a, b) / max(len(a), len(b))`` in characters; 1.0 for two empty strings."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def stop_adherent(raw: str, finish_reason: str | None = None) -> bool:
    """The raw generation ended within or at the end of the function body: it did not hit the
    token limit, and no non-blank line after its first starts at column 0 (another ``def``, a
    ``__main__`` block, asserts, prose, a closing fence…), i.e. post-processing's
    ``end_of_function_body`` had nothing to cut.  Run-ons that vLLM's stop sequences already cut
    do not show in the raw text and count as stopped (the harness stopped them)."""
    if finish_reason == "length":
        return False
    return end_of_function_body(raw).rstrip() == raw.rstrip()


def continues_function(problem: Problem, raw: str) -> bool:
    """Flow mode's expected shape: the text continues the prompt's function body (its first
    non-blank line, joined to the prompt's unfinished last line, is indented) and does not write
    the function's ``def`` again."""
    tail = problem.prompt.rsplit("\n", 1)[-1] + raw
    first = next((line for line in tail.split("\n") if line.strip()), "")
    return first[:1].isspace() and not reemits_function(problem, raw)


def measure(problem: Problem, mode: str, raw: str | None = None, completion: str | None = None,
            finish_reason: str | None = None) -> SampleFidelity:
    """The fidelity metrics of one sample.  ``raw`` is the model's text, ``completion`` the code
    taken from it (the middle, for infilling), as in a samples file; metrics whose inputs are
    missing are None."""
    if problem.suffix:
        if completion is None:
            return SampleFidelity()
        middle, reference = normalise(completion), normalise(problem.canonical_completion)
        return SampleFidelity(connects=not repeats_suffix(problem, completion),
                              exact_match=middle == reference,
                              edit_similarity=edit_similarity(middle, reference),
                              length_ratio=len(middle) / len(reference) if reference else None)
    if raw is None:
        return SampleFidelity()
    if mode == "command":  # a fenced block in the problem's language
        return SampleFidelity(follows_format=format_problem(raw, problem.language) is None)
    if problem.language != "python":
        return SampleFidelity()  # the Flow shape checks below read Python (indentation, ``def``)
    if problem.completion_is_program:
        return SampleFidelity()  # no prompt function to continue or stop at the end of
    return SampleFidelity(stop_adherent=stop_adherent(raw, finish_reason),
                          follows_format=continues_function(problem, raw))


def label_fidelity(problems: Sequence[Problem], mode: str, samples: Iterable[dict[str, Any]],
                   verdicts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``verdicts`` with a ``fidelity`` field each (the metrics as a dict; None when the task is
    unknown), matched to their samples by (task_id, index)."""
    labelled = []
    for v, s, problem in matched(problems, samples, verdicts):
        fidelity = None
        if problem is not None:
            fidelity = asdict(measure(problem, mode, s.get("raw"), s.get("completion"), s.get("finish_reason")))
        labelled.append({**v, "fidelity": fidelity})
    return labelled


def summarize(records: Iterable[dict[str, Any] | SampleFidelity]) -> dict[str, dict[str, float | int]]:
    """``{metric: {"mean", "n"}}`` over the records a metric applies to (metrics that apply to
    none are left out)."""
    values: dict[str, list[float]] = defaultdict(list)
    for record in records:
        row = asdict(record) if isinstance(record, SampleFidelity) else record
        for name in METRICS:
            if row.get(name) is not None:
                values[name].append(float(row[name]))
    return {name: asdict(MetricMean(sum(values[name]) / len(values[name]), len(values[name])))
            for name in METRICS if values[name]}


def fidelity_means(verdicts: Iterable[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per benchmark and overall (pooled over all samples, not a mean of benchmark means), the
    means of the ``fidelity`` stored with each verdict; empty when no verdict carries one."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in verdicts:
        if v.get("fidelity"):
            groups[v.get("benchmark") or ""].append(v["fidelity"])
    per_benchmark = {name: means for name, rows in sorted(groups.items()) if (means := summarize(rows))}
    return per_benchmark, summarize(row for rows in groups.values() for row in rows)
