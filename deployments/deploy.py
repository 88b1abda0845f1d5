"""When and where codealign's flows run: the deployments, on a process work pool.

    codealign deploy [--pool codealign] [--store URI] [--ray-address ADDR]
                     [--cron "0 2 * * *"] [--timezone Europe/Berlin] [--preset toy]

creates (or updates) four deployments on the Prefect server ``PREFECT_API_URL`` names:

    run-alignment-sweep/nightly      the preset's sweep on a cron schedule (time zone given)
    run-alignment-sweep/on-demand    a sweep started from the UI form or the API
    run-evaluate-checkpoints/on-demand
    resume-run/by-id                 resume a failed run of any flow by its run id

Their entry flows (flows/deployable.py) connect to the Ray address and keep results in the
store of the config, exactly as the CLI does.  The worker imports them by module path from the
environment codealign is installed in (``pip install codealign`` or ``pip install -e .``): no
image, no code upload; on a cluster, the workers' image or virtualenv has codealign installed.
Deployments registered before the package took its one import name (``codealign.*``) point at
``flows.deployable``: running ``codealign deploy`` again re-registers them under the new name.
Store credentials are never deployment parameters: the worker's environment (or an instance/IRSA role) provides them.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import typer

from codealign.tasks.artifacts import layout
from codealign.tasks.artifacts.store import to_uri
from codealign.tasks.errors import CodealignError
from codealign.tasks.sweeps.config import read_preset

POOL = "codealign"
NIGHTLY_CRON = "0 2 * * *"


class DeployError(CodealignError, RuntimeError):
    """The server refused a deployment; Prefect printed which and why."""

    exit_code = 1


def sweep_parameters(preset: str, store: str, ray_address: str | None) -> dict[str, Any]:
    """The preset as the deployment's default form values (editable in the UI)."""
    return {"config": {**read_preset(preset), "store": to_uri(store), "ray_address": ray_address}}


def deploy_all(pool: str = POOL, store: str = layout.DEFAULT_STORE, ray_address: str | None = None,
               cron: str = NIGHTLY_CRON, timezone: str = "UTC", preset: str = "toy") -> list[UUID]:
    """Create or update every deployment on ``pool``; returns their ids.  (Prefect and the flows
    are imported here, not with the module: every ``codealign`` command loads this one.)"""
    from prefect import deploy
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from codealign.flows.deployable import evaluate_entry, resume_entry, sweep_entry

    store = to_uri(store)
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["codealign"]}
    deployments = [
        sweep_entry.to_deployment(
            "nightly", schedules=[Cron(cron, timezone=timezone)],
            parameters=sweep_parameters(preset, store, ray_address),
            # two nights never overlap: a night still running when the next is due makes it wait
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="ENQUEUE"),
            description=f"The {preset} alignment sweep every night ({cron}, {timezone}); nothing new costs seconds.",
            **common),
        sweep_entry.to_deployment(
            "on-demand", parameters=sweep_parameters(preset, store, ray_address),
            description="An alignment sweep from the form: edit the grid, the data, training and evaluation settings.",
            **common),
        evaluate_entry.to_deployment(
            # the form asks for the checkpoints
            "on-demand", parameters={"config": {"store": store, "ray_address": ray_address}},
            description="Evaluate checkpoints (a training output directory or checkpoint URIs) on benchmarks x modes.",
            **common),
        resume_entry.to_deployment(
            "by-id", parameters={"store": store, "ray_address": ray_address},
            description="Resume a failed run of any flow by its run id (see `codealign runs`).", **common),
    ]
    ids = deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False,
                 ignore_warnings=True)
    if len(ids) != len(deployments):
        raise DeployError(f"{len(deployments) - len(ids)} of {len(deployments)} deployments were refused (see above)")
    return ids


def deploy_command(
    pool: Annotated[str, typer.Option(help="process work pool (`codealign stack up` creates one)")] = POOL,
    store: Annotated[str, typer.Option(help="artifact store root of the runs")] = layout.DEFAULT_STORE,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster the runs use (default: a local Ray per run)")]
    = None,
    cron: Annotated[str, typer.Option(help="nightly sweep schedule")] = NIGHTLY_CRON,
    timezone: Annotated[str, typer.Option(help="time zone of the schedule (IANA name)")] = "UTC",
    preset: Annotated[str, typer.Option(help="sweep preset of the nightly and on-demand sweeps")] = "toy",
) -> None:
    """Create or update the deployments (nightly and on-demand sweeps, evaluation, resume-by-id) on
    the Prefect server PREFECT_API_URL names."""
    ids = deploy_all(pool, store, ray_address, cron, timezone, preset)
    print(f"{len(ids)} deployments on work pool {pool}")
