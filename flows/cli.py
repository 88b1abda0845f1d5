"""The ``codealign`` command line's core: the app, where errors are caught, the consoles, the
options every flow command shares, and running a flow from a command.

Every command exits 2 on bad input with a message naming the file and line (or the option),
and writes its outputs atomically (temporary name, then rename), so a failed run leaves nothing
that looks complete.  The options of the flow commands are the fields of their pydantic configs
(flows/options.py), and `--config FILE.yaml` sets any of them.  The commands themselves are in
``flows/*_commands.py``, by concern, and listed in ``codealign/cli.py``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from codealign.tasks.errors import CodealignError

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


def new_run_id() -> str:
    """A run id chosen before the flow starts, so its log has a place from the first line."""
    import uuid

    return "run-" + uuid.uuid4().hex[:12]


def run_flow_command(flow: str | None, config_or_store: Any, run_id: str | None,
                     ray_address: str | None = None, submit: str | None = None,
                     deployment: str | None = None) -> None:
    """Run flow ``flow`` on a config, or (``flow`` None) resume run ``run_id`` in a store, then
    print its results; with ``submit`` (a Ray dashboard URL), submit the run as a Ray Job
    instead and return (flows/submit.py).  Prefect and Ray are imported only now: commands that
    need neither stay fast.  Quiet unless --verbose (flows/progress.py)."""
    from codealign.flows import registry
    from codealign.flows.progress import quiet_run
    from codealign.flows.runtime import RunFailed

    store_root = config_or_store if flow is None else config_or_store.store
    run_id = run_id or new_run_id()
    if submit:
        from codealign.flows.submit import submit_run

        if flow is None:
            fail("--submit starts a new run; resume a submitted run with --submit on the flow command again")
        job = submit_run(flow, config_or_store, run_id, submit)
        console.print(f"submitted run {run_id} as Ray job {job} ({submit}); follow it: codealign runs --store "
                      f"{store_root}, ray job status {job} --address {submit}", highlight=False)
        print(job)
        return
    try:
        with quiet_run(store_root, run_id, VERBOSE["on"]):
            if flow is None:
                summary = registry.resume(store_root, run_id, ray_address)
            else:
                summary = registry.run(flow, config_or_store, run_id, deployment)
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
SubmitOpt = Annotated[str | None, typer.Option(
    "--submit", help="submit the run as a Ray Job to the cluster whose dashboard is at this URL "
                     "(http://head:8265) and exit; it joins the cluster there with ray_address 'auto'")]
