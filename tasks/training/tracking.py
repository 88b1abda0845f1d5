"""Experiment tracking: a stage's curves in TensorBoard (default), MLflow or W&B, and each
checkpoint's evaluation on the same run at that checkpoint's step.

Training logs through transformers' own callbacks (``report_to``): every logging step sends the
loss, learning rate, gradient norm and, for DPO / BoNBoN, the reward margins and accuracies.
What codealign adds:
- **TensorBoard**: the event files rank 0 wrote are stored as artifacts under the stage's unit
  (``units/<stage>/tracking/tensorboard/``), so ``tensorboard --logdir <that URI>`` reads them
  from the store, local or S3.  An evaluation of one of the stage's checkpoints adds its own
  event file to that folder (a new artifact: stored ones are never modified), so TensorBoard
  shows it as the same run.
- **MLflow**: the run transformers opened (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``
  from the environment, forwarded to Ray workers) is recorded; evaluations log their pass@k to
  that run id at the checkpoint's step.
- **W&B**: offline unless ``WANDB_MODE`` says otherwise.  Offline runs cannot be resumed, so an
  evaluation logs to a new run linked by ``group`` = the stage key (and the training run's id in
  its config).
- The trackers' run ids go into every checkpoint's lineage (``params.tracking``) and the stage
  record (``tracking.json`` beside it; ``StageRecord.tracking``).

Changing the tracker never changes a stage's key: ``report_to`` is not a result setting.
A tracker that cannot be reached never fails a run: its error is logged and the run goes on.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from typing import Any, Literal

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.lineage import ArtifactMeta
from codealign.tasks.artifacts.store import ArtifactStore

Tracker = Literal["tensorboard", "mlflow", "wandb"]
TRACKING = "tracking"  # units/<stage>/tracking/
TENSORBOARD = f"{TRACKING}/tensorboard"
RUN_IDS = f"{TRACKING}/runs.json"
CHECKPOINT = re.compile(r"^units/(?P<stage>[^/]+)/checkpoints/checkpoint-(?P<step>\d+)$")


def report_to(trackers: list[Tracker]) -> list[str]:
    """transformers' ``report_to`` for the trackers, W&B made offline unless the user chose."""
    if "wandb" in trackers:
        os.environ.setdefault("WANDB_MODE", "offline")
    return list(trackers)


def run_ids(trainer: Any) -> dict[str, Any]:
    """The trackers' runs that transformers' callbacks opened in this process (rank 0)."""
    ids: dict[str, Any] = {}
    from transformers.integrations import MLflowCallback, WandbCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, MLflowCallback) and callback._initialized:
            active = callback._ml_flow.active_run()
            if active is not None:
                ids["mlflow"] = {"run_id": active.info.run_id, "experiment_id": active.info.experiment_id,
                                 "tracking_uri": callback._ml_flow.get_tracking_uri()}
        if isinstance(callback, WandbCallback) and callback._wandb is not None and callback._wandb.run is not None:
            run = callback._wandb.run
            ids["wandb"] = {"run_id": run.id, "project": run.project, "dir": run.dir, "offline": run.offline}
    return ids


def publish(store: ArtifactStore, stage_key: str, output_dir: str, ids: dict[str, Any],
            producer: dict[str, Any]) -> dict[str, Any]:
    """After training, on rank 0: the TensorBoard event files into the store, and the trackers'
    run ids as ``tracking/runs.json``.  Returns what was recorded."""
    recorded = dict(ids)
    events = sorted(glob.glob(os.path.join(output_dir, "runs", "**", "events.out.tfevents.*"), recursive=True))
    for path in events:
        key = layout.unit_artifact(stage_key, f"{TENSORBOARD}/{os.path.basename(path)}")
        if not store.exists(key):
            with open(path, "rb") as f:
                store.put(key, f.read(), ArtifactMeta("tensorboard-events", producer))
    if events:
        recorded["tensorboard"] = {"logdir": store.uri(layout.unit_artifact(stage_key, TENSORBOARD))}
    store.put_json(layout.unit_artifact(stage_key, RUN_IDS), recorded, ArtifactMeta("tracking-runs", producer))
    return recorded


def read_run_ids(store: ArtifactStore, stage_key: str) -> dict[str, Any]:
    key = layout.unit_artifact(stage_key, RUN_IDS)
    return store.get_json(key) if store.exists(key) else {}


def stage_checkpoint(store: ArtifactStore, uri: str) -> tuple[str, int] | None:
    """(stage key, step) of a checkpoint a stage of this store saved; None for any other model."""
    if not uri.startswith(store.root + "/"):
        return None
    match = CHECKPOINT.match(uri[len(store.root) + 1:])
    return (match["stage"], int(match["step"])) if match else None


def log_evaluation(store: ArtifactStore, rows: list[dict[str, Any]], run_id: str, producer: dict[str, Any],
                   warn: Callable[[str], None] = print) -> int:
    """Send each evaluated stage checkpoint's pass@k (per benchmark × mode) to the stage's
    trackers, at the checkpoint's step.  Each evaluation unit is sent once: a marker
    (``tracking/evaluations/<unit>.json``) records it, so a resumed or repeated run that reuses
    the unit adds no duplicate points.  Returns how many values went out."""
    by_stage: dict[str, list[tuple[int, str, float]]] = {}
    units: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        where = stage_checkpoint(store, row.get("checkpoint_uri", ""))
        if where is None or store.exists(_marker(where[0], row["unit"])):
            continue
        stage, step = where
        units.setdefault(stage, []).append(row)
        for name, value in row.items():
            if name.startswith("pass@") and isinstance(value, (int, float)):
                by_stage.setdefault(stage, []).append((step, f"eval/{row['benchmark']}/{row['mode']}/{name}",
                                                       float(value)))
    sent = 0
    for stage, values in by_stage.items():
        ids = read_run_ids(store, stage)
        tag = hashlib.sha256(" ".join(sorted(r["unit"] for r in units[stage])).encode()).hexdigest()[:16]
        for tracker, send in (("tensorboard", _tensorboard), ("mlflow", _mlflow), ("wandb", _wandb)):
            if tracker not in ids:
                continue
            try:
                send(store, stage, ids[tracker], values, f"{run_id}-{tag}", producer)
                sent += len(values)
            except Exception as exc:  # noqa: BLE001 - a tracker that is down never fails the evaluation
                warn(f"tracking: {tracker} did not take the evaluation of stage {stage}: {type(exc).__name__}: {exc}")
        for row in units[stage]:
            store.put_json(_marker(stage, row["unit"]), {k: v for k, v in row.items() if k.startswith("pass@")},
                           ArtifactMeta("tracked-evaluation", producer))
    return sent


def _marker(stage: str, unit: str) -> str:
    return layout.unit_artifact(stage, f"{TRACKING}/evaluations/{unit}.json")


def _tensorboard(store: ArtifactStore, stage: str, _: dict[str, Any], values: list[tuple[int, str, float]],
                 tag: str, producer: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="codealign-tb-") as tmp:
        writer = SummaryWriter(log_dir=tmp)
        for step, name, value in sorted(values):
            writer.add_scalar(name, value, global_step=step, walltime=time.time())
        writer.close()
        [path] = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
        # named by the evaluation, not the clock: the same evaluation is one file, however often sent
        key = layout.unit_artifact(stage, f"{TENSORBOARD}/events.out.tfevents.eval-{tag}")
        with open(path, "rb") as f:
            store.put(key, f.read(), ArtifactMeta("tensorboard-events", producer))


def _mlflow(_: ArtifactStore, __: str, ids: dict[str, Any], values: list[tuple[int, str, float]], ___: str,
            ____: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ids["tracking_uri"])
    for step, name, value in values:
        client.log_metric(ids["run_id"], name.replace("@", "_at_"), value, step=step)


def _wandb(_: ArtifactStore, stage: str, ids: dict[str, Any], values: list[tuple[int, str, float]], run_id: str,
           __: dict[str, Any]) -> None:
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=ids.get("project"), group=stage, job_type="evaluation", name=f"eval-{run_id}",
                     config={"training_run_id": ids["run_id"]}, dir=os.path.dirname(ids.get("dir") or "") or None,
                     reinit="create_new")
    for step, name, value in sorted(values):
        run.log({name: value, "checkpoint_step": step})
    run.finish()


def describe(ids: dict[str, Any]) -> str:
    """One line for a report: where each tracker keeps the stage's run."""
    parts = []
    if tb := ids.get("tensorboard"):
        parts.append(f"TensorBoard `tensorboard --logdir {tb['logdir']}`")
    if ml := ids.get("mlflow"):
        parts.append(f"MLflow run {ml['run_id']} ({ml['tracking_uri']})")
    if wb := ids.get("wandb"):
        parts.append(f"W&B run {wb['run_id']}" + (" (offline: `wandb sync`)" if wb.get("offline") else ""))
    return "; ".join(parts) or "-"


def ids_callback() -> Any:
    """A callback that notes the trackers' run ids once transformers' own callbacks (which come
    first) have opened their runs; ``.trainer`` is set by whoever builds the trainer."""
    from transformers import TrainerCallback

    class TrackerIds(TrainerCallback):
        trainer: Any = None
        ids: dict[str, Any] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero and self.trainer is not None:
                self.ids = run_ids(self.trainer)

    return TrackerIds()
