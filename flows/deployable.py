"""The flows deployments run: what a schedule, the Prefect UI or the API starts.

A deployment's flow run starts in a fresh process (a worker's subprocess) with no Ray
connection and no result storage.  These entry flows do what the CLI does around a flow
(:func:`codealign.flows.registry.run`): connect to the Ray address of the config, keep Prefect's
results in the config's store, and run the flow as a sub-flow under a run id taken from the
entry flow run's id — so the UI's Retry of a failed run (same flow-run id) resumes that run,
finished units kept.  ``resume-run`` resumes any run by id, whichever flow made it, like
``codealign resume``.

With ``submit_to`` (a Ray dashboard URL), the entry flow submits the run as a Ray Job instead,
whose driver runs on the cluster's head and joins it with ``auto`` (flows/submit.py), and follows
the job to its end: the deployment's run still reflects the sweep's state (what the UI, its
Retry button and alerts watch) but no long-lived Ray Client connection carries the night's work,
and a dashboard that drops away for a while is asked again.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from codealign.flows import registry
from codealign.flows.runtime import check_run_id, default_run_id
from codealign.tasks.artifacts import layout
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.sweeps.config import SweepConfig


def started_by() -> str | None:
    """The deployment ("flow/name") of this entry flow run; None when it was not started by one."""
    from prefect.runtime import deployment, flow_run

    return f"{flow_run.flow_name}/{deployment.name}" if deployment.name else None


def run_name() -> str:
    """An entry flow run is named by the codealign run it runs, so the UI, its notifications
    and `codealign runs` say the same name."""
    from prefect.runtime import flow_run

    return flow_run.parameters.get("run_id") or default_run_id()


def _run_or_follow(flow_name: str, config: Any, run_id: str, submit_to: str | None) -> dict[str, Any]:
    if not submit_to:
        return registry.run(flow_name, config, run_id, started_by())
    from prefect import get_run_logger

    from codealign.flows.submit import follow_job, submit_run

    logger = get_run_logger()
    job = submit_run(flow_name, config, run_id, submit_to, started_by())
    logger.info(f"run {run_id} submitted as Ray job {job} ({submit_to}); following it")
    status = follow_job(submit_to, job, log=logger.info)
    return {"run_id": run_id, "ray_job": job, "ray_job_status": status}


@flow(name="run-alignment-sweep", flow_run_name=run_name, persist_result=False)
def sweep_entry(config: SweepConfig, run_id: str | None = None, submit_to: str | None = None) -> dict[str, Any]:
    """Generate preference data, train SFT / DPO / BoNBoN along both pathways and evaluate every
    checkpoint (flow `alignment-sweep`); the report is published as this run's artifacts.
    ``submit_to``: a Ray dashboard URL to run it there as a Ray Job, followed to its end."""
    return _run_or_follow("alignment-sweep", config, check_run_id(run_id or default_run_id()), submit_to)


@flow(name="run-evaluate-checkpoints", flow_run_name=run_name, persist_result=False)
def evaluate_entry(config: CheckpointEvalConfig, run_id: str | None = None,
                   submit_to: str | None = None) -> dict[str, Any]:
    """Evaluate every checkpoint × benchmark × mode (flow `evaluate-checkpoints`); ``submit_to``
    as for `run-alignment-sweep`."""
    return _run_or_follow("evaluate-checkpoints", config, check_run_id(run_id or default_run_id()), submit_to)


@flow(name="resume-run", flow_run_name="resume-{run_id}", persist_result=False)
def resume_entry(run_id: str, store: str = layout.DEFAULT_STORE, ray_address: str | None = None) -> dict[str, Any]:
    """Run what ``run_id`` has not completed, whichever flow it belongs to."""
    return registry.resume(store, check_run_id(run_id), ray_address)
