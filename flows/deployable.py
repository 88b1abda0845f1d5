"""The flows deployments run: what a schedule, the Prefect UI or the API starts.

A deployment's flow run starts in a fresh process (a worker's subprocess) with no Ray
connection and no result storage.  These entry flows do what the CLI does around a flow
(:func:`codealign.flows.runtime.run_flow`): connect to the Ray address of the config, keep Prefect's
results in the config's store, and run the flow as a sub-flow under a run id taken from the
entry flow run's id — so the UI's Retry of a failed run (same flow-run id) resumes that run,
finished units kept.  ``resume-run`` resumes any run by id, whichever flow made it, like
``codealign resume``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from codealign.flows.runtime import check_run_id, default_run_id, run_flow
from codealign.tasks.artifacts import layout
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.sweeps.config import SweepConfig


@flow(name="run-alignment-sweep", persist_result=False)
def sweep_entry(config: SweepConfig, run_id: str | None = None) -> dict[str, Any]:
    """Generate preference data, train SFT / DPO / BoNBoN along both pathways and evaluate every
    checkpoint (flow `alignment-sweep`); the report is published as this run's artifacts."""
    from codealign.flows.alignment_sweep import alignment_sweep

    return run_flow(alignment_sweep, config, check_run_id(run_id or default_run_id()))


@flow(name="run-evaluate-checkpoints", persist_result=False)
def evaluate_entry(config: CheckpointEvalConfig, run_id: str | None = None) -> dict[str, Any]:
    """Evaluate every checkpoint × benchmark × mode (flow `evaluate-checkpoints`)."""
    from codealign.flows.evaluate_checkpoints import evaluate_checkpoints

    return run_flow(evaluate_checkpoints, config, check_run_id(run_id or default_run_id()))


@flow(name="resume-run", persist_result=False)
def resume_entry(run_id: str, store: str = layout.DEFAULT_STORE, ray_address: str | None = None) -> dict[str, Any]:
    """Run what ``run_id`` has not completed, whichever flow it belongs to."""
    return resume_run(store, check_run_id(run_id), ray_address)


def resume_run(store: str, run_id: str, ray_address: str | None = None) -> dict[str, Any]:
    """The flow that made ``run_id`` (from its manifest), run again over it."""
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore

    made_by = read_manifest(ArtifactStore(store), run_id).flow
    if made_by == "generate-preferences":
        from codealign.flows.generate_preferences import resume
    elif made_by == "train":
        from codealign.flows.train import resume
    elif made_by == "alignment-sweep":
        from codealign.flows.alignment_sweep import resume
    else:
        from codealign.flows.evaluate_checkpoints import resume
    return resume(store, run_id, ray_address)
