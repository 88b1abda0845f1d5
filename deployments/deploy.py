"""When and where codealign's flows run: the deployments, on a process work pool.

    codealign deploy [--pool codealign] [--store URI] [--ray-address ADDR]
                     [--cron "0 2 * * *"] [--timezone Europe/Berlin] [--preset toy]
                     [--notify BLOCK_TYPE/BLOCK_NAME]

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

With ``--notify``, one Prefect automation (``codealign: nightly failed``) sends a message through
the notification block the user named (``slack-webhook/team-alerts``, ``custom-webhook/…``, any
Prefect notification block, made beforehand in the UI or with ``Block.save``: its URL and secrets
live in the block, never here) whenever a nightly run ends Failed or Crashed — a regression
against the previous night fails the run too (tasks/sweeps/config.py ``regression``).  The message
names the run (entry flow runs are named by their codealign run id), its state message and its
link in the UI.  Deploying again without ``--notify`` removes that automation.
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
NIGHTLY_FAILED = "codealign: nightly failed"  # the automation's name (one per server)
NOTIFY_SUBJECT = "codealign nightly {{ flow_run.name }}: {{ flow_run.state.name }}"
NOTIFY_BODY = """codealign run {{ flow_run.name }} (deployment {{ flow.name }}/{{ deployment.name }}) ended \
{{ flow_run.state.name }}.
{{ flow_run.state.message }}
Flow run: {{ flow_run|ui_url }}
Resume it: codealign resume {{ flow_run.name }} --store STORE, or Retry in the UI."""


class DeployError(CodealignError, RuntimeError):
    """The server refused a deployment; Prefect printed which and why."""

    exit_code = 1


def sweep_parameters(preset: str, store: str, ray_address: str | None) -> dict[str, Any]:
    """The preset as the deployment's default form values (editable in the UI)."""
    return {"config": {**read_preset(preset), "store": to_uri(store), "ray_address": ray_address}}


def deploy_all(pool: str = POOL, store: str = layout.DEFAULT_STORE, ray_address: str | None = None,
               cron: str = NIGHTLY_CRON, timezone: str = "UTC", preset: str = "toy",
               notify: str | None = None) -> list[UUID]:
    """Create or update every deployment on ``pool``; returns their ids.  (Prefect and the flows
    are imported here, not with the module: every ``codealign`` command loads this one.)"""
    from prefect import deploy
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from codealign.flows.deployable import evaluate_entry, resume_entry, sweep_entry

    store = to_uri(store)
    block_id = notification_block(notify) if notify else None  # a wrong name fails before anything changes
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
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("run-alignment-sweep/nightly").id
    alert_on_failure(nightly, block_id, store)
    return ids


def notification_block(name: str) -> UUID:
    """The id of notification block ``block-type-slug/block-name`` on the server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    slug, _, block = name.partition("/")
    if not slug or not block:
        raise DeployError(f"--notify {name!r}: give the block as BLOCK_TYPE/BLOCK_NAME, e.g. slack-webhook/team-alerts "
                          "(`prefect block ls` lists them)")
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(block, slug)
        except ObjectNotFound:
            raise DeployError(f"--notify {name!r}: no {slug} block named {block!r} on this server (create it in "
                              "the UI's Blocks page or with Block.save; `prefect block ls` lists them)") from None
        if "notify" not in (document.block_schema.capabilities if document.block_schema else []):
            raise DeployError(f"--notify {name!r}: a {slug} block cannot send notifications")
    return document.id


def alert_on_failure(nightly: UUID, block_id: UUID | None, store: str) -> None:
    """The automation that tells people about a nightly run that Failed or Crashed (``block_id``
    None: there is none).  Deploying is declarative: the automation is replaced, not added to."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(NIGHTLY_FAILED):
            client.delete_automation(old.id)
    if block_id is None:
        return
    Automation(
        name=NIGHTLY_FAILED, description="A nightly alignment sweep ended Failed or Crashed (a regression included).",
        trigger=EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                             match={"prefect.resource.id": "prefect.flow-run.*"},
                             match_related={"prefect.resource.id": f"prefect.deployment.{nightly}"},
                             posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=[SendNotification(block_document_id=block_id, subject=NOTIFY_SUBJECT,
                                  body=NOTIFY_BODY.replace("STORE", store))],
    ).create()


def deploy_command(
    pool: Annotated[str, typer.Option(help="process work pool (`codealign stack up` creates one)")] = POOL,
    store: Annotated[str, typer.Option(help="artifact store root of the runs")] = layout.DEFAULT_STORE,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster the runs use (default: a local Ray per run)")]
    = None,
    cron: Annotated[str, typer.Option(help="nightly sweep schedule")] = NIGHTLY_CRON,
    timezone: Annotated[str, typer.Option(help="time zone of the schedule (IANA name)")] = "UTC",
    preset: Annotated[str, typer.Option(help="sweep preset of the nightly and on-demand sweeps")] = "toy",
    notify: Annotated[str | None, typer.Option(
        help="notification block (BLOCK_TYPE/BLOCK_NAME, e.g. slack-webhook/team-alerts) told of every nightly "
             "run that fails or crashes")] = None,
) -> None:
    """Create or update the deployments (nightly and on-demand sweeps, evaluation, resume-by-id) on
    the Prefect server PREFECT_API_URL names, and the automation that alerts on a failed nightly."""
    ids = deploy_all(pool, store, ray_address, cron, timezone, preset, notify)
    print(f"{len(ids)} deployments on work pool {pool}"
          + (f"; a failed or crashed nightly run notifies {notify}" if notify else "; no notification (--notify)"))
