"""What a sweep run records (``runs/<id>/sweep.json``) and its results table.

The sweep's own record says, for every planned piece, which sub-run made it and what came out:
the data runs, each stage's key, checkpoints and degradation check, the stages skipped and why,
the starting models' fingerprints and the evaluation runs.  Its results table joins that with
the evaluation results by checkpoint content (sha256): one row per evaluated model ×
benchmark × mode (× ICL shots), labelled with pair, pathway, objective, technique and step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore

SWEEP_RECORD = layout.SWEEP_RECORD


@dataclass
class StartModel:
    pair: str
    pathway: str
    uri: str
    sha256: str


@dataclass
class TrainedStage:
    label: str
    technique: str
    pair: str
    pathway: str
    objective: str
    seed: int
    lora_r: int
    run_id: str
    stage_key: str
    after: str | None
    checkpoints: list[dict[str, Any]]  # {step, uri, sha256}, in step order
    degradation: dict[str, Any] | None = None


@dataclass
class Skipped:
    label: str
    reason: str


@dataclass
class SweepRecord:
    run_id: str
    preset: str | None
    data_runs: dict[str, str] = field(default_factory=dict)  # data job label -> generate-preferences run id
    starts: list[StartModel] = field(default_factory=list)
    stages: list[TrainedStage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # ICL shots -> evaluate-checkpoints run ids (the starting models' run, then one per stage)
    eval_runs: dict[int, list[str]] = field(default_factory=dict)
    pieces: list[dict[str, Any]] = field(default_factory=list)  # schedule.PieceTiming of each piece, as it ended
    # {"seconds", "pieces", "sum_seconds"}: the longest chain of dependent pieces against all pieces' time
    critical_path: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "eval_runs": {str(k): v for k, v in self.eval_runs.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepRecord:
        # records written before evaluation ran per branch hold one run id per shot count
        eval_runs = {int(k): [v] if isinstance(v, str) else list(v) for k, v in data["eval_runs"].items()}
        return cls(data["run_id"], data.get("preset"), data["data_runs"], [StartModel(**s) for s in data["starts"]],
                   [TrainedStage(**s) for s in data["stages"]], [Skipped(**s) for s in data["skipped"]],
                   eval_runs, data.get("pieces", []), data.get("critical_path"))

    def all_eval_runs(self) -> list[str]:
        return [run for runs in self.eval_runs.values() for run in runs]

    def stage(self, label: str) -> TrainedStage | None:
        return next((s for s in self.stages if s.label == label), None)

    def start_uris(self) -> list[str]:
        return list(dict.fromkeys(s.uri for s in self.starts))


def read_record(store: ArtifactStore, run_id: str) -> SweepRecord:
    return SweepRecord.from_json(store.get_json(layout.run_record(run_id, SWEEP_RECORD)))


def _models(record: SweepRecord) -> dict[str, list[dict[str, Any]]]:
    """sha256 -> what that checkpoint is in the sweep (a content can be several things)."""
    by_sha: dict[str, list[dict[str, Any]]] = {}
    for s in record.starts:
        by_sha.setdefault(s.sha256, []).append(
            {"pair": s.pair, "pathway": s.pathway, "objective": None, "technique": "base", "stage": None, "seed": None,
             "lora_r": None, "step": 0, "pathway_step": 0, "final": True})
    for st in record.stages:
        before = record.stage(st.after) if st.after else None
        offset = before.checkpoints[-1]["step"] if before and before.checkpoints else 0
        for i, c in enumerate(st.checkpoints):
            by_sha.setdefault(c["sha256"], []).append(
                {"pair": st.pair, "pathway": st.pathway, "objective": st.objective, "technique": st.technique,
                 "stage": st.label, "seed": st.seed, "lora_r": st.lora_r, "step": c["step"],
                 "pathway_step": offset + c["step"], "final": i == len(st.checkpoints) - 1})
    return by_sha


def result_rows(record: SweepRecord, eval_rows: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (sweep model, benchmark, mode, shots) with its pass@k, from the evaluation runs'
    rows (keyed by ICL shots) joined on checkpoint content."""
    by_sha = _models(record)
    rows = []
    for shots, evaluated in sorted(eval_rows.items()):
        for r in evaluated:
            for what in by_sha.get(r["checkpoint_sha256"], []):
                if shots and what["technique"] != "base":
                    continue  # ICL rows are for the starting models
                rows.append({**what, "shots": shots, "benchmark": r["benchmark"], "mode": r["mode"],
                             "checkpoint_sha256": r["checkpoint_sha256"], "unit": r.get("unit"),
                             **{k: v for k, v in r.items() if k.startswith("pass@") or k == "failures"}})
    return rows


def evaluated_rows(store: ArtifactStore, record: SweepRecord) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    """The sweep's result rows (:func:`result_rows`) from its evaluation runs that finished, and
    those runs (keyed by ICL shots)."""
    done = {shots: [sub for sub in subs if store.exists(layout.run_record(sub, layout.RESULTS))]
            for shots, subs in record.eval_runs.items()}
    eval_rows = {shots: [row for sub in subs for row in runs.read_results(store, sub)]
                 for shots, subs in done.items() if subs}
    return result_rows(record, eval_rows), done
