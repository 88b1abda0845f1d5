"""vLLM sampler actors: long-lived Ray actors that host one engine each and run the plain-Python
sampling stages of any flow.

One actor per GPU (``tensor_parallel_size`` GPUs each); on CPU clusters one per node.  An actor
keeps its engine between calls, so units (or shards) of one model sampled in a row start that
engine once: :class:`SamplerQueue` assigns each model to one actor and chains its calls in
submission order.  The Prefect task that waits on an actor holds no GPU (a task holding the GPU
while waiting on GPU work would deadlock), and a task blocked in ``ray.get`` gives its CPU back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import ray
from prefect import allow_failure
from prefect.futures import PrefectFuture

from codealign.flows.runtime import cluster_outlives_run, forwarded_env, unwrap

SAMPLER_NAMESPACE = "codealign"
DEFAULT_IDLE_RELEASE_S = 900.0


def idle_release_s() -> float:
    """How long a warm sampler on a persistent cluster keeps its engine without work before it
    shuts the engine down (``CODEALIGN_SAMPLER_IDLE_S``), giving back the engine's memory."""
    return float(os.environ.get("CODEALIGN_SAMPLER_IDLE_S") or DEFAULT_IDLE_RELEASE_S)


class SamplerActor:
    """A vLLM engine host that runs sampling stages in its own process (where the engine lives).

    On a cluster that outlives the run, samplers are named, detached actors: the next run (a
    resume, the next checkpoint's evaluation, another sweep) finds them warm, vLLM imported and
    the last model's engine started, instead of paying both again.  After :func:`idle_release_s`
    without work a sampler shuts its engine down (the process stays, holding only the imported
    libraries): an actor that ended itself could be handed to a run at that moment and fail
    its calls."""

    def __init__(self, idle_release_after: float | None = None) -> None:
        # Import vLLM (and torch) now: actors start while a flow prepares its inputs, so the
        # ~10 s import is off the critical path.
        import vllm  # noqa: F401

        self._lock = threading.Lock()  # a stage and the idle release never overlap
        self._last_used = time.monotonic()
        if idle_release_after:
            threading.Thread(target=self._release_when_idle, args=(idle_release_after,), daemon=True).start()

    def run(self, stage: Callable[..., Any], *args: Any, producer: dict[str, Any]) -> tuple[Any, str]:
        """``stage(*args, producer=...)``, with this actor's node in the producer record; also
        returns what the stage printed, for the calling task's log (this actor is outside any
        Prefect task run)."""
        printed = io.StringIO()
        with self._lock:
            try:
                with redirect_stdout(_Tee(sys.stdout, printed)):
                    result = stage(*args, producer={**producer, "sampler_pid": os.getpid(),
                                                    "sampler_node_id": ray.get_runtime_context().get_node_id()})
            finally:
                self._last_used = time.monotonic()
        return result, printed.getvalue()

    def _release_when_idle(self, idle_s: float) -> None:
        from codealign.tasks.generation.sampling import engines_loaded, release_engines

        while True:
            time.sleep(min(idle_s, 10.0))
            with self._lock:
                if engines_loaded() and time.monotonic() - self._last_used > idle_s:
                    release_engines()


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


CALL_ATTEMPTS = 3  # a sampler restarts up to max_restarts=2 times: each restart gets the call again


def run_on(sampler: Any, stage: Callable[..., Any], *args: Any, producer: dict[str, Any]) -> Any:
    """``stage(*args, producer=...)`` in ``sampler``'s process, waited for; a failure raises the
    stage's own exception (not Ray's wrapper), so task failures read as what went wrong.  What
    the stage printed is printed again here, into the calling task's log.

    The call in flight when the actor dies (out of memory, a crashed engine) is made again once
    Ray has restarted it: stages are idempotent (each artifact is made under its lease, and one
    that exists is reused), so a second call finishes the first's work.  An error the stage
    raised is not retried: it would raise again."""
    for attempt in range(1, CALL_ATTEMPTS + 1):
        try:
            result, printed = ray.get(sampler.run.remote(stage, *args, producer=producer))
            break
        except ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
        except ray.exceptions.RayActorError as exc:  # died or restarting: not the stage's doing
            if attempt == CALL_ATTEMPTS:
                raise
            print(f"sampler lost during {getattr(stage, '__name__', 'a stage')} ({type(exc).__name__}); "
                  f"calling it again, attempt {attempt + 1} of {CALL_ATTEMPTS}")
            time.sleep(2 * attempt)  # Ray is restarting the actor
    for line in printed.splitlines():
        print(line)  # into the task run's log (flows log prints)
    return result


_warm: list[Any] = []  # handles of detached samplers: stop_samplers leaves them running


def start_samplers(count: int, tensor_parallel_size: int = 1) -> list[Any]:
    """Start up to ``count`` sampler actors: one per GPU group, or one per alive node on CPU.
    The caller keeps the handles (an actor dies with its last handle) and passes them to tasks.
    On a cluster that outlives the run the actors are detached and shared by name (per node or
    GPU group, and per environment they were given), so a later run reuses them warm."""
    env = {**forwarded_env(), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actor_cls = ray.remote(SamplerActor)
    if gpus:
        per_engine = max(1, tensor_parallel_size)
        placement = {"num_gpus": per_engine, "runtime_env": {"env_vars": env}}
        placements: list[dict[str, Any]] = [placement] * min(gpus // per_engine, count)
    else:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # num_cpus=0: the engine's threads share the node's cores with tasks; reserving a core
        # would leave a 1-core node unable to run any task, and the run would hang.  Ray sets
        # OMP_NUM_THREADS=1 in a worker that reserves no CPU; the engine gets the node's cores.
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        placements = [{"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                       "runtime_env": {"env_vars": {**env, "OMP_NUM_THREADS": str(int(n["Resources"]["CPU"]))}}}
                      for n in nodes[:count]]
    if count and not placements:
        raise RuntimeError("no Ray node can host a vLLM sampler (no GPU for the engine and no node with a CPU)")
    # An actor that dies (out of memory, a crashed engine) is restarted (max_restarts), and the
    # call it was serving is made again on the restarted actor (run_on).
    if not cluster_outlives_run():
        return [actor_cls.options(max_concurrency=1, max_restarts=2, **placement).remote() for placement in placements]
    env_key = hashlib.sha256(json.dumps({k: v for k, v in sorted(env.items()) if k != "PREFECT_API_URL"}).encode())
    actors = []
    for i, placement in enumerate(placements):
        where = placement["scheduling_strategy"].node_id if "scheduling_strategy" in placement else f"gpu{i}"
        name = f"sampler-{where[:16]}-tp{tensor_parallel_size}-{env_key.hexdigest()[:12]}"
        actors.append(actor_cls.options(name=name, namespace=SAMPLER_NAMESPACE, lifetime="detached", get_if_exists=True,
                                        max_concurrency=1, max_restarts=2, **placement).remote(idle_release_s()))
    _warm.extend(actors)
    return actors


def stop_samplers(actors: list[Any]) -> None:
    """Stop the run's samplers (warm shared ones stay for the next run)."""
    for actor in actors:
        if not any(actor is warm for warm in _warm):
            ray.kill(actor)


class SamplerQueue:
    """Spreads models over sampler actors and orders each actor's calls.

    ``models`` lists the models to sample, in the order their work will be submitted; surplus
    actors are stopped.  :meth:`submit` gives each call the actor of its model and makes it
    wait for that actor's previous call (whether it failed or not), so each engine starts once
    per model and one failure does not block the next call."""

    def __init__(self, samplers: list[Any], models: list[str]):
        order = list(dict.fromkeys(models))
        stop_samplers(samplers[len(order):])
        self.samplers = samplers[: len(order)]
        self._slot = {model: i % len(self.samplers) for i, model in enumerate(order)} if self.samplers else {}
        self._last: dict[int, PrefectFuture] = {}

    def submit(self, model: str, submit: Callable[[Any, list[Any] | None], PrefectFuture]) -> PrefectFuture:
        """``submit(sampler, wait_for)`` for a call about ``model``; returns its future."""
        slot = self._slot[model]
        after = [allow_failure(self._last[slot])] if slot in self._last else None
        future = self._last[slot] = submit(self.samplers[slot], after)
        return future

    def stop(self) -> None:
        stop_samplers(self.samplers)
