"""Every flow codealign runs, by the name its runs record: how to start one, how to resume one.

A new flow is one module (a ``@flow`` that opens with :func:`codealign.flows.runtime.open_run`)
plus one line here; the CLI (run, resume, the summary line), deployments and ``resume-run``
find it through this table.  The flow modules are imported only when a flow runs, so commands
that start nothing do not load Prefect or Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from codealign.tasks.artifacts.runs import read_manifest
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.files import InputError
from codealign.tasks.preferences.generate import GenerateConfig
from codealign.tasks.rendering import (
    print_preference_stats,
    print_report,
    print_results,
    print_stage,
)
from codealign.tasks.sweeps.config import SweepConfig
from codealign.tasks.training.config import StageConfig


@dataclass(frozen=True)
class FlowEntry:
    name: str  # the Prefect flow name, recorded in every run's manifest
    target: str  # "module:function" of the @flow
    config: type[BaseModel]
    items: str  # what its run's items are, for the summary line ("2/2 units complete")
    printer: Callable[[Console, str, str], None]  # prints a finished run's results: (console, store, run id)

    def flow(self) -> Any:
        module, function = self.target.split(":")
        return getattr(import_module(module), function)


FLOWS: dict[str, FlowEntry] = {e.name: e for e in (
    FlowEntry("evaluate-checkpoints", "codealign.flows.evaluate_checkpoints:evaluate_checkpoints",
              CheckpointEvalConfig, "units", print_results),
    FlowEntry("generate-preferences", "codealign.flows.generate_preferences:generate_preferences",
              GenerateConfig, "shards", print_preference_stats),
    FlowEntry("train", "codealign.flows.train:train_flow", StageConfig, "stages", print_stage),
    FlowEntry("alignment-sweep", "codealign.flows.alignment_sweep:alignment_sweep", SweepConfig,
              "pieces (data jobs, stages, evaluations)", print_report),
)}


def run(name: str, config: BaseModel, run_id: str | None = None, deployment: str | None = None) -> dict[str, Any]:
    """Run flow ``name`` on ``config`` the way the CLI and deployments do (runtime.run_flow);
    ``deployment``: the Prefect deployment ("flow/name") that started it, if one did."""
    from codealign.flows.runtime import run_flow

    return run_flow(FLOWS[name].flow(), config, run_id, deployment)


def resume(store_root: str, run_id: str, ray_address: str | None = None) -> dict[str, Any]:
    """Run ``run_id`` again with the configuration it was started with, by the flow that made it:
    what is complete in the store is kept, the rest runs (new checkpoints join an evaluation)."""
    manifest = read_manifest(ArtifactStore(store_root), run_id)
    entry = FLOWS.get(manifest.flow)
    if entry is None:
        raise InputError(f"run {run_id} was made by flow {manifest.flow!r}, which this version does not have "
                         f"(flows: {', '.join(FLOWS)})")
    # Keys with a leading "_" are facts the run recorded (its model and source hashes), not settings.
    settings = {k: v for k, v in manifest.config.items() if not k.startswith("_")}
    settings.update(store=store_root, **({"ray_address": ray_address} if ray_address else {}))
    return run(entry.name, entry.config.model_validate(settings), run_id)  # validators run again
