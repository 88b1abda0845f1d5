"""Where things live in an artifact store: the one place its paths are spelled.

    <store root>/
        runs/<run_id>/manifest.json   what the run asked for (flow, config, items)
        runs/<run_id>/status.json     state, Prefect flow-run ids, failed items
        runs/<run_id>/results.json    the run's table
        runs/<run_id>/datasets/…      a generate-preferences run's datasets, stats and report
        units/<key>/<artifact>        content-keyed work, shared by every run that needs it
        prefect-results/              Prefect's persisted task and flow results

The store root is a directory (default ``./store``), ``file://`` or ``s3://bucket/prefix``.
Command outputs that are not stored artifacts (``codealign demo``, ``codealign evaluate``) go
to ``./out/<command>`` by default, never into the store.
"""

from __future__ import annotations

DEFAULT_STORE = "./store"
DEFAULT_OUT = "./out"
RUNS = "runs"
UNITS = "units"
PREFECT_RESULTS = "prefect-results"
MANIFEST, STATUS, RESULTS = "manifest.json", "status.json", "results.json"
SWEEP_RECORD = "sweep.json"  # an alignment sweep's record (tasks/sweeps/results.py), beside its manifest
DATASETS = "datasets"
# A training stage's unit (tasks/training/stages.py): its record, its merged checkpoints, Ray Train's state,
# and (LoRA) each checkpoint's adapter on its own.
STAGE_RECORD, STAGE_CHECKPOINTS, TRAIN_STATE = "stage.json", "checkpoints", "train-state"
STAGE_ADAPTERS = "adapters"
RUN_LEASE = "run"  # runs/<id>/run.lease: held by the process running the run (flows/runtime.open_run)
TOMBSTONE_SUFFIX = ".gc.json"  # <checkpoint>.gc.json: what `codealign gc` thinned (tasks/artifacts/gc.py)


def run_record(run_id: str, name: str) -> str:
    return f"{RUNS}/{run_id}/{name}"


def run_dataset(run_id: str, name: str) -> str:
    return f"{RUNS}/{run_id}/{DATASETS}/{name}"


def unit_artifact(key: str, name: str) -> str:
    return f"{UNITS}/{key}/{name}"


def run_id_of(key: str) -> str | None:
    """The run id of a ``runs/<id>/manifest.json`` key (None for any other key)."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == RUNS and parts[2] == MANIFEST else None
