"""From judged responses to training datasets, with the quality gates applied and counted.

* **sft** — one passing response per instruction (seeded random choice): ``prompt``/``completion``;
* **dpo** — the paper's rule: chosen = a random passing response, rejected = a random failing
  non-empty one; instructions without both are counted and dropped: ``prompt``/``chosen``/``rejected``;
* **bon** — BoNBoN's best and worst of the first n responses, ranked by the fraction of tests
  passed, ties broken by the configured keys; ``n`` is recorded (the loss derives β from it);
* **nonfunctional-<dimension>** — per CODAL dimension, the best- and worst-scored passing
  responses when their scores differ by a margin; dimensions balanced to the same size.  Rows
  carry the ``n`` responses they were picked from, so BoNBoN can train on them too.

Flagged responses (reward hacks, degenerate, duplicates, contaminated) are never chosen; every
drop is counted per gate and per dataset in the stats.  Choices are seeded per (kind,
instruction), so the same inputs and seed give identical datasets whatever the shard order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codealign.tasks.preferences import quality
from codealign.tasks.preferences.nonfunctional import DIMENSIONS
from codealign.tasks.preferences.responses import Response

Kind = Literal["sft", "dpo", "bon", "nonfunctional"]
KINDS: tuple[Kind, ...] = ("sft", "dpo", "bon", "nonfunctional")
TieBreak = Literal["nonfunctional", "mean_logprob", "shorter"]
Dimension = Literal["instruction_following", "readability", "complexity", "style", "explanation"]


class PairSettings(BaseModel):
    """How datasets are built from responses (part of the generate-preferences config)."""

    model_config = ConfigDict(extra="forbid")

    bon_n: int = Field(8, ge=2, description="BoNBoN: best and worst of the first n responses (n = 8 in the paper)")
    tie_breaks: list[TieBreak] = Field(
        default_factory=lambda: ["nonfunctional", "mean_logprob", "shorter"],
        description="BoNBoN ranking after the fraction of tests passed, in order")
    dimensions: list[Dimension] = Field(default_factory=lambda: list(DIMENSIONS),
                                        description="non-functional dimensions, one dataset each")
    nonfunctional_margin: float = Field(1.0, ge=0, description="least score difference for a non-functional pair")
    balance_dimensions: bool = Field(True, description="cut every dimension's dataset to the smallest one's size")
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1,
                                            description="MinHash Jaccard similarity above which instructions collapse")
    allow_judged_in_process: bool = Field(
        False, description="let responses whose tests ran in their own process (tests the judge cannot proxy) "
                           "be chosen; they are flagged and counted either way")
    ngram: int = Field(10, ge=3, description="decontamination n-gram length (tokens)")
    decontaminate_against: list[str] = Field(default_factory=lambda: list(quality.DECONTAMINATE_AGAINST),
                                             description="evaluation benchmarks whose texts "
                                                         "must not leak into the data")


@dataclass(frozen=True)
class Provenance:
    """Columns every row carries: where its instruction and responses come from."""

    source: str
    source_sha256: str
    model: str
    model_sha256: str
    sampling: str  # the sampler settings, JSON
    seed: int


@dataclass
class BuildStats:
    instructions: int = 0
    responses: int = 0
    pass_rates: list[float] = field(default_factory=list)  # per kept instruction: share of passing responses
    responses_flagged: Counter[str] = field(default_factory=Counter)
    instructions_dropped: Counter[str] = field(default_factory=Counter)
    contamination: list[dict[str, str]] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"instructions": self.instructions, "responses": self.responses, "pass_rates": self.pass_rates,
                "responses_flagged": dict(sorted(self.responses_flagged.items())),
                "instructions_dropped": dict(sorted(self.instructions_dropped.items())),
                "contamination": self.contamination, "datasets": self.datasets}


def dataset_names(kinds: Sequence[Kind], dimensions: Sequence[str]) -> list[str]:
    names = []
    for kind in kinds:
        names += [f"nonfunctional-{d}" for d in dimensions] if kind == "nonfunctional" else [kind]
    return names


def build_datasets(responses: Sequence[Response], instruction_ids: Sequence[str], kinds: Sequence[Kind],
                   settings: PairSettings, provenance: Provenance,
                   index: quality.ContaminationIndex | None = None
                   ) -> tuple[dict[str, list[dict[str, Any]]], BuildStats]:
    """Every requested dataset's rows (in instruction order) and the run's stats."""
    stats = BuildStats(instructions=len(instruction_ids), responses=len(responses))
    by_id: dict[str, list[Response]] = {i: [] for i in instruction_ids}
    for r in responses:
        by_id.setdefault(r.instruction_id, []).append(r)
    for group in by_id.values():
        group.sort(key=lambda r: r.index)
    kept = _gate_instructions(by_id, settings, stats, index)
    usable = {i: _usable(by_id[i], stats, index, settings.allow_judged_in_process) for i in kept}
    for i in kept:
        group = by_id[i]
        stats.pass_rates.append(sum(r.passed for r in group) / len(group))

    out: dict[str, list[dict[str, Any]]] = {}
    for name in dataset_names(kinds, settings.dimensions):
        build: Callable[[str, list[Response], list[Response], random.Random], tuple[dict[str, Any] | None, str]]
        if name.startswith("nonfunctional-"):
            dimension = name.removeprefix("nonfunctional-")
            build = lambda i, g, u, rng, d=dimension: _nonfunctional_row(g, u, rng, d, settings)  # noqa: E731
        else:
            build = {"sft": _sft_row, "dpo": _dpo_row,
                     "bon": lambda i, g, u, rng: _bon_row(g, u, rng, settings)}[name]  # type: ignore[assignment]
        rows, dropped = [], Counter()
        for i in kept:
            rng = random.Random(f"{provenance.seed}:{name}:{i}")
            row, why = build(i, by_id[i], usable[i], rng)
            if row is None:
                dropped[why] += 1
                continue
            first = by_id[i][0]
            rows.append({**row, "instruction_id": i, "tests_origin": first.tests_origin,
                         **{k: getattr(provenance, k) for k in provenance.__dataclass_fields__}})
        out[name] = rows
        stats.datasets[name] = {"rows": len(rows), "dropped": dict(sorted(dropped.items()))}
    if settings.balance_dimensions:
        _balance(out, stats, provenance.seed)
    return out, stats


def _gate_instructions(by_id: dict[str, list[Response]], settings: PairSettings, stats: BuildStats,
                       index: quality.ContaminationIndex | None) -> list[str]:
    """Instructions kept after decontamination and near-duplicate removal (first one wins)."""
    kept = []
    for i, group in by_id.items():
        if not group:
            stats.instructions_dropped["no responses (no instruction written)"] += 1
            continue
        if index is not None and (match := index.match(group[0].instruction)):
            stats.instructions_dropped["contaminated"] += 1
            stats.contamination.append({"instruction_id": i, "where": "instruction", "matched": match})
            continue
        kept.append(i)
    duplicate_of = quality.near_duplicates([by_id[i][0].instruction for i in kept], settings.near_duplicate_threshold)
    stats.instructions_dropped["near-duplicate"] += len(duplicate_of)
    if not duplicate_of:
        del stats.instructions_dropped["near-duplicate"]
    return [i for n, i in enumerate(kept) if n not in duplicate_of]


def _usable(group: list[Response], stats: BuildStats, index: quality.ContaminationIndex | None,
            allow_in_process: bool = False) -> list[Response]:
    """Responses that may be chosen: unflagged (by the judge or the static checks), judged
    apart from their own process (unless allowed), not degenerate, not duplicated, not
    contaminated."""
    usable, seen = [], set()
    for r in group:
        key = quality.normalized_code(r.code) + "\0" + "\n".join(r.tests)
        why = None
        if key in seen:
            why = "duplicate response"
        elif r.verdict_flag:
            why = f"judge: {r.verdict_flag.replace('_', ' ')}"
        elif r.hacks:
            why = "reward hack"
        elif r.judged_in_process and not allow_in_process:
            why = "judged in process"
        elif r.degenerate:
            why = f"degenerate: {r.degenerate}"
        elif index is not None and (match := index.match(r.code)):
            why = "contaminated response"
            stats.contamination.append({"instruction_id": r.instruction_id, "where": f"response #{r.index}",
                                        "matched": match})
        seen.add(key)
        if not why and r.judged_in_process:
            stats.responses_flagged["judged in process (allowed)"] += 1
        if why:
            stats.responses_flagged[why] += 1
        else:
            usable.append(r)
    return usable


def _non_empty_failing(group: list[Response]) -> list[Response]:
    """Rejected candidates: failing responses with code in them, each distinct code once
    (flagged failures included: a failing hack is a fine thing to prefer against)."""
    seen: set[str] = set()
    out = []
    for r in group:
        key = quality.normalized_code(r.code)
        if r.passed or not r.code.strip() or r.degenerate == "no code" or key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def _sft_row(i: str, group: list[Response], usable: list[Response], rng: random.Random):
    passing = [r for r in usable if r.passed]
    if not passing:
        return None, "no passing response"
    r = rng.choice(passing)
    return {"prompt": r.prompt, "completion": r.text, "response_index": r.index,
            "tests_passed": r.tests_passed, "tests_total": r.tests_total}, ""


def _dpo_row(i: str, group: list[Response], usable: list[Response], rng: random.Random):
    passing = [r for r in usable if r.passed]
    failing = _non_empty_failing(group)
    if not passing:
        return None, "no passing response"
    if not failing:
        return None, "no failing non-empty response"
    chosen, rejected = rng.choice(passing), rng.choice(failing)
    return _pair(chosen, rejected, lambda r: r.fraction_passed), ""


def _pair(chosen: Response, rejected: Response, score: Callable[[Response], float]) -> dict[str, Any]:
    return {"prompt": chosen.prompt, "chosen": chosen.text, "rejected": rejected.text,
            "chosen_index": chosen.index, "rejected_index": rejected.index,
            "chosen_score": round(score(chosen), 6), "rejected_score": round(score(rejected), 6),
            "chosen_tests": f"{chosen.tests_passed}/{chosen.tests_total}",
            "rejected_tests": f"{rejected.tests_passed}/{rejected.tests_total}"}


def bon_key(r: Response, tie_breaks: Sequence[str]) -> tuple[float, ...]:
    """Higher is better: fraction of tests passed, then the tie-breaks."""
    key = [r.fraction_passed]
    for t in tie_breaks:
        if t == "nonfunctional":
            key.append(sum(r.nonfunctional.values()) / max(1, len(r.nonfunctional)))
        elif t == "mean_logprob":
            key.append(r.mean_logprob if r.mean_logprob is not None else float("-inf"))
        elif t == "shorter":
            key.append(-len(r.code))
    return tuple(key)


def _bon_row(group: list[Response], usable: list[Response], rng: random.Random, settings: PairSettings):
    first_n = [r for r in group if r.index < settings.bon_n]
    if len(first_n) < settings.bon_n:
        return None, f"fewer than {settings.bon_n} responses"
    allowed = {id(r) for r in usable} | {id(r) for r in _non_empty_failing(first_n)}
    best_pool = [r for r in first_n if r in usable]
    worst_pool = [r for r in first_n if id(r) in allowed]
    if not best_pool:
        return None, "no usable response"
    best = max(best_pool, key=lambda r: (bon_key(r, settings.tie_breaks), -r.index))
    worst = min(worst_pool, key=lambda r: (bon_key(r, settings.tie_breaks), -r.index))
    if bon_key(best, settings.tie_breaks) <= bon_key(worst, settings.tie_breaks):
        return None, "best equals worst"
    row = _pair(best, worst, lambda r: r.fraction_passed)
    row["n"] = settings.bon_n
    return row, ""


def _nonfunctional_row(group: list[Response], usable: list[Response], rng: random.Random, dimension: str,
                       settings: PairSettings):
    """Chosen: the best-scored passing response.  Rejected: the worst-scored other passing one
    when the margin holds (a pure quality contrast); otherwise the worst-scored non-empty
    response of any status that clears the margin (``rejected_passed`` says which)."""
    passing = [r for r in usable if r.passed]
    if not passing:
        return None, "no passing response"
    candidates = [*usable, *_non_empty_failing(group)]
    # the judge's ratings when it rated every candidate of the instruction, else static scores
    by_judge = all(r.judge.get(dimension) is not None for r in candidates)

    def score(r: Response) -> float:
        return float(r.judge[dimension]) if by_judge else r.nonfunctional[dimension]

    def key(r: Response) -> tuple[float, float, float]:  # efficiency breaks complexity ties
        return (score(r), -r.cpu_s if dimension == "complexity" else 0.0, rng.random())

    best = max(passing, key=key)
    floor = score(best) - settings.nonfunctional_margin
    for pool in (passing, candidates):
        below = [r for r in pool if r is not best and score(r) <= floor]
        if below:
            worst = min(below, key=key)
            row = _pair(best, worst, score)
            # n: the responses the pair was picked from (BoNBoN's beta on a non-functional objective)
            row.update(dimension=dimension, rejected_passed=worst.passed, scored_by="judge" if by_judge else "static",
                       n=len(group))
            return row, ""
    return None, "no quality margin"


def _balance(out: dict[str, list[dict[str, Any]]], stats: BuildStats, seed: int) -> None:
    """Cut every non-empty non-functional dataset to the smallest one's size (seeded, order
    kept); an empty dimension is reported by its drops, not allowed to empty the others."""
    names = [n for n in out if n.startswith("nonfunctional-") and out[n]]
    if len(names) < 2:
        return
    size = min(len(out[n]) for n in names)
    for n in names:
        rows = out[n]
        if len(rows) > size:
            keep = set(random.Random(f"{seed}:balance:{n}").sample(range(len(rows)), size))
            out[n] = [r for k, r in enumerate(rows) if k in keep]
            stats.datasets[n]["dropped"]["balanced away"] = len(rows) - size
            stats.datasets[n]["rows"] = size
