"""The ``codealign`` command line.

Every command exits 2 on bad input with a message naming the file and line (or the option),
and writes its outputs atomically (temporary name, then rename), so a failed run leaves nothing
that looks complete.  The options of `evaluate` and `evaluate-checkpoints` are the fields of
their pydantic configs (flows/options.py), and `--config FILE.yaml` sets any of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from codealign.flows.options import with_config_options
from codealign.tasks.artifacts import layout
from codealign.tasks.errors import CodealignError
from codealign.tasks.evaluation.settings import EvalSettings, EvaluateConfig
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.files import read_jsonl, write_json_atomic, write_jsonl_atomic
from codealign.tasks.generation.samples import Sample, read_samples
from codealign.tasks.preferences.generate import GenerateConfig
from codealign.tasks.problems.registry import BENCHMARKS, load_benchmark
from codealign.tasks.rendering import (
    print_report,
    print_scores,
)
from codealign.tasks.sandbox.limits import Limits
from codealign.tasks.training.config import StageConfig

console = Console(stderr=True, soft_wrap=True)  # never wrap a FILE:LINE message
# Tables fit a terminal; piped into a file or another program they are never folded.
out = Console(width=None if sys.stdout.isatty() else 200)


VERBOSE = {"on": False}  # set by the global --verbose option


class _Commands(TyperGroup):
    """Where every command starts: codealign's error root is caught here, once.  Bad input (a
    :class:`CodealignError`) is one line and its exit code; anything else is a bug, one line and
    exit 1, with the traceback only under ``--verbose``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except CodealignError as exc:
            console.print(f"[bold red]codealign: error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            if VERBOSE["on"]:
                raise
            console.print(f"[bold red]codealign: internal error:[/] {escape(f'{type(exc).__name__}: {exc}')} "
                          "(run with --verbose for the traceback)", highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True)


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show everything flows print (Ray, vLLM, "
                                          "Prefect) instead of a progress display; it is in the run's log either way")]
    = False,
) -> None:
    """codealign: sample, execute, score, train and evaluate code LLMs (see README.md)."""
    VERBOSE["on"] = verbose


def fail(message: str) -> None:
    """Print one error line (never wrapped, never read as markup) and exit 2."""
    console.print(f"[bold red]codealign: error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


@app.command("exec")
def exec_command(
    benchmark: Annotated[str, typer.Option(help=f"one of: {', '.join(BENCHMARKS)}")],
    samples: Annotated[Path, typer.Option(help="samples JSONL (task_id + completion, or task_id + solution)")],
    out_path: Annotated[Path, typer.Option("--out", help="verdicts JSONL to write")],
    workers: Annotated[int | None, typer.Option(help="parallel samples (default: cores)")] = None,
    timeout_s: Annotated[float, typer.Option(help="CPU seconds per sample")] = Limits().cpu_s,
    memory_mb: Annotated[int, typer.Option(help="address space per process, MiB")] = Limits().memory_mb,
    strict_isolation: Annotated[bool, typer.Option(help="refuse to run without namespaces")] = False,
) -> None:
    """Run samples against a benchmark's tests in the sandbox and write one verdict per sample."""
    from codealign.tasks.evaluation.execute import execute

    try:
        problems = load_benchmark(benchmark)
        parsed = read_samples(samples, [p.task_id for p in problems])
        verdicts = execute(problems, parsed, Limits(cpu_s=timeout_s, memory_mb=memory_mb), workers,
                           strict_isolation, progress=sys.stderr.isatty())
    except ValueError as exc:  # bad values outside codealign's errors (which the CLI root catches)
        fail(str(exc))
    write_jsonl_atomic(out_path, (v.to_json() for v in verdicts))
    passed = sum(v.passed for v in verdicts)
    console.print(f"{benchmark}: {passed}/{len(verdicts)} samples passed; verdicts in {out_path}")






@app.command("score")
def score_command(
    verdicts: Annotated[Path, typer.Option(help="verdicts JSONL from `codealign exec`")],
    k: Annotated[str, typer.Option(help="comma-separated k values")] = "1,10,100",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="JSON to write (default: VERDICTS.scores.json)")
    ] = None,
) -> None:
    """Compute pass@k per benchmark and overall; print a table and write JSON."""
    from codealign.tasks.evaluation.scoring import score

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
        if not ks or ks[0] < 1:
            raise ValueError
    except ValueError:
        fail(f"--k must be comma-separated integers >= 1, got {k!r}")
    records = [r for _, r in read_jsonl(verdicts, "verdicts file", required=("task_id", "passed"))]
    scores = score(records, ks)
    target = out_path or verdicts.with_suffix(".scores.json")
    write_json_atomic(target, scores)
    print_scores(out, scores, ks)
    console.print(f"scores written to {target}")


@app.command("demo")
def demo_command(
    out_dir: Annotated[Path, typer.Option("--out", help="where results go")] = Path(layout.DEFAULT_OUT) / "demo",
    workers: Annotated[int | None, typer.Option(help="parallel samples (default: cores)")] = None,
) -> None:
    """Verify every benchmark's canonical solutions, then score the shipped sample file (a check
    of the data and the sandbox; the main job is `codealign sweep`)."""
    from codealign.tasks.evaluation.pipeline import execute_samples, score_verdicts
    from codealign.tasks.problems.multilang import KNOWN_CANONICAL_FAILURES

    counts = {}
    for name in BENCHMARKS:
        settings = EvalSettings(benchmarks=[name], workers=workers)
        problems = settings.select_problems()
        canon = {name: [Sample(p.task_id, 0, p.canonical_completion) for p in problems[name]]}
        verdicts = execute_samples(problems, canon, settings, progress=sys.stderr.isatty())
        known = {v.task_id: KNOWN_CANONICAL_FAILURES[v.task_id] for v in verdicts
                 if not v.passed and v.task_id in KNOWN_CANONICAL_FAILURES}
        counts[name] = {"passed": sum(v.passed for v in verdicts), "total": len(verdicts),
                        "failures": [v.to_json() for v in verdicts if not v.passed and v.task_id not in known],
                        "cannot_pass": known}
        out.print(f"{name} {counts[name]['passed']}/{counts[name]['total']}")
        for v in verdicts:
            if not v.passed:
                why = known.get(v.task_id) or f"{v.status}: {v.detail}"
                out.print(f"  {v.task_id} {'cannot pass' if v.task_id in known else 'FAILED'}: {why}",
                          soft_wrap=True, markup=False)
    write_json_atomic(out_dir / "canonical.json", counts)
    demo_file = Path(__file__).resolve().parent.parent / "tasks" / "data" / "humaneval_demo_samples.jsonl"
    settings = EvalSettings(benchmarks=["humaneval"], ks=[1, 5], workers=workers)
    problems = settings.select_problems()
    samples = {"humaneval": read_samples(demo_file, [p.task_id for p in problems["humaneval"]])}
    verdicts = execute_samples(problems, samples, settings)
    write_jsonl_atomic(out_dir / "demo_verdicts.jsonl", (v.to_json() for v in verdicts))
    scores = score_verdicts(verdicts, settings)
    write_json_atomic(out_dir / "demo_scores.json", scores)
    print_scores(out, scores, settings.ks)
    if any(c["failures"] for c in counts.values()):
        fail(f"some canonical solutions failed; see {out_dir / 'canonical.json'}")
    console.print(f"results in {out_dir}")


toy_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="The offline toy world: synthetic tasks and two tiny local models.")
app.add_typer(toy_app, name="toy")


@toy_app.command("build")
def toy_build(force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False) -> None:
    """Build toy-base and toy-instruct (cached by content hash) and print their paths as JSON."""
    from codealign.tasks.toy.models import build_toy_models

    paths = build_toy_models(force=force)
    out.print_json(json.dumps({k: str(v) for k, v in paths.items()}))


@app.command("evaluate")
@with_config_options(EvaluateConfig, on_error=fail)
def evaluate_command(
    config: EvaluateConfig,
    out_dir: Annotated[Path, typer.Option("--out", help="run directory")] = Path(layout.DEFAULT_OUT) / "evaluate",
) -> None:
    """Sample a model with vLLM on benchmarks, execute, and score pass@k."""
    from codealign.flows.progress import quiet_output
    from codealign.tasks.evaluation.pipeline import evaluate_model
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.generation.sampling import release_engines

    try:
        config = config.model_copy(update={"model": resolve_model(config.model)})
        with quiet_output(out_dir.resolve() / "terminal.log", VERBOSE["on"]):
            try:
                scores = evaluate_model(config, out_dir, progress=VERBOSE["on"] and sys.stderr.isatty())
            finally:
                release_engines()  # the engine core stops now, not in a race with interpreter exit
    except ValueError as exc:  # bad values outside codealign's errors (which the CLI root catches)
        fail(str(exc))
    print_scores(out, scores, config.ks)
    console.print(f"samples, verdicts and scores in {out_dir}")



def new_run_id() -> str:
    """A run id chosen before the flow starts, so its log has a place from the first line."""
    import uuid

    return "run-" + uuid.uuid4().hex[:12]


def _run_flow(flow: str | None, config_or_store: Any, run_id: str | None, ray_address: str | None = None) -> None:
    """Run flow ``flow`` on a config, or (``flow`` None) resume run ``run_id`` in a store, then
    print its results.  Prefect and Ray are imported only now: commands that need neither stay
    fast.  Quiet unless --verbose (flows/progress.py)."""
    from codealign.flows import registry
    from codealign.flows.progress import quiet_run
    from codealign.flows.runtime import RunFailed

    store_root = config_or_store if flow is None else config_or_store.store
    run_id = run_id or new_run_id()
    try:
        with quiet_run(store_root, run_id, VERBOSE["on"]):
            if flow is None:
                summary = registry.resume(store_root, run_id, ray_address)
            else:
                summary = registry.run(flow, config_or_store, run_id)
    except RunFailed as exc:
        console.print(f"[bold red]codealign:[/] {escape(str(exc))}", highlight=False)
        console.print(f"fix the cause, then: codealign resume {exc.run_id} --store {store_root}", highlight=False)
        raise typer.Exit(1) from None
    except ValueError as exc:  # bad values outside codealign's errors (which the CLI root catches)
        fail(str(exc))
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore

    made_by = registry.FLOWS[read_manifest(ArtifactStore(store_root), summary["run_id"]).flow]
    done = (f"run {summary['run_id']}: {summary['complete']}/{summary['units']} {made_by.items} complete; "
            f"results {summary['results']}")
    console.print(done, highlight=False)
    made_by.printer(out, store_root, summary["run_id"])


def check_run_id_option(run_id: str | None) -> None:
    """A bad --run-id fails before any server or cluster starts."""
    from codealign.flows.runtime import check_run_id

    if run_id is not None:
        try:
            check_run_id(run_id)
        except ValueError as exc:
            fail(f"--run-id {exc}")


RunIdOpt = Annotated[str | None, typer.Option(help="name the run (default: a fresh id, run-<12 hex>; "
                                                   "a deployment's default is its flow-run id)")]
StoreOpt = Annotated[str, typer.Option(help="artifact store: directory, file:// or s3://bucket/prefix")]


@app.command("evaluate-checkpoints")
@with_config_options(CheckpointEvalConfig, on_error=fail)
def evaluate_checkpoints_command(
    config: CheckpointEvalConfig,
    run_id: RunIdOpt = None,
) -> None:
    """Evaluate every checkpoint x benchmark x mode (Prefect flow on Ray); resumable."""
    from codealign.tasks.artifacts.checkpoints import discover

    check_run_id_option(run_id)
    discover(config.checkpoints)  # bad paths fail here, before any server or cluster starts
    _run_flow("evaluate-checkpoints", config, run_id)


@app.command("generate")
@with_config_options(GenerateConfig, on_error=fail)
def generate_command(
    config: GenerateConfig,
    run_id: RunIdOpt = None,
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
    _run_flow("generate-preferences", config, run_id)


@app.command("train")
@with_config_options(StageConfig, on_error=fail)
def train_command(config: StageConfig, run_id: RunIdOpt = None) -> None:
    """Train one stage (SFT, DPO or BoNBoN; LoRA or full) on Ray Train workers (Prefect flow
    `train`); checkpoints go to the store, merged, with lineage.  Resumable after a kill."""
    from codealign.tasks.artifacts.checkpoints import validate
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.training.data import check_dataset

    check_run_id_option(run_id)
    # bad input fails here, before any server, cluster or worker starts
    check_dataset(config.dataset, config.stage)
    validate(resolve_model(config.model))
    _run_flow("train", config, run_id)


@app.command("sweep")
def sweep_command(
    preset: Annotated[str, typer.Option(help="toy (offline, CPU), paper-001, paper-002 or paper-003")] = "toy",
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML overriding the preset's settings "
                                                        "(nested as in the config)")] = None,
    store: Annotated[str | None, typer.Option(help="artifact store (default: the preset's, ./store)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="'auto' or ray://host:port (default: a local Ray)")] = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="print the grid and exit")] = False,
    run_id: RunIdOpt = None,
) -> None:
    """Run an alignment sweep (Prefect flow `alignment-sweep`): generate preference data, train
    SFT / DPO / BoNBoN along both pathways, evaluate every checkpoint, write the report."""
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.sweeps.plan import expand

    check_run_id_option(run_id)
    config = load_sweep_config(preset, config_file, store, ray_address)
    plan = expand(config)
    out.print(f"sweep {config.preset}: {len(config.models)} model pair(s) x {len(config.pathways)} pathway(s); "
              f"{len(plan.data_jobs)} data job(s), {len(plan.stages)} stage(s) "
              f"({', '.join(config.techniques) or 'evaluation only'}); evaluation: "
              f"{', '.join(config.evaluation.benchmarks)} in {', '.join(config.evaluation.modes)} mode",
              highlight=False)
    if plan_only:
        for stage in plan.stages:
            out.print(f"  {stage.label}: {stage.technique} on {stage.dataset}"
                      + (f", from {stage.after}" if stage.after else ", from the starting model"), highlight=False)
        return
    # bad input fails here, before any server or cluster starts
    for pair in config.models:
        for pathway in config.pathways:
            resolve_model(pair.start(pathway))
    _run_flow("alignment-sweep", config, run_id)


def load_sweep_config(preset: str, config_file: Path | None, store: str | None, ray_address: str | None) -> Any:
    """Preset < YAML file < flags, validated; an error names the preset or file and the field."""
    from pydantic import ValidationError

    from codealign.flows.options import merge_settings, read_config_file
    from codealign.tasks.sweeps.config import SweepConfig, SweepError, read_preset

    settings = merge_settings(read_preset(preset), read_config_file(config_file) if config_file else {})
    settings.update({k: v for k, v in (("store", store), ("ray_address", ray_address)) if v is not None})
    try:
        return SweepConfig.model_validate(settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = str(config_file) if config_file else f"preset {preset}"
        raise SweepError(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


@app.command("report")
def report_command(
    run_id: Annotated[str, typer.Argument(help="an alignment-sweep run id")],
    store: StoreOpt = layout.DEFAULT_STORE,
) -> None:
    """Rebuild a sweep's report (Markdown + PNG in the store) and print its tables."""
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore, MissingArtifact
    from codealign.tasks.sweeps import report
    from codealign.tasks.sweeps.results import SWEEP_RECORD

    st = ArtifactStore(store)
    try:
        flow = read_manifest(st, run_id).flow
    except MissingArtifact:
        fail(f"no run {run_id!r} in {store}")
    if flow != "alignment-sweep":
        fail(f"run {run_id} is a {flow} run; reports are made for alignment-sweep runs")
    if not st.exists(layout.run_record(run_id, SWEEP_RECORD)):
        fail(f"run {run_id} has not finished yet: `codealign resume {run_id} --store {store}`")
    report.publish(st, run_id, {"flow": "cli", "task": "report"})
    print_report(out, store, run_id)





@app.command("resume")
def resume_command(
    run_id: Annotated[str, typer.Argument(help="a run id from `codealign runs`")],
    store: StoreOpt = layout.DEFAULT_STORE,
    ray_address: Annotated[str | None, typer.Option(help="none: the run's setting")] = None,
) -> None:
    """Run what RUN_ID has not completed (units or shards), whichever flow it belongs to."""
    from codealign.tasks.artifacts.runs import read_manifest
    from codealign.tasks.artifacts.store import ArtifactStore, MissingArtifact

    try:
        read_manifest(ArtifactStore(store), run_id)
    except MissingArtifact:
        fail(f"no run {run_id!r} in {store}")
    _run_flow(None, store, run_id, ray_address)


@app.command("runs")
def runs_command(store: StoreOpt = layout.DEFAULT_STORE) -> None:
    """List runs (of every flow) with their state and complete / failed items."""
    from codealign.tasks.artifacts.runs import list_runs
    from codealign.tasks.artifacts.store import ArtifactStore

    table = Table()
    for col in ("run", "flow", "state", "complete", "failed", "updated"):
        table.add_column(col)
    summaries = list_runs(ArtifactStore(store))
    for r in summaries:
        table.add_row(r.run_id, r.flow, r.state, f"{r.complete}/{r.items}", str(len(r.failed)), r.updated_at)
    out.print(table)
    for r in summaries:
        for failure in r.failed:
            out.print(f"{r.run_id}: failed: {failure}", highlight=False, markup=False, soft_wrap=True)


@app.command("lineage")
def lineage_command(
    target: Annotated[str, typer.Argument(help="a run id or an artifact URI")],
    store: StoreOpt = layout.DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable tree")] = False,
) -> None:
    """Print what produced a run's results (or any artifact), down to samples and checkpoints."""
    from codealign.tasks.artifacts.lineage import lineage_tree, render_tree
    from codealign.tasks.artifacts.store import ArtifactStore

    st = ArtifactStore(store)
    key = target if "://" in target else layout.run_record(target, layout.RESULTS)
    try:
        found = st.exists(key)
    except ValueError as exc:  # a URI outside this store
        fail(f"{exc}; pass --store with the store that holds it")
    if not found:
        if "://" not in target and st.exists(layout.run_record(target, layout.MANIFEST)):
            fail(f"run {target} has no results yet (interrupted?): `codealign resume {target} --store {st.root}`")
        fail(f"{target}: no such run or artifact in {st.root}")
    tree = lineage_tree(st, st.uri(key) if "://" not in key else key)
    if as_json:
        out.print_json(json.dumps(tree.to_json()))
    else:
        out.print(render_tree(tree), highlight=False, markup=False, soft_wrap=True)

