"""A flow run submitted as a Ray Job (``codealign <flow command> … --submit DASHBOARD``).

The run then lives on the cluster: its driver is the job's entrypoint on the head node, which
joins the cluster with ``auto`` (never starting a Ray of its own), so neither the submitting
process nor a long-lived Ray Client connection has to stay up for the night.  The job gets the
run's config as a file in its working directory and the submitter's forwarded environment
(:func:`codealign.flows.runtime.forwarded_env`: no secrets, as docs/cluster.md requires, and
``PREFECT_API_URL``), so the Prefect UI and ``codealign runs`` follow the run as they follow any.
Ray keeps the job's logs and status (``ray job status|logs ID``).

The entrypoint's interpreter is ``python`` (what a cluster image puts on PATH) unless
``CODEALIGN_JOB_PYTHON`` names another.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codealign.tasks.errors import CodealignError

CONFIG_FILE = "codealign-config.json"
AGENT_WAIT_S = 120.0  # how long a submission waits for the head's job agent


def entrypoint(flow: str, run_id: str, deployment: str | None = None) -> str:
    python = os.environ.get("CODEALIGN_JOB_PYTHON", "python")
    return shlex.join([python, "-m", "codealign", "run-submitted", flow, CONFIG_FILE, "--run-id", run_id,
                       *(["--deployment", deployment] if deployment else [])])


def submit_run(flow: str, config: Any, run_id: str, dashboard: str, deployment: str | None = None) -> str:
    """Submit ``flow`` on ``config`` as run ``run_id`` to the Ray cluster whose dashboard (job
    API) is at ``dashboard``; returns the job id (``codealign-<run id>``).  ``deployment``: the
    Prefect deployment that started the run, recorded in its manifest."""
    from ray.job_submission import JobSubmissionClient

    from codealign.flows.runtime import forwarded_env

    in_job = config.model_copy(update={"ray_address": "auto"})
    with tempfile.TemporaryDirectory(prefix="codealign-job-") as work:
        Path(work, CONFIG_FILE).write_text(in_job.model_dump_json())
        client = JobSubmissionClient(dashboard)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return client.submit_job(entrypoint=entrypoint(flow, run_id, deployment),
                                         submission_id=f"codealign-{run_id}",
                                         runtime_env={"working_dir": work, "env_vars": forwarded_env()},
                                         metadata={"codealign_flow": flow, "codealign_run_id": run_id})
            except RuntimeError as exc:
                # a head whose job agent has not registered yet (just started, restarting) says so
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)


class JobFailed(CodealignError, RuntimeError):
    """A submitted run's Ray Job ended other than SUCCEEDED (its logs are in the follower's log)."""

    exit_code = 1

    def __init__(self, job_id: str, status: str, message: str):
        super().__init__(job_id, status, message)
        self.job_id, self.status, self.message = job_id, status, message

    def __str__(self) -> str:
        return f"Ray job {self.job_id} {self.status}: {self.message}"


FOLLOW_POLL_S = 5.0
RECONNECT_S = 600.0  # how long the follower keeps trying a dashboard it cannot reach


def follow_job(dashboard: str, job_id: str, log: Callable[[str], None] = print,
               poll_s: float = FOLLOW_POLL_S, reconnect_s: float = RECONNECT_S) -> str:
    """Follow Ray job ``job_id`` to its end, passing each new line of its logs to ``log``; return
    its final status, or raise :class:`JobFailed`.  The job runs on the cluster whatever happens
    here, so a dashboard that cannot be reached (a network blip, a head restarting) is asked
    again until it answers, for up to ``reconnect_s`` at a time: a nightly deployment's run keeps
    reflecting the sweep's state instead of failing with the connection."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client: Any = None
    shown = 0
    unreachable_since: float | None = None
    while True:
        try:
            client = client or JobSubmissionClient(dashboard)
            info = client.get_job_info(job_id)
            logs = client.get_job_logs(job_id)
        except (ConnectionError, OSError, RuntimeError) as exc:  # requests' errors are OSErrors
            if "does not exist" in str(exc):
                raise
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > reconnect_s:
                raise
            log(f"Ray dashboard {dashboard} unreachable ({type(exc).__name__}); asking again in {poll_s:.0f} s")
            client = None
            time.sleep(poll_s)
            continue
        unreachable_since = None
        for line in logs[shown:].splitlines():
            log(line)
        shown = len(logs)
        if info.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            if info.status != JobStatus.SUCCEEDED:
                raise JobFailed(job_id, str(info.status), info.message or "")
            return str(info.status)
        time.sleep(poll_s)
