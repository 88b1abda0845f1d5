"""Flow runtime and store layout: Prefect's settings are applied before Prefect is imported,
run records are flow-neutral, every path in the store is spelled where layout.py says, and a
sampler call lost with its actor is made again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]


def _prefect_settings_after(script: str) -> list:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                                                            "PREFECT_SERVER_ANALYTICS_ENABLED")}
    probe = script + (
        "\nfrom prefect.settings import get_current_settings\n"
        "s = get_current_settings()\n"
        "print(json.dumps([s.server.ephemeral.startup_timeout_seconds, s.server.analytics_enabled]))\n")
    r = subprocess.run([sys.executable, "-c", "import json\n" + probe], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_prefect_settings_apply_on_the_cli_path_to_a_flow():
    """`codealign evaluate-checkpoints` loads codealign.cli, then the flow module (hence Prefect):
    the longer ephemeral-server start-up and analytics-off must be in force."""
    assert _prefect_settings_after("import codealign.cli\nimport codealign.flows.evaluate_checkpoints") == [180, False]


def test_settings_set_after_prefect_is_imported_are_ignored():
    """Why the order matters (and why the test above can fail): Prefect reads them at import."""
    late = "import prefect\nimport os\nos.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS'] = '180'"
    assert _prefect_settings_after(late)[0] != 180


def test_run_records_live_under_the_store_root(tmp_path, monkeypatch):
    """The default store is ./store, with runs/<id>/ and units/<key>/ directly under it (no
    runs/runs), and command outputs (demo, evaluate) default to ./out, outside it."""
    from codealign.flows import run_commands, sandbox_commands
    from codealign.tasks.artifacts.checkpoints import Checkpoint
    from codealign.tasks.evaluation.units import (
        CheckpointEvalConfig,
        Unit,
        write_manifest,
    )

    monkeypatch.chdir(tmp_path)
    config = CheckpointEvalConfig(checkpoints=["train"])
    assert config.store == f"file://{tmp_path}/store"
    unit = Unit("k1", Checkpoint("file:///c/checkpoint-1", "checkpoint-1", 1, "a" * 64), "toy", "flow")
    write_manifest(ArtifactStore(config.store), "r1", config, [unit], {"flow": "evaluate-checkpoints"})
    assert (tmp_path / "store" / "runs" / "r1" / "manifest.json").is_file()
    assert not (tmp_path / "store" / "runs" / "runs").exists()
    assert unit.artifact("scores.json") == "units/k1/scores.json"
    import inspect

    defaults = {name: {p.name: p.default for p in inspect.signature(fn).parameters.values()}
                for name, fn in (("demo", sandbox_commands.demo_command),
                                 ("evaluate", sandbox_commands.evaluate_command),
                                 ("runs", run_commands.runs_command), ("resume", run_commands.resume_command))}
    assert defaults["demo"]["out_dir"] == Path("out/demo") and defaults["evaluate"]["out_dir"] == Path("out/evaluate")
    assert defaults["runs"]["store"] == defaults["resume"]["store"] == layout.DEFAULT_STORE == "./store"


def test_runs_listing_reads_any_flow(tmp_path):
    """`codealign runs` needs nothing flow-specific: an item is complete when its `done`
    artifact exists, whatever flow wrote the manifest."""
    from codealign.tasks.artifacts.lineage import ArtifactMeta

    store = ArtifactStore(str(tmp_path))
    items = [runs.RunItem("a", "shard 0", layout.unit_artifact("a", "pairs.parquet"), {"shard": 0}),
             runs.RunItem("b", "shard 1", layout.unit_artifact("b", "pairs.parquet"), {"shard": 1})]
    runs.write_manifest(store, runs.Manifest("p1", "generate-preferences", {"n": 8}, items), (), {})
    store.put("units/a/pairs.parquet", b"x", ArtifactMeta("pairs"))
    runs.write_status(store, runs.RunStatus("p1", "failed", failed={"b": "sandbox crashed"}), {})
    (summary,) = runs.list_runs(store)
    assert (summary.run_id, summary.flow, summary.state, summary.items, summary.complete) == (
        "p1", "generate-preferences", "failed", 2, 1)
    assert summary.failed == ["shard 1 (b): sandbox crashed"]
    assert runs.read_manifest(store, "p1").items == items


def test_a_call_in_flight_when_its_sampler_dies_is_made_again_and_a_stage_error_is_not(monkeypatch, capsys):
    import ray

    from codealign.flows import samplers

    calls = []

    class Sampler:  # an actor handle: run.remote(...) gives a reference that ray.get resolves
        class run:  # noqa: N801
            @staticmethod
            def remote(stage, *args, producer):
                calls.append(args)
                return len(calls)

    outcomes = {1: ray.exceptions.ActorDiedError(), 2: ("made", "unit k: computing samples.jsonl\n")}

    def get(ref):
        if isinstance(outcomes[ref], Exception):
            raise outcomes[ref]
        return outcomes[ref]

    monkeypatch.setattr(samplers.ray, "get", get)
    monkeypatch.setattr(samplers.time, "sleep", lambda seconds: None)
    assert samplers.run_on(Sampler(), len, "unit", producer={}) == "made"
    printed = capsys.readouterr().out
    assert len(calls) == 2 and "sampler lost during len (ActorDiedError); calling it again, attempt 2 of 3" in printed
    assert "unit k: computing samples.jsonl" in printed  # the stage's own lines reach the task's log

    calls.clear()
    outcomes.update({1: ray.exceptions.RayTaskError("sample_units", "traceback", ValueError("bad prompt"))})
    with pytest.raises(ValueError, match="bad prompt"):  # the stage's own error: itself, never retried
        samplers.run_on(Sampler(), len, "unit", producer={})
    assert len(calls) == 1

    calls.clear()
    outcomes.update({1: ray.exceptions.ActorDiedError(), 2: ray.exceptions.ActorDiedError(),
                     3: ray.exceptions.ActorDiedError()})
    with pytest.raises(ray.exceptions.ActorDiedError):  # restarts used up: the unit fails, a resume redoes it
        samplers.run_on(Sampler(), len, "unit", producer={})
    assert len(calls) == 3


def test_only_transient_errors_are_retried_and_bad_input_never():
    import botocore.exceptions
    import ray
    from prefect.states import Failed

    from codealign.flows.runtime import retry_transient
    from codealign.tasks.artifacts.store import IntegrityError, MissingArtifact
    from codealign.tasks.errors import is_transient
    from codealign.tasks.files import InputError
    from codealign.tasks.generation.sampling import EngineStartError

    transient = [ConnectionResetError("reset by peer"), TimeoutError("read timed out"), OSError(5, "I/O error"),
                 botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
                 ray.exceptions.ActorDiedError(), ray.exceptions.WorkerCrashedError(),
                 EngineStartError("toy: the vLLM engine did not start")]
    permanent = [InputError("cfg.yaml: line 3: unknown field"), MissingArtifact("units/u/samples.jsonl"),
                 IntegrityError("content sha256 differs"), FileNotFoundError("/no/such/checkpoint"),
                 PermissionError("read-only"), ValueError("max_model_len too large"), KeyError("bug"),
                 AssertionError("bug")]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []
    # Prefect's retry condition sees the user's error inside Ray's wrapper
    wrapped = ray.exceptions.RayTaskError("execute_unit", "traceback", ConnectionResetError("reset"))
    assert retry_transient(None, None, Failed(data=wrapped))
    bad = ray.exceptions.RayTaskError("execute_unit", "traceback", InputError("bad"))
    assert not retry_transient(None, None, Failed(data=bad))


def test_following_a_job_outlasts_an_unreachable_dashboard_and_reports_how_it_ended(monkeypatch):
    import ray.job_submission
    from ray.job_submission import JobStatus

    from codealign.flows import submit

    answers = [ConnectionError("refused"), ConnectionError("refused"), (JobStatus.RUNNING, "step 1\n"),
               (JobStatus.SUCCEEDED, "step 1\nstep 2\n")]

    class Client:  # what JobSubmissionClient answers, one poll at a time
        def __init__(self, address):
            if isinstance(answers[0], Exception):
                raise answers.pop(0)

        def get_job_info(self, job_id):
            self.status, self.logs = answers.pop(0)
            return type("Info", (), {"status": self.status, "message": "boom"})()

        def get_job_logs(self, job_id):
            return self.logs

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", Client)
    monkeypatch.setattr(submit.time, "sleep", lambda s: None)
    lines: list[str] = []
    assert submit.follow_job("http://head:8265", "codealign-r", log=lines.append) == "SUCCEEDED"
    assert lines == ["Ray dashboard http://head:8265 unreachable (ConnectionError); asking again in 5 s"] * 2 + \
        ["step 1", "step 2"]  # each log line once

    answers[:] = [(JobStatus.FAILED, "Traceback ...\n")]
    with pytest.raises(submit.JobFailed, match="codealign-r FAILED: boom"):
        submit.follow_job("http://head:8265", "codealign-r", log=lines.append)

    answers[:] = [ConnectionError("refused")] * 3
    with pytest.raises(ConnectionError):  # unreachable for longer than it waits: the follower fails
        submit.follow_job("http://head:8265", "codealign-r", log=lines.append, reconnect_s=-1)


def test_a_lease_left_by_a_failed_attempt_of_this_process_is_taken_over_at_once(tmp_path):
    import socket
    import time

    from codealign.tasks.artifacts.leases import LEASE_SUFFIX, Lease, produce_once

    store = ArtifactStore(str(tmp_path / "store"))
    key = "units/u/samples.jsonl"
    held = Lease(store, key, ttl=90)
    assert held.try_acquire()
    assert not Lease(store, key, ttl=90).try_acquire()  # held here and now: others wait
    held._stop.set()  # an attempt that failed with the store away: its lease was never deleted
    from codealign.tasks.artifacts import leases

    leases._HELD.discard(held.holder)
    record = json.loads(store.read_object(key + LEASE_SUFFIX))
    assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname()) and record["expires"] > time.time()
    started = time.monotonic()
    from codealign.tasks.artifacts.lineage import ArtifactMeta

    produce_once(store, key, lambda: store.put(key, b"made\n", ArtifactMeta("samples", {"task": "test"})))
    assert time.monotonic() - started < 5 and store.get(key) == b"made\n"
    assert store.read_object(key + LEASE_SUFFIX) is None
