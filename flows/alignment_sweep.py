"""Prefect flow ``alignment-sweep``: generate → train → evaluate over a grid, as sub-flows
run concurrently where they do not depend on each other (tasks/sweeps/schedule.py).

    expand the grid (tasks/sweeps/plan.py) ─► pieces and what each needs ─► manifest
    fingerprint the starting models (Ray tasks)
    run the pieces, up to max_parallel at once (and no more training stages than the cluster holds):
      data <job>            generate-preferences   (sub-flow; shards keyed by content)
      <stage>               train                  (sub-flow; stage keyed by content), after its
                                                   data job and the stage it starts from
          SFT degraded beyond its threshold ─► that branch's DPO/BoNBoN are skipped (early_stop)
      eval-starts           evaluate-checkpoints   the starting models (+ one run per extra ICL shot count)
      eval-<stage>          evaluate-checkpoints   that stage's checkpoints, as soon as it trained
    ─► sweep.json (with each piece's start and end), results.json, report (markdown + PNG in the
       store, Prefect artifacts)

Every piece is keyed by content in the store, so a re-run with the same inputs reuses every
artifact and a changed input redoes only what depends on it; a piece that fails is recorded
and its dependents are skipped, the others go on, and the sweep fails at the end.  Sub-run ids
are this run's id plus the piece's label: a retry of the sweep resumes each sub-run.  Each piece
is a Prefect task (``sweep-piece``) run in a thread of the schedule; its sub-flow is that task
run's child.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any, ClassVar

import ray
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect_ray import RayTaskRunner

from codealign.flows import runtime
from codealign.flows.evaluate_checkpoints import evaluate_checkpoints
from codealign.flows.generate_preferences import generate_preferences
from codealign.flows.train import train_flow
from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.runs import Manifest, RunItem
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.generation.models import resolve_model
from codealign.tasks.sweeps import compare, forecast, report, schedule
from codealign.tasks.sweeps import plan as sweep_plan
from codealign.tasks.sweeps.config import SweepConfig
from codealign.tasks.sweeps.report import REGRESSION
from codealign.tasks.sweeps.results import (
    SWEEP_RECORD,
    Skipped,
    StartModel,
    SweepRecord,
    TrainedStage,
    evaluated_rows,
)
from codealign.tasks.training import stages as training_stages

FLOW_NAME = "alignment-sweep"


def item_done(run_id: str, label: str) -> str:
    """The sweep's marker of a finished piece (its outcome; a skip counts as decided)."""
    return layout.run_record(run_id, f"items/{label}.json")


def _failure(state: Any) -> str:
    return f"{state.name}: {state.message}"


def _eval_config(config: SweepConfig, checkpoints: list[str], shots: int, modes: list[str]) -> CheckpointEvalConfig:
    settings = config.evaluation.model_dump(exclude={"modes", "checkpoints", "icl_shots"})
    return CheckpointEvalConfig.model_validate({**settings, "shots": shots, "checkpoints": checkpoints, "modes": modes,
                                                "store": config.store, "ray_address": config.ray_address})


@flow(name=FLOW_NAME, task_runner=RayTaskRunner(), persist_result=True, log_prints=True)
def alignment_sweep(config: SweepConfig, run_id: str | None = None) -> dict[str, Any]:
    """Generate data, train every stage of the grid and evaluate every checkpoint, independent
    pieces concurrently (tasks/sweeps/schedule.py); pieces already in the store are reused.
    Fails (after the others ran) if any piece failed."""
    logger, store, run_id, made_by, status = runtime.open_run(FLOW_NAME, config, run_id)
    plan = sweep_plan.expand(config)
    graph = schedule.pieces(plan, bool(config.data.sft_dataset))
    items = [RunItem(p.label, _describe(plan, p), item_done(run_id, p.label)) for p in graph]
    runs.write_manifest(store, Manifest(run_id, FLOW_NAME, config.model_dump(mode="json"), items), (), made_by)
    runs.write_status(store, status, made_by)
    bound = schedule.parallel_bound(config.max_parallel, _stage_workers(config), config.training.use_gpu,
                                    ray.cluster_resources())
    logger.info(f"sweep {run_id}: {len(config.models)} model pair(s), {len(plan.data_jobs)} data job(s), "
                f"{len(plan.stages)} stage(s), {len(graph)} pieces, up to {bound} at once")

    record = SweepRecord(run_id, config.preset)
    with runtime.ray_options():
        starts = {(p.name, pw): runtime.fingerprint_task.submit(resolve_model(p.start(pw)))
                  for p in config.models for pw in config.pathways}
        for (pair, pathway), future in starts.items():
            checkpoint = future.result()
            record.starts.append(StartModel(pair, pathway, checkpoint.uri, checkpoint.sha256))
    pieces = _Pieces(config, plan, record, store, run_id, made_by)

    works: dict[str, dict[str, int]] = {}

    def ended(timing: schedule.PieceTiming) -> None:
        timing.work = works.get(timing.label, {})
        record.pieces.append(asdict(timing))
        store.put_json(layout.run_record(run_id, f"pieces/{timing.label}.json"), asdict(timing),
                       ArtifactMeta("sweep-piece", made_by))
        if timing.state == "failed":
            status.failed[timing.label] = timing.detail
        elif timing.state == "skipped":
            record.skipped.append(Skipped(timing.label, timing.detail))
            logger.info(f"skipping {timing.label}: {timing.detail}")
        else:
            logger.info(f"{timing.label}: done in {timing.seconds:.0f}s")

    def run(piece: schedule.Piece) -> dict[str, Any]:
        outcome = sweep_piece(piece, run_id)
        if "skipped" in outcome:
            raise schedule.PieceSkipped(outcome["skipped"])
        works[piece.label] = outcome.pop("work", {})  # read by ended() once this thread is done
        return outcome

    _Pieces.running[run_id] = pieces
    try:
        outcome = schedule.run_pieces(graph, run, bound, ended)
    finally:
        del _Pieces.running[run_id]
    # plan order, whichever ended first: a serial and a concurrent run record the same
    order = {label: i for i, label in enumerate(p.label for p in graph)}
    record.stages.sort(key=lambda s: order[s.label])
    runs_order = {f"{run_id}-{label}": i for label, i in order.items()}  # an eval piece's sub-run
    record.eval_runs = {shots: sorted(subs, key=lambda sub: runs_order.get(sub, -1))
                        for shots, subs in record.eval_runs.items()}
    path_s, path = schedule.critical_path(graph, {t.label: t.seconds for t in outcome.timings.values()})
    total_s = sum(t.seconds for t in outcome.timings.values())
    record.critical_path = {"seconds": round(path_s, 1), "pieces": path, "sum_seconds": round(total_s, 1)}
    logger.info(f"critical path {path_s:.0f}s ({' -> '.join(path)}); the pieces took {total_s:.0f}s in all")

    record_ref = store.put_json(layout.run_record(run_id, SWEEP_RECORD), record.to_json(),
                                ArtifactMeta("sweep-record", made_by))
    rows, done_runs = evaluated_rows(store, record)
    inputs = (InputRef(record_ref.uri, record_ref.sha256),
              *(InputRef(store.uri(layout.run_record(sub, layout.RESULTS)),
                         store.meta(layout.run_record(sub, layout.RESULTS)).sha256)
                for subs in done_runs.values() for sub in subs))
    try:
        result = runtime.end_run(store, status, rows, inputs, made_by)
        check_regressions(store, status, config, made_by)
        return result
    finally:
        published = report.publish(store, run_id, made_by)
        logger.info(f"report: {published.markdown_uri}")
        publish_artifacts(published)


def check_regressions(store: ArtifactStore, status: runs.RunStatus, config: SweepConfig,
                      made_by: dict[str, Any]) -> None:
    """With ``config.regression``: compare the finished sweep with the previous completed one of
    its deployment or preset; cells that fell beyond noise fail the run (state failed, the cells named in its
    status and report, :class:`RunFailed` raised).  Its results stay stored."""
    if config.regression is None:
        return
    previous = report.previous_run(store, status.run_id, config.preset)
    if previous is None:
        return
    dropped = compare.regressions(compare.compare_runs(store, previous, status.run_id), config.regression)
    if dropped:
        message = f"regression against {previous}: " + "; ".join(compare.describe(c) for c in dropped)
        status.state, status.failed[REGRESSION] = "failed", message
        runs.write_status(store, status, made_by)
        raise runtime.RunFailed(status.run_id, [message])


@task(name="sweep-piece", task_run_name="{piece.label}", cache_policy=NO_CACHE, persist_result=False)
def sweep_piece(piece: schedule.Piece, sweep_run_id: str) -> dict[str, Any]:
    """One piece, as a task of the sweep's flow run (in a thread of the schedule): its sub-flow
    is a child of this task run, so Prefect identifies it by the task run, not by the order in
    which concurrent pieces happened to start (which a retry would not repeat)."""
    try:
        return _Pieces.running[sweep_run_id].run(piece)
    except schedule.PieceSkipped as why:
        return {"skipped": str(why)}


def _describe(plan: sweep_plan.SweepPlan, piece: schedule.Piece) -> str:
    if piece.kind == "data":
        return f"data {piece.label}"
    if piece.kind == "stage":
        return f"{plan.stage(piece.label).technique} {piece.label}"
    return "evaluate the starting models" if piece.label == schedule.STARTS_EVAL else f"evaluate {piece.label[5:]}"


def _stage_workers(config: SweepConfig) -> int:
    return max([config.training.workers,
                *(o.get("workers", config.training.workers) for o in config.stage_overrides.values())])


class _Pieces:
    """What each piece does: its sub-flow, then what it adds to the sweep's record (under a
    lock: pieces end in threads of their own).  A sub-flow that does not complete fails its
    piece."""

    # The sweeps running in this process, by run id.  Prefect ships a task's context to the Ray
    # tasks its sub-flow starts, with the flow's and the task's functions pickled by value (a
    # module's name for them is the Flow/Task object, not the function), globals included: so a
    # piece's task takes only plain parameters and finds the sweep's state (which holds a lock)
    # here, on a class, which pickles by reference.
    running: ClassVar[dict[str, _Pieces]] = {}

    def __init__(self, config: SweepConfig, plan: sweep_plan.SweepPlan, record: SweepRecord, store: Any,
                 run_id: str, made_by: dict[str, Any]):
        self.config, self.plan, self.record, self.store, self.run_id, self.made_by = (
            config, plan, record, store, run_id, made_by)
        self.lock = threading.Lock()

    def run(self, piece: schedule.Piece) -> dict[str, Any]:
        if piece.kind == "data":
            outcome = self.data(piece.label)
        elif piece.kind == "stage":
            outcome = self.stage(self.plan.stage(piece.label))
        elif piece.label == schedule.STARTS_EVAL:
            outcome = self.evaluate_starts()
        else:
            outcome = self.evaluate_stage(piece.label[len("eval-"):])
        self.done(piece.label, outcome)
        return outcome

    def done(self, label: str, outcome: dict[str, Any]) -> None:
        self.store.put_json(item_done(self.run_id, label), outcome, ArtifactMeta("sweep-item", self.made_by))

    def data(self, label: str) -> dict[str, Any]:
        job = next(j for j in self.plan.data_jobs if j.label == label)
        sub = f"{self.run_id}-{label}-data"
        state = generate_preferences(config=sweep_plan.data_config(self.config, job), run_id=sub, return_state=True)
        _completed(state, f"generate-preferences {sub}")
        with self.lock:
            self.record.data_runs[label] = sub
        instructions = forecast.instruction_count(self.config)
        requests = instructions * self.config.data.sampling.n if instructions is not None else None
        return {"run_id": sub, "work": _work("generation_requests", requests)}

    def stage(self, stage: sweep_plan.PlannedStage) -> dict[str, Any]:
        config, record = self.config, self.record
        with self.lock:
            before = record.stage(stage.after) if stage.after else None
            data_ready = bool(config.data.sft_dataset) or stage.data.label in record.data_runs
            data_run = record.data_runs.get(stage.data.label)
        reason = sweep_plan.skip_reason(stage, before, data_ready, config.early_stop)
        if reason:
            if reason.startswith("SFT degraded"):
                self.done(stage.label, {"skipped": reason})  # decided, not failed
            raise schedule.PieceSkipped(reason)
        start = next(s.uri for s in record.starts if (s.pair, s.pathway) == (stage.pair, stage.pathway))
        model = before.checkpoints[-1]["uri"] if before else start
        dataset = config.data.sft_dataset or self.store.uri(layout.run_dataset(data_run, f"{stage.dataset}.parquet"))
        sub = f"{self.run_id}-{stage.label}"
        state = train_flow(config=sweep_plan.stage_config(config, stage, model, dataset), run_id=sub,
                           return_state=True)
        _completed(state, f"train {sub}")
        [row] = runs.read_results(self.store, sub)
        trained = training_stages.read_record(self.store, row["stage_key"])
        with self.lock:
            record.stages.append(TrainedStage(stage.label, stage.technique, stage.pair, stage.pathway,
                                              stage.objective, stage.seed, stage.lora_r, sub, trained.key,
                                              stage.after, trained.checkpoints, trained.degradation))
        settings = {**config.training.model_dump(), **config.stage_overrides.get(stage.technique, {})}
        return {"run_id": sub, "stage_key": trained.key,
                "work": _work("example_epochs", int(trained.dataset.get("n") or 0) * int(settings["num_train_epochs"]))}

    def evaluate_starts(self) -> dict[str, Any]:
        """The starting models, in the sweep's modes; and in Command mode with each extra ICL shot count."""
        evaluation = self.config.evaluation
        runs_by_shots = {evaluation.shots: (f"{self.run_id}-eval-starts", evaluation.modes)}
        for shots in evaluation.icl_shots:
            runs_by_shots.setdefault(shots, (f"{self.run_id}-icl{shots}", ["command"]))
        failed = []
        for shots, (sub, modes) in runs_by_shots.items():
            if not self._evaluate(sub, self.record.start_uris(), shots, modes):
                failed.append(sub)
        if failed:
            raise RuntimeError(f"evaluate-checkpoints {', '.join(failed)} did not complete")
        requests = forecast.eval_requests(self.config, len(self.record.start_uris()), len(runs_by_shots) - 1)[0]
        return {"run_ids": [sub for sub, _ in runs_by_shots.values()], "work": _work("generation_requests", requests)}

    def evaluate_stage(self, label: str) -> dict[str, Any]:
        with self.lock:
            stage = self.record.stage(label)
        assert stage is not None  # the schedule runs this piece after its stage completed
        final_only = self.config.evaluation.checkpoints == "final"
        checkpoints = [c["uri"] for c in (stage.checkpoints[-1:] if final_only else stage.checkpoints)]
        sub = f"{self.run_id}-eval-{label}"
        if not self._evaluate(sub, checkpoints, self.config.evaluation.shots, self.config.evaluation.modes):
            raise RuntimeError(f"evaluate-checkpoints {sub} did not complete")
        requests = forecast.eval_requests(self.config, len(checkpoints))[0]
        return {"run_id": sub, "work": _work("generation_requests", requests)}

    def _evaluate(self, sub: str, checkpoints: list[str], shots: int, modes: list[str]) -> bool:
        with self.lock:  # a partly failed evaluation still has rows for its complete units
            self.record.eval_runs.setdefault(shots, []).append(sub)
        state = evaluate_checkpoints(config=_eval_config(self.config, checkpoints, shots, modes), run_id=sub,
                                     return_state=True)
        return state.is_completed()


def _work(measure: str, amount: int | None) -> dict[str, int]:
    """A piece's work, recorded with its time for later plans' estimates (forecast.py)."""
    return {measure: amount} if amount else {}


def _completed(state: Any, what: str) -> None:
    if not state.is_completed():
        raise RuntimeError(f"{what} {_failure(state)}")


def publish_artifacts(published: report.Published) -> None:
    """The report in the Prefect UI: the Markdown (linking to the store) and every table."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    r = published.report
    links = f"\n\n---\nIn the store: [{published.markdown_uri}]({published.markdown_uri})" + (
        f", plot: [{published.png_uri}]({published.png_uri})" if published.png_uri else "")
    create_markdown_artifact(markdown=r.markdown.replace("![metric vs checkpoint step](steps.png)\n", "") + links,
                             key="alignment-sweep-report", description=f"alignment-sweep {r.run_id}")
    for table in r.tables:
        if table.rows:
            create_table_artifact(table=table.records(), description=table.title)
