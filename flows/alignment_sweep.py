"""Prefect flow ``alignment-sweep``: generate → train → evaluate over a grid, as sub-flows.

    expand the grid (tasks/sweeps/plan.py) ─► manifest
    fingerprint the starting models (Ray tasks)
    for each data job:   generate-preferences  (sub-flow; shards keyed by content)
    for each stage:      train                 (sub-flow; stage keyed by content)
        SFT degraded beyond its threshold ─► that branch's DPO/BoNBoN are skipped (early_stop)
    evaluate-checkpoints (sub-flow; units keyed by content): starting models + checkpoints
        (+ one run per extra ICL shot count, starting models only)
    ─► sweep.json, results.json, report (markdown + PNG in the store, Prefect artifacts)

Every piece is keyed by content in the store, so a re-run with the same inputs reuses every
artifact and a changed input redoes only what depends on it; a piece that fails is recorded
and its dependents are skipped, the others go on, and the sweep fails at the end.  Sub-run ids
are this run's id plus the piece's label: a retry of the sweep resumes each sub-run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect_ray import RayTaskRunner

from codealign.flows import runtime
from codealign.flows.evaluate_checkpoints import evaluate_checkpoints
from codealign.flows.generate_preferences import generate_preferences
from codealign.flows.train import train_flow
from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.runs import Manifest, RunItem
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.generation.models import resolve_model
from codealign.tasks.sweeps import plan as sweep_plan
from codealign.tasks.sweeps import report
from codealign.tasks.sweeps.config import SweepConfig
from codealign.tasks.sweeps.results import (
    SWEEP_RECORD,
    Skipped,
    StartModel,
    SweepRecord,
    TrainedStage,
    result_rows,
)
from codealign.tasks.training import stages as training_stages

FLOW_NAME = "alignment-sweep"
EVAL_ITEM = "evaluation"


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
    """Generate data, train every stage of the grid and evaluate every checkpoint; pieces that
    are already in the store are reused.  Fails (after the others ran) if any piece failed."""
    logger, store, run_id, made_by, status = runtime.open_run(FLOW_NAME, config, run_id)
    plan = sweep_plan.expand(config)
    items = [RunItem(j.label, f"data {j.label}", item_done(run_id, j.label)) for j in plan.data_jobs]
    items += [RunItem(s.label, f"{s.technique} {s.label}", item_done(run_id, s.label)) for s in plan.stages]
    items.append(RunItem(EVAL_ITEM, "evaluate checkpoints", item_done(run_id, EVAL_ITEM)))
    runs.write_manifest(store, Manifest(run_id, FLOW_NAME, config.model_dump(mode="json"), items), (), made_by)
    runs.write_status(store, status, made_by)
    logger.info(f"sweep {run_id}: {len(config.models)} model pair(s), {len(plan.data_jobs)} data job(s), "
                f"{len(plan.stages)} stage(s)")

    def done(label: str, outcome: dict[str, Any]) -> None:
        store.put_json(item_done(run_id, label), outcome, ArtifactMeta("sweep-item", made_by))

    record = SweepRecord(run_id, config.preset)
    with runtime.ray_options():
        starts = {(p.name, pw): runtime.fingerprint_task.submit(resolve_model(p.start(pw)))
                  for p in config.models for pw in config.pathways}
        for (pair, pathway), future in starts.items():
            checkpoint = future.result()
            record.starts.append(StartModel(pair, pathway, checkpoint.uri, checkpoint.sha256))

    for job in plan.data_jobs:
        sub = f"{run_id}-{job.label}-data"
        state = generate_preferences(config=sweep_plan.data_config(config, job), run_id=sub, return_state=True)
        if state.is_completed():
            record.data_runs[job.label] = sub
            done(job.label, {"run_id": sub})
        else:
            status.failed[job.label] = f"generate-preferences {sub} {_failure(state)}"

    start_uri = {(s.pair, s.pathway): s.uri for s in record.starts}
    for stage in plan.stages:
        before = record.stage(stage.after) if stage.after else None
        data_ready = bool(config.data.sft_dataset) or stage.data.label in record.data_runs
        reason = sweep_plan.skip_reason(stage, before, data_ready, config.early_stop)
        if reason:
            record.skipped.append(Skipped(stage.label, reason))
            logger.info(f"skipping {stage.label}: {reason}")
            if reason.startswith("SFT degraded"):
                done(stage.label, {"skipped": reason})  # decided, not failed
            continue
        model = before.checkpoints[-1]["uri"] if before else start_uri[(stage.pair, stage.pathway)]
        dataset = config.data.sft_dataset or store.uri(
            layout.run_dataset(record.data_runs[stage.data.label], f"{stage.dataset}.parquet"))
        sub = f"{run_id}-{stage.label}"
        state = train_flow(config=sweep_plan.stage_config(config, stage, model, dataset), run_id=sub,
                           return_state=True)
        if not state.is_completed():
            status.failed[stage.label] = f"train {sub} {_failure(state)}"
            continue
        [row] = runs.read_results(store, sub)
        trained = training_stages.read_record(store, row["stage_key"])
        record.stages.append(TrainedStage(stage.label, stage.technique, stage.pair, stage.pathway, stage.objective,
                                          stage.seed, stage.lora_r, sub, trained.key, stage.after,
                                          trained.checkpoints, trained.degradation))
        done(stage.label, {"run_id": sub, "stage_key": trained.key})

    final_only = config.evaluation.checkpoints == "final"
    evaluations = {config.evaluation.shots: (record.checkpoints_to_evaluate(final_only), config.evaluation.modes)}
    for shots in config.evaluation.icl_shots:
        evaluations.setdefault(shots, ([s.uri for s in record.starts], ["command"]))
    for shots, (checkpoints, modes) in evaluations.items():
        sub = f"{run_id}-eval" if shots == config.evaluation.shots else f"{run_id}-icl{shots}"
        state = evaluate_checkpoints(config=_eval_config(config, checkpoints, shots, modes), run_id=sub,
                                     return_state=True)
        record.eval_runs[shots] = sub  # a partly failed evaluation still has rows for its complete units
        if not state.is_completed():
            status.failed[EVAL_ITEM] = f"evaluate-checkpoints {sub} {_failure(state)}"
    if EVAL_ITEM not in status.failed:
        done(EVAL_ITEM, {"run_ids": record.eval_runs})

    record_ref = store.put_json(layout.run_record(run_id, SWEEP_RECORD), record.to_json(),
                                ArtifactMeta("sweep-record", made_by))
    eval_rows = {shots: runs.read_results(store, sub) for shots, sub in record.eval_runs.items()
                 if store.exists(layout.run_record(sub, layout.RESULTS))}
    rows = result_rows(record, eval_rows)
    inputs = (InputRef(record_ref.uri, record_ref.sha256),
              *(InputRef(store.uri(layout.run_record(sub, layout.RESULTS)),
                         store.meta(layout.run_record(sub, layout.RESULTS)).sha256)
                for shots, sub in record.eval_runs.items() if shots in eval_rows))
    try:
        return runtime.end_run(store, status, rows, inputs, made_by)
    finally:
        published = report.publish(store, run_id, made_by)
        logger.info(f"report: {published.markdown_uri}")
        publish_artifacts(published)


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
