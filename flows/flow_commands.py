"""The commands that start a flow: each checks its input before any server or cluster starts,
then runs the flow through :func:`codealign.flows.cli.run_flow_command` (quiet, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from codealign.flows.cli import RunIdOpt, SubmitOpt, check_run_id_option, console, fail, out, run_flow_command
from codealign.flows.options import with_config_options
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.preferences.generate import GenerateConfig
from codealign.tasks.training.config import StageConfig


@with_config_options(CheckpointEvalConfig, on_error=fail)
def evaluate_checkpoints_command(
    config: CheckpointEvalConfig,
    run_id: RunIdOpt = None,
    submit: SubmitOpt = None,
) -> None:
    """Evaluate every checkpoint x benchmark x mode (Prefect flow on Ray); resumable."""
    from codealign.tasks.artifacts.checkpoints import discover

    check_run_id_option(run_id)
    discover(config.checkpoints)  # bad paths fail here, before any server or cluster starts
    run_flow_command("evaluate-checkpoints", config, run_id, submit=submit)


@with_config_options(GenerateConfig, on_error=fail)
def generate_command(
    config: GenerateConfig,
    run_id: RunIdOpt = None,
    submit: SubmitOpt = None,
) -> None:
    """Sample n responses per instruction, execute them, and build SFT / DPO / BoNBoN /
    non-functional datasets with quality gates (Prefect flow `generate-preferences` on Ray)."""
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.preferences.generate import load_checked_source

    check_run_id_option(run_id)
    load_checked_source(config)  # bad input fails here, before any server or cluster starts
    resolve_model(config.model)
    if config.judge_model:
        resolve_model(config.judge_model)
    run_flow_command("generate-preferences", config, run_id, submit=submit)


def read_train_config(path: Path) -> dict[str, Any]:
    """A ``--config`` file for ``train``: codealign's settings, or TRL's own YAML (it names
    ``model_name_or_path`` / ``dataset_name``): mapped, and what codealign ignores in it named."""
    from codealign.flows.options import ConfigError, read_config_file
    from codealign.tasks.training.config import TRL_SCRIPT_FIELDS, from_trl_config

    data = read_config_file(path)
    if not set(TRL_SCRIPT_FIELDS) & set(data):
        return data
    try:
        settings, ignored = from_trl_config(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if ignored:
        console.print(f"codealign: {path} is a TRL config; ignored (codealign sets or does not use them): "
                      f"{', '.join(ignored)}", highlight=False)
    return settings


@with_config_options(StageConfig, on_error=fail, read_file=read_train_config)
def train_command(config: StageConfig, run_id: RunIdOpt = None, submit: SubmitOpt = None) -> None:
    """Train one stage (SFT, DPO or BoNBoN; LoRA or full) on Ray Train workers (Prefect flow
    `train`); checkpoints go to the store, merged, with lineage.  Resumable after a kill."""
    from codealign.tasks.artifacts.checkpoints import validate
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.training.data import check_dataset

    check_run_id_option(run_id)
    # bad input fails here, before any server, cluster or worker starts
    check_dataset(config.dataset, config.stage, config.bonbon_n)
    validate(resolve_model(config.model))
    if config.push_to_hub:
        from codealign.tasks.training.publish import check_push_target

        check_push_target(config.push_to_hub)
    run_flow_command("train", config, run_id, submit=submit)


def sweep_command(
    preset: Annotated[str, typer.Option(help="toy (offline, CPU), paper-001, paper-002 or paper-003")] = "toy",
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML overriding the preset's settings "
                                                        "(nested as in the config)")] = None,
    store: Annotated[str | None, typer.Option(help="artifact store (default: the preset's, ./store)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="'auto' or ray://host:port (default: a local Ray)")] = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="print what the sweep will do (pieces, their work, "
                                                        "what the store holds, estimates, the critical path) "
                                                        "and exit")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="with --plan: the plan as JSON")] = False,
    run_id: RunIdOpt = None,
    submit: SubmitOpt = None,
) -> None:
    """Run an alignment sweep (Prefect flow `alignment-sweep`): generate preference data, train
    SFT / DPO / BoNBoN along both pathways, evaluate every checkpoint, write the report."""
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.sweeps.plan import expand

    check_run_id_option(run_id)
    config = load_sweep_config(preset, config_file, store, ray_address)
    plan = expand(config)
    if as_json and not plan_only:
        fail("--json goes with --plan")
    if plan_only and as_json:
        from codealign.tasks.sweeps import forecast

        print(forecast.dumps(forecast.forecast(config, run_id)))
        return
    out.print(f"sweep {config.preset}: {len(config.models)} model pair(s) x {len(config.pathways)} pathway(s); "
              f"{len(plan.data_jobs)} data job(s), {len(plan.stages)} stage(s) "
              f"({', '.join(config.techniques) or 'evaluation only'}); evaluation: "
              f"{', '.join(config.evaluation.benchmarks)} in {', '.join(config.evaluation.modes)} mode",
              highlight=False)
    if plan_only:
        from codealign.tasks.rendering import print_forecast
        from codealign.tasks.sweeps import forecast

        result = forecast.forecast(config, run_id)
        for stage in plan.stages:
            out.print(f"  {stage.label}: {stage.technique} on {stage.dataset}"
                      + (f", from {stage.after}" if stage.after else ", from the starting model"), highlight=False)
        print_forecast(out, result)
        return
    # bad input fails here, before any server or cluster starts
    for pair in config.models:
        for pathway in config.pathways:
            resolve_model(pair.start(pathway))
    run_flow_command("alignment-sweep", config, run_id, submit=submit)


def load_sweep_config(preset: str, config_file: Path | None, store: str | None, ray_address: str | None) -> Any:
    """Preset < YAML file < flags, validated; an error names the preset or file and the field."""
    from pydantic import ValidationError

    from codealign.flows.options import merge_settings, read_config_file
    from codealign.tasks.sweeps.config import SweepConfig, SweepError, read_preset, with_trl_names

    settings = merge_settings(with_trl_names(read_preset(preset)),
                              with_trl_names(read_config_file(config_file) if config_file else {}))
    settings.update({k: v for k, v in (("store", store), ("ray_address", ray_address)) if v is not None})
    try:
        return SweepConfig.model_validate(settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = str(config_file) if config_file else f"preset {preset}"
        raise SweepError(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def run_submitted_command(
    flow: Annotated[str, typer.Argument(help="the flow's name (as its runs record it)")],
    config_file: Annotated[Path, typer.Argument(help="its config, as JSON")],
    run_id: Annotated[str, typer.Option(help="the run's id, given at submission")],
    deployment: Annotated[str | None, typer.Option(help="the Prefect deployment that submitted it")] = None,
) -> None:
    """A submitted run, as its Ray Job runs it (flows/submit.py): not for typing by hand."""
    from codealign.flows import registry
    from codealign.tasks.files import InputError

    entry = registry.FLOWS.get(flow)
    if entry is None:
        raise InputError(f"{flow}: no such flow (flows: {', '.join(registry.FLOWS)})")
    try:
        config = entry.config.model_validate_json(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{config_file}: {exc}") from None
    check_run_id_option(run_id)
    run_flow_command(flow, config, run_id, deployment=deployment)
