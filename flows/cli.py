"""The ``codealign`` command line.

Every command exits 2 on bad input with a message naming the file and line, and writes its
outputs atomically (temporary name, then rename), so a failed run leaves nothing that looks
complete.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.benchmarks import BENCHMARKS, DataFileError, load_benchmark
from tasks.samples import InputError, Sample, read_samples, write_json_atomic, write_jsonl_atomic
from tasks.sandbox.limits import Limits

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="codealign: sample, execute, score and evaluate code LLMs (see README.md).")
console = Console(stderr=True, soft_wrap=True)  # never wrap a FILE:LINE message
out = Console()


def _fail(message: str) -> None:
    console.print(f"[bold red]codealign: error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        _fail(f"--k must be comma-separated integers, got {text!r}")
    if not ks or ks[0] < 1:
        _fail(f"--k values must be >= 1, got {text!r}")
    return ks


def _parse_benchmarks(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    for name in names:
        if name not in BENCHMARKS:
            _fail(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return names


# Options shared by `evaluate` and `evaluate-checkpoints` (the parameter name is the flag).
BenchmarksOpt = Annotated[str, typer.Option(help="comma-separated benchmark names")]
SamplesOpt = Annotated[int, typer.Option(help="samples per problem")]
KOpt = Annotated[str, typer.Option(help="comma-separated k for pass@k")]
TemperatureOpt = Annotated[float, typer.Option()]
MaxTokensOpt = Annotated[int, typer.Option()]
SeedOpt = Annotated[int, typer.Option()]
LimitOpt = Annotated[Optional[int], typer.Option(help="first N problems of each benchmark")]
MaxModelLenOpt = Annotated[Optional[int], typer.Option(help="vLLM context length")]


@app.command("exec")
def exec_command(
    benchmark: Annotated[str, typer.Option(help=f"one of: {', '.join(BENCHMARKS)}")],
    samples: Annotated[Path, typer.Option(help="samples JSONL (task_id + completion, or task_id + solution)")],
    out_path: Annotated[Path, typer.Option("--out", help="verdicts JSONL to write")],
    workers: Annotated[Optional[int], typer.Option(help="parallel samples (default: cores)")] = None,
    timeout_s: Annotated[float, typer.Option(help="CPU seconds per sample")] = Limits().cpu_s,
    memory_mb: Annotated[int, typer.Option(help="address space per process, MiB")] = Limits().memory_mb,
    strict_isolation: Annotated[bool, typer.Option(help="refuse to run without namespaces")] = False,
) -> None:
    """Run samples against a benchmark's tests in the sandbox and write one verdict per sample."""
    from tasks.execute import execute
    from tasks.sandbox.pool import IsolationUnavailable

    try:
        problems = load_benchmark(benchmark)
        parsed = read_samples(samples, [p.task_id for p in problems])
        verdicts = execute(problems, parsed, Limits(cpu_s=timeout_s, memory_mb=memory_mb), workers,
                           strict_isolation, progress=sys.stderr.isatty())
    except (InputError, DataFileError, ValueError, IsolationUnavailable) as exc:
        _fail(str(exc))
    write_jsonl_atomic(out_path, (v.to_json() for v in verdicts))
    passed = sum(v.passed for v in verdicts)
    console.print(f"{benchmark}: {passed}/{len(verdicts)} samples passed; verdicts in {out_path}")


def _load_verdicts(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: cannot read verdicts file ({exc})")
    verdicts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})")
        for field in ("task_id", "passed"):
            if not isinstance(record, dict) or field not in record:
                _fail(f"{path}:{lineno}: missing field {field!r}")
        verdicts.append(record)
    return verdicts


def print_scores(scores: dict[str, Any], ks: list[int]) -> None:
    table = Table(title="pass@k")
    for col in ("benchmark", "tasks", "samples", *(f"pass@{k}" for k in ks)):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    rows = list(scores["benchmarks"].items())
    if len(rows) > 1:
        rows.append(("overall", scores["overall"]))
    for name, row in rows:
        table.add_row(name or "-", str(row["tasks"]), str(row["samples"]),
                      *(f"{100 * row[f'pass@{k}']:.1f}" if f"pass@{k}" in row else "-" for k in ks))
    out.print(table)


@app.command("score")
def score_command(
    verdicts: Annotated[Path, typer.Option(help="verdicts JSONL from `codealign exec`")],
    k: Annotated[str, typer.Option(help="comma-separated k values")] = "1,10,100",
    out_path: Annotated[Optional[Path], typer.Option("--out", help="JSON to write (default: VERDICTS.scores.json)")] = None,
) -> None:
    """Compute pass@k per benchmark and overall; print a table and write JSON."""
    from tasks.scoring import score

    ks = _parse_ks(k)
    records = _load_verdicts(verdicts)
    scores = score(records, ks)
    target = out_path or verdicts.with_suffix(".scores.json")
    write_json_atomic(target, scores)
    print_scores(scores, ks)
    console.print(f"scores written to {target}")


@app.command("demo")
def demo_command(
    out_dir: Annotated[Path, typer.Option("--out", help="where results go")] = Path("runs/demo"),
    workers: Annotated[Optional[int], typer.Option(help="parallel samples (default: cores)")] = None,
) -> None:
    """Main job (for now): verify every benchmark's canonical solutions, then score the shipped
    sample file.  Later issues turn this into the alignment sweep."""
    from tasks.execute import execute
    from tasks.scoring import score

    try:
        counts = {}
        for name in BENCHMARKS:
            problems = load_benchmark(name)
            canon = [Sample(p.task_id, 0, p.canonical_completion) for p in problems]
            verdicts = execute(problems, canon, workers=workers, progress=sys.stderr.isatty())
            counts[name] = {"passed": sum(v.passed for v in verdicts), "total": len(verdicts),
                            "failures": [v.to_json() for v in verdicts if not v.passed]}
            out.print(f"{name} {counts[name]['passed']}/{counts[name]['total']}")
        write_json_atomic(out_dir / "canonical.json", counts)
        demo_file = Path(__file__).resolve().parent.parent / "tasks" / "data" / "humaneval_demo_samples.jsonl"
        problems = load_benchmark("humaneval")
        verdicts = execute(problems, read_samples(demo_file, [p.task_id for p in problems]), workers=workers)
    except (InputError, DataFileError) as exc:
        _fail(str(exc))
    write_jsonl_atomic(out_dir / "demo_verdicts.jsonl", (v.to_json() for v in verdicts))
    scores = score(verdicts, [1, 5])
    write_json_atomic(out_dir / "demo_scores.json", scores)
    print_scores(scores, [1, 5])
    if any(c["passed"] != c["total"] for c in counts.values()):
        _fail(f"some canonical solutions failed; see {out_dir / 'canonical.json'}")
    console.print(f"results in {out_dir}")


toy_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="The offline toy world: synthetic tasks and two tiny local models.")
app.add_typer(toy_app, name="toy")
TOY_MODELS = ("toy-base", "toy-instruct")


@toy_app.command("build")
def toy_build(force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False) -> None:
    """Build toy-base and toy-instruct (cached by content hash) and print their paths as JSON."""
    from tasks.toy.models import build_toy_models

    paths = build_toy_models(force=force)
    out.print_json(json.dumps({k: str(v) for k, v in paths.items()}))


def resolve_model(model: str) -> str:
    """`toy-base` / `toy-instruct` name the toy models (built on first use); anything else is a
    local path or a Hugging Face id, passed to vLLM as is."""
    if model in TOY_MODELS:
        from tasks.toy.models import build_toy_models

        return str(build_toy_models()[model])
    return model


@app.command("evaluate")
def evaluate_command(
    model: Annotated[str, typer.Option(help="local path, Hugging Face id, or toy-base / toy-instruct")],
    benchmarks: BenchmarksOpt = "humaneval",
    mode: Annotated[str, typer.Option(help="command (instruction -> code) or flow (completion / infilling)")] = "command",
    n: SamplesOpt = 10,
    k: KOpt = "1,10",
    temperature: TemperatureOpt = 0.2,
    top_p: Annotated[float, typer.Option()] = 0.95,
    max_tokens: MaxTokensOpt = 512,
    seed: SeedOpt = 0,
    shots: Annotated[int, typer.Option(help="in-context demonstrations: 0, 1, 3 or 5 (command mode)")] = 0,
    shots_file: Annotated[Optional[Path], typer.Option(help="JSONL of {instruction, code}; default MBPP prompt split")] = None,
    limit: LimitOpt = None,
    max_model_len: MaxModelLenOpt = None,
    workers: Annotated[Optional[int], typer.Option(help="sandbox workers (default: cores)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/evaluate"),
) -> None:
    """Sample a model with vLLM on benchmarks, execute, and score pass@k."""
    from pydantic import ValidationError

    from tasks.evaluation import EvaluateConfig, evaluate_model
    from tasks.prompts import NoFimTokens
    from tasks.sampling import EngineSettings, SamplingSettings

    ks = _parse_ks(k)
    names = _parse_benchmarks(benchmarks)
    try:
        config = EvaluateConfig(
            model=resolve_model(model), benchmarks=names, mode=mode, ks=ks, limit=limit, workers=workers,
            shots=shots, shots_file=str(shots_file) if shots_file else None,
            sampling=SamplingSettings(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed),
            engine=EngineSettings(max_model_len=max_model_len),
        )
        scores = evaluate_model(config, out_dir, progress=sys.stderr.isatty())
    except ValidationError as exc:
        _fail(f"invalid option: {exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}")
    except (InputError, DataFileError, NoFimTokens, ValueError) as exc:
        _fail(str(exc))
    print_scores(scores, ks)
    console.print(f"samples, verdicts and scores in {out_dir}")


def _prefect_defaults() -> None:
    """Without PREFECT_API_URL, Prefect starts a temporary local server: give it time to start
    on small machines and keep it from phoning home."""
    import os

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def print_results(store_root: str, run_id: str) -> None:
    from tasks.store import ArtifactStore

    rows = ArtifactStore(store_root).get_json(f"runs/{run_id}/results.json")["rows"]
    ks = sorted({key for r in rows for key in r if key.startswith("pass@")}, key=lambda x: int(x[5:]))
    table = Table(title=f"run {run_id}")
    for col in ("checkpoint", "benchmark", "mode", "tasks", "samples", *ks):
        table.add_column(col, justify="right" if col not in ("checkpoint", "benchmark", "mode") else "left")
    for r in rows:
        table.add_row(r["checkpoint"], r["benchmark"], r["mode"], str(r.get("tasks", "")), str(r.get("samples", "")),
                      *(f"{100 * r[k]:.1f}" if k in r else "-" for k in ks))
    out.print(table)


def _run_flow(call: Any, store_root: str) -> None:
    from flows.evaluate_checkpoints import UnitsFailed
    from tasks.checkpoints import CheckpointError
    from tasks.store import IntegrityError, MissingArtifact

    try:
        summary = call()
    except UnitsFailed as exc:
        console.print(f"[bold red]codealign:[/] {escape(str(exc))}", highlight=False)
        console.print(f"fix the cause, then: codealign resume {exc.run_id} --store {store_root}", highlight=False)
        raise typer.Exit(1) from None
    except (CheckpointError, MissingArtifact, IntegrityError, DataFileError) as exc:
        _fail(str(exc))
    print_results(store_root, summary["run_id"])
    console.print(f"run {summary['run_id']}: {summary['complete']}/{summary['units']} units complete; "
                  f"results {summary['results']}", highlight=False)


@app.command("evaluate-checkpoints")
def evaluate_checkpoints_command(
    checkpoints: Annotated[list[str], typer.Option(help="checkpoint dir/URI or a training output dir (repeatable)")],
    store: Annotated[str, typer.Option(help="artifact store: directory, file:// or s3://bucket/prefix")] = "./runs",
    benchmarks: BenchmarksOpt = "humaneval",
    modes: Annotated[str, typer.Option(help="comma-separated: command, flow")] = "command",
    n: SamplesOpt = 10,
    k: KOpt = "1,10",
    temperature: TemperatureOpt = 0.2,
    max_tokens: MaxTokensOpt = 512,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    max_model_len: MaxModelLenOpt = None,
    enforce_eager: Annotated[bool, typer.Option(help="skip vLLM's graph compilation: faster start, slower decoding")] = False,
    workers: Annotated[Optional[int], typer.Option(help="sandbox workers per execute task")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="none: local Ray; 'auto' or ray://host:port")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="name the run (default: from the Prefect flow-run id)")] = None,
) -> None:
    """Evaluate every checkpoint x benchmark x mode (Prefect flow on Ray); resumable."""
    from pydantic import ValidationError

    from tasks.checkpoint_eval import CheckpointEvalConfig

    names = _parse_benchmarks(benchmarks)
    try:
        config = CheckpointEvalConfig(
            checkpoints=checkpoints, store=store, benchmarks=names,
            modes=[m.strip() for m in modes.split(",") if m.strip()], ks=_parse_ks(k),
            sampling={"n": n, "temperature": temperature, "max_tokens": max_tokens, "seed": seed},
            engine={"max_model_len": max_model_len, "enforce_eager": enforce_eager or None}, limit=limit,
            workers=workers, ray_address=ray_address)
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"invalid option {'.'.join(map(str, err['loc']))}: {err['msg']}")
    from flows.evaluate_checkpoints import check_run_id
    from tasks.checkpoints import CheckpointError, discover

    if run_id is not None:
        try:
            check_run_id(run_id)
        except ValueError as exc:
            _fail(f"--run-id {exc}")
    try:
        discover(config.checkpoints)  # bad paths fail here, before any server or cluster starts
    except CheckpointError as exc:
        _fail(str(exc))
    _prefect_defaults()
    from flows.evaluate_checkpoints import run_evaluate_checkpoints

    _run_flow(lambda: run_evaluate_checkpoints(config, run_id), store)


@app.command("resume")
def resume_command(
    run_id: Annotated[str, typer.Argument(help="a run id from `codealign runs`")],
    store: Annotated[str, typer.Option(help="the run's artifact store")] = "./runs",
    ray_address: Annotated[Optional[str], typer.Option(help="none: the run's setting")] = None,
) -> None:
    """Run the units of RUN_ID that are not complete (and any checkpoint that appeared since)."""
    _prefect_defaults()
    from flows.evaluate_checkpoints import resume

    _run_flow(lambda: resume(store, run_id, ray_address), store)


@app.command("runs")
def runs_command(store: Annotated[str, typer.Option(help="artifact store")] = "./runs") -> None:
    """List runs with their state and complete / failed units."""
    from tasks.runs import list_runs
    from tasks.store import ArtifactStore

    table = Table()
    for col in ("run", "state", "complete", "failed", "updated"):
        table.add_column(col)
    summaries = list_runs(ArtifactStore(store))
    for r in summaries:
        table.add_row(r.run_id, r.state, f"{r.complete}/{r.units}", str(len(r.failed)), r.updated_at)
    out.print(table)
    for r in summaries:
        for failure in r.failed:
            out.print(f"{r.run_id}: failed: {failure}", highlight=False, markup=False, soft_wrap=True)


@app.command("lineage")
def lineage_command(
    target: Annotated[str, typer.Argument(help="a run id or an artifact URI")],
    store: Annotated[str, typer.Option(help="artifact store")] = "./runs",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable tree")] = False,
) -> None:
    """Print what produced a run's results (or any artifact), down to samples and checkpoints."""
    from tasks.lineage import lineage_tree, render_tree
    from tasks.store import ArtifactStore

    st = ArtifactStore(store)
    key = target if "://" in target else f"runs/{target}/results.json"
    try:
        found = st.exists(key)
    except ValueError as exc:  # a URI outside this store
        _fail(f"{exc}; pass --store with the store that holds it")
    if not found:
        if "://" not in target and st.exists(f"runs/{target}/manifest.json"):
            _fail(f"run {target} has no results yet (interrupted?): `codealign resume {target} --store {st.root}`")
        _fail(f"{target}: no such run or artifact in {st.root}")
    tree = lineage_tree(st, st.uri(key) if "://" not in key else key)
    if as_json:
        out.print_json(json.dumps(tree.to_json()))
    else:
        out.print(render_tree(tree), highlight=False, markup=False, soft_wrap=True)


if __name__ == "__main__":  # `python -m flows.cli`, as the tests run it
    app()
