"""SIGKILL a flow's process mid-run, then resume it: what the evaluation and preference flows
must both survive (the training flow's stage checkpoints are checked in test_train_flow)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from servers import sigkill_when

from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.store import ArtifactStore


def kill_then_resume(command: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool], what: str,
                     store_dir: Path, ray_address: str, items: int) -> ArtifactStore:
    """Kill the run once ``ready()``; it must be recorded as running with some but not all of its
    ``items`` complete.  Resume it: it completes, and every artifact made before the kill is kept
    as it was (not redone).  Returns the store, for the flow's own checks."""
    from codealign.flows import registry

    run_id = command[command.index("--run-id") + 1]
    sigkill_when(command, env, cwd, ready, what)
    store = ArtifactStore(str(store_dir))
    before = runs.summarize(store, run_id)
    assert before.state == "running" and 1 <= before.complete < before.items == items, before
    kept = {key: store.meta(key) for key in store.list("units")}

    registry.resume(store.root, run_id, ray_address)
    after = runs.summarize(store, run_id)
    assert (after.state, after.complete, after.failed) == ("completed", items, [])
    for key, meta in kept.items():
        assert store.meta(key) == meta, key
    return store
