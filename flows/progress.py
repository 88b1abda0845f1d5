"""A quiet terminal for runs started from the CLI.

A flow run on Ray and vLLM prints hundreds of lines — Ray worker prefixes, vLLM's per-layer
notes, Prefect's server start and stop — around the few a person wants.  Unless ``--verbose``,
:func:`quiet_run` sends everything the process and its children write (file descriptors 1
and 2, so subprocesses and Ray's workers too) to the run's log file in the store
(``runs/<id>/terminal.log``; ``out/logs/<id>.log`` for a remote store) and shows a progress
display instead: the run's items done / total with an ETA, the sub-run in progress (a
sweep's data job, stage or evaluation), the latest training step line, and each failure as it
happens.  Afterwards ``sys.stdout`` / ``sys.stderr`` point at the terminal again for the
result, while the descriptors stay on the log, so shutdown chatter (Prefect's "Stopping
temporary server", vLLM's engine shutdown) stays out of the terminal too.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore, local_path

LOG_NAME = "terminal.log"
STEP_LINE = re.compile(r"\b(?:sft|dpo|bonbon) step \d+/\d+ loss [\d.]+.*?ETA \d+s")
POLL_S = 1.0


def log_path(store_root: str, run_id: str) -> Path:
    """Where the run's terminal output goes: beside its records in a local store."""
    local = local_path(ArtifactStore(store_root).uri(layout.run_record(run_id, LOG_NAME)))
    return Path(local) if local else Path("out", "logs", f"{run_id}.log").resolve()


@contextmanager
def quiet_output(path: Path, verbose: bool) -> Iterator[Console | None]:
    """Send everything this process and its children write to ``path``; yields a console on the
    terminal (None with ``verbose``: nothing is redirected).  Afterwards ``sys.stdout`` and
    ``sys.stderr`` write to the terminal again, the descriptors stay on the log."""
    if verbose:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_out = os.fdopen(os.dup(1), "w", buffering=1)
    terminal_err = os.fdopen(os.dup(2), "w", buffering=1)
    log = open(path, "ab", buffering=0)  # noqa: SIM115 - stays open until the process ends
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    display = Console(file=terminal_err, soft_wrap=True)
    try:
        yield display
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = terminal_out, terminal_err
        display.print(f"log: {path}", highlight=False, markup=False)


@contextmanager
def quiet_run(store_root: str, run_id: str, verbose: bool) -> Iterator[None]:
    """Run the body with the process's output in the run's log and a progress display of the
    run ``run_id`` on the terminal."""
    path = log_path(store_root, run_id)
    with quiet_output(path, verbose) as display:
        if display is None:
            yield
            return
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(store_root, run_id, path, display, stop), name="progress",
                                   daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(timeout=10)


def _latest_step_line(path: Path, offset: int) -> tuple[str | None, int]:
    """The last training step line written to the log since ``offset``, and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None, offset
    matches = STEP_LINE.findall(text)
    return (matches[-1] if matches else None), offset + len(text.encode())


def _current_sub_run(store: ArtifactStore, run_id: str) -> runs.RunSummary | None:
    """The running sub-run of ``run_id`` (a sweep's pieces are runs ``<run_id>-<label>``)."""
    ids = [i for i in map(layout.run_id_of, store.list(layout.RUNS)) if i and i.startswith(f"{run_id}-")]
    running = []
    for sub in ids:
        try:
            summary = runs.summarize(store, sub)
        except Exception:  # noqa: BLE001 - a record being written right now; next poll
            continue
        if summary.state == "running":
            running.append(summary)
    return max(running, key=lambda s: s.updated_at) if running else None


def _watch(store_root: str, run_id: str, path: Path, display: Console, stop: threading.Event) -> None:
    store = ArtifactStore(store_root)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    reported: set[str] = set()
    offset, step = 0, None
    with Progress(*columns, console=display, transient=False) as progress:
        task = progress.add_task(f"run {run_id}: starting (Ray, Prefect)", total=None)
        while True:
            finished = stop.wait(POLL_S)
            try:
                summary = runs.summarize(store, run_id)
            except Exception:  # noqa: BLE001 - no manifest yet, or one being written
                summary = None
            if summary is not None:
                for failure in summary.failed:
                    if failure not in reported:
                        reported.add(failure)
                        progress.console.print(f"[red]failed:[/] {escape(failure)}", highlight=False)
                line, offset = _latest_step_line(path, offset)
                step = line or step
                sub = _current_sub_run(store, run_id) if summary.flow == "alignment-sweep" else None
                now = f"{sub.run_id.removeprefix(run_id + '-')} ({sub.flow} {sub.complete}/{sub.items})" if sub else ""
                detail = " · ".join(x for x in (now, step) if x)
                progress.update(task, total=summary.items, completed=summary.complete,
                                description=f"{summary.flow} {run_id}" + (f" · {escape(detail)}" if detail else ""))
            if finished:
                return
