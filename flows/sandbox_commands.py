"""Commands that run in this process, without Prefect or Ray: judge samples (`exec`), score
verdicts (`score`), check the data and the sandbox (`demo`), sample and judge one model
(`evaluate`), build the toy models (`toy build`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from codealign.flows.cli import VERBOSE, console, fail, out
from codealign.flows.options import with_config_options
from codealign.tasks.artifacts import layout
from codealign.tasks.evaluation.settings import EvalSettings, EvaluateConfig
from codealign.tasks.files import read_jsonl, write_json_atomic, write_jsonl_atomic
from codealign.tasks.generation.samples import Sample, read_samples
from codealign.tasks.problems.registry import BENCHMARKS, load_benchmark
from codealign.tasks.rendering import print_scores
from codealign.tasks.sandbox.limits import Limits


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


def toy_build(force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False) -> None:
    """Build toy-base and toy-instruct (cached by content hash) and print their paths as JSON."""
    from codealign.tasks.toy.models import build_toy_models

    paths = build_toy_models(force=force)
    out.print_json(json.dumps({k: str(v) for k, v in paths.items()}))


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
    console.print(f"samples (evalplus' samples.jsonl), generations, verdicts, eval_results and scores in {out_dir}")
    if config.limit:  # evalplus asserts "Missing problems in samples" on a partial file
        full = config.model_copy(update={"limit": None}).select_problems()
        for name, row in scores["benchmarks"].items():
            if row["tasks"] < len(full[name]):
                console.print(f"note: samples.jsonl covers {row['tasks']} of {len(full[name])} {name} tasks "
                              "(--limit); evalplus' evaluator only takes a file that covers every task")
