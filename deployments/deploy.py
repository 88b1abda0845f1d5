"""When and where codealign's flows run: the deployments, on a process work pool.

    python -m deployments.deploy [--pool codealign] [--store URI] [--ray-address ADDR]
                                 [--cron "0 2 * * *"] [--timezone Europe/Berlin] [--preset toy]

creates (or updates) four deployments on the Prefect server ``PREFECT_API_URL`` names:

    run-alignment-sweep/nightly      the preset's sweep on a cron schedule (time zone given)
    run-alignment-sweep/on-demand    a sweep started from the UI form or the API
    run-evaluate-checkpoints/on-demand
    resume-run/by-id                 resume a failed run of any flow by its run id

Their entry flows (flows/deployable.py) connect to the Ray address and keep results in the
store of the config, exactly as the CLI does.  The worker imports them by module path from the
environment codealign is installed in (``pip install -e .``): no image, no code upload; on a
cluster, the workers' image or virtualenv has codealign installed.  Store credentials are never
deployment parameters: the worker's environment (or an instance/IRSA role) provides them.
"""

from __future__ import annotations

import argparse
from typing import Any
from uuid import UUID

from prefect import deploy
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from flows.deployable import evaluate_entry, resume_entry, sweep_entry
from tasks.artifacts import layout
from tasks.artifacts.store import to_uri
from tasks.errors import CodealignError
from tasks.sweeps.config import read_preset

POOL = "codealign"
NIGHTLY_CRON = "0 2 * * *"


class DeployError(CodealignError, RuntimeError):
    """The server refused a deployment; Prefect printed which and why."""


def sweep_parameters(preset: str, store: str, ray_address: str | None) -> dict[str, Any]:
    """The preset as the deployment's default form values (editable in the UI)."""
    return {"config": {**read_preset(preset), "store": to_uri(store), "ray_address": ray_address}}


def deploy_all(pool: str = POOL, store: str = layout.DEFAULT_STORE, ray_address: str | None = None,
               cron: str = NIGHTLY_CRON, timezone: str = "UTC", preset: str = "toy") -> list[UUID]:
    """Create or update every deployment on ``pool``; returns their ids."""
    store = to_uri(store)
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["codealign"]}
    deployments = [
        sweep_entry.to_deployment(
            "nightly", schedules=[Cron(cron, timezone=timezone)], parameters=sweep_parameters(preset, store, ray_address),
            description=f"The {preset} alignment sweep every night ({cron}, {timezone}); nothing new costs seconds.",
            **common),
        sweep_entry.to_deployment(
            "on-demand", parameters=sweep_parameters(preset, store, ray_address),
            description="An alignment sweep from the form: edit the grid, the data, training and evaluation settings.",
            **common),
        evaluate_entry.to_deployment(
            "on-demand", parameters={"config": {"store": store, "ray_address": ray_address}},  # the form asks for the checkpoints
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default=POOL, help="process work pool (created by infra/local_stack.py up)")
    parser.add_argument("--store", default=layout.DEFAULT_STORE, help="artifact store root of the runs")
    parser.add_argument("--ray-address", default=None, help="Ray cluster the runs use (default: a local Ray per run)")
    parser.add_argument("--cron", default=NIGHTLY_CRON, help="nightly sweep schedule")
    parser.add_argument("--timezone", default="UTC", help="time zone of the schedule (IANA name)")
    parser.add_argument("--preset", default="toy", help="sweep preset of the nightly and on-demand sweeps")
    args = parser.parse_args()
    try:
        ids = deploy_all(args.pool, args.store, args.ray_address, args.cron, args.timezone, args.preset)
    except DeployError as exc:
        raise SystemExit(f"deploy: error: {exc}") from None
    print(f"{len(ids)} deployments on work pool {args.pool}")


if __name__ == "__main__":
    main()
