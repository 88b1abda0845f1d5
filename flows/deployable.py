"""The flows deployments run: what a schedule, the Prefect UI or the API starts.

A deployment's flow run starts in a fresh process (a worker's subprocess) with no Ray
connection and no result storage.  These entry flows do what the CLI does around a flow
(:func:`codealign.flows.registry.run`): connect to the Ray address of the config, keep Prefect's
results in the config's store, and run the flow as a sub-flow under a run id taken from the
entry flow run's id — so the UI's Retry of a failed run (same flow-run id) resumes that run,
finished units kept.  ``resume-run`` resumes any run by id, whichever flow made it, like
``codealign resume``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from codealign.flows import registry
from codealign.flows.runtime import check_run_id, default_run_id
from codealign.tasks.artifacts import layout
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.sweeps.config import SweepConfig


@flow(name="run-alignment-sweep", persist_result=False)
def sweep_entry(config: SweepConfig, run_id: str | None = None) -> dict[str, Any]:
    """Generate preference data, train SFT / DPO / BoNBoN along both pathways and evaluate every
    checkpoint (flow `alignment-sweep`); the report is published as this run's artifacts."""
    return registry.run("alignment-sweep", config, check_run_id(run_id or default_run_id()))


@flow(name="run-evaluate-checkpoints", persist_result=False)
def evaluate_entry(config: CheckpointEvalConfig, run_id: str | None = None) -> dict[str, Any]:
    """Evaluate every checkpoint × benchmark × mode (flow `evaluate-checkpoints`)."""
    return registry.run("evaluate-checkpoints", config, check_run_id(run_id or default_run_id()))


@flow(name="resume-run", persist_result=False)
def resume_entry(run_id: str, store: str = layout.DEFAULT_STORE, ray_address: str | None = None) -> dict[str, Any]:
    """Run what ``run_id`` has not completed, whichever flow it belongs to."""
    return registry.resume(store, check_run_id(run_id), ray_address)
