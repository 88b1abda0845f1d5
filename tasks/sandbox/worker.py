"""Sandbox worker process: ``python -m tasks.sandbox.worker``.

Started by :class:`tasks.sandbox.pool.SandboxPool` with a scrubbed environment.  It isolates
itself once (network and read-only mount namespaces), pre-imports what samples commonly need
so each sample starts as a cheap ``fork``, then serves jobs over a length-prefixed pickle
protocol on the file descriptors it was given (its stdin/stdout, moved out of the way so a
stray print cannot corrupt the protocol).
"""

from __future__ import annotations

import gc
import os
import pickle
import struct
import sys
from collections import OrderedDict
from typing import Any, BinaryIO

_HEADER = struct.Struct("!Q")
# Tests (inputs + expected outputs) a worker keeps, least recently used first out.  The pool
# mirrors this LRU exactly, so it knows when to send a task's tests again.  Bounded because
# every sample is forked from the worker: a big cache makes every fork slower.
TESTS_CACHE_SIZE = 8

# Imported once here so that a sample's ``import`` of them costs nothing after fork.  Only cheap,
# common ones: every mapped library makes every fork (one per sample) slower, so numpy and the
# like are imported by the samples that need them.
_PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
            "copy", "operator")


def send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def remember(cache: OrderedDict[str, Any], key: str) -> None:
    """Mark ``key`` most recently used and evict beyond TESTS_CACHE_SIZE (pool and worker
    call this identically)."""
    cache.move_to_end(key)
    while len(cache) > TESTS_CACHE_SIZE:
        cache.popitem(last=False)


def main() -> None:
    # Protocol on private fds; 0/1 point at /dev/null and 2 stays the caller's stderr.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)

    from tasks.sandbox import isolation, runner

    cgroup_fd = None
    cgroup = os.environ.get("CODEALIGN_SANDBOX_CGROUP")
    if cgroup:
        try:
            cgroup_fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
        except OSError:
            cgroup_fd = None
    disable = os.environ.get("CODEALIGN_SANDBOX_NO_NAMESPACES") == "1"
    mode = (
        isolation.IsolationMode(False, False, "namespaces disabled by CODEALIGN_SANDBOX_NO_NAMESPACES")
        if disable
        else isolation.enter_worker_isolation()
    )
    sample_uid = None
    if mode.namespaces:  # keep the interpreter's directories before anything covers them
        secrets = isolation.secret_roots()
        from tasks.sandbox.toolchains import visible_paths  # prepared toolchain builds (Rust crates, Go cache)

        isolation.keep_visible([*isolation.python_paths(), *visible_paths()], [*isolation.SCRATCH_MOUNTS, *secrets])
        isolation.hide_secrets(secrets)
        if not mode.user_namespace:  # a user namespace maps one uid only: the caller's own
            sample_uid = isolation.SAMPLE_UID_BASE + os.getpid()
            isolation.drop_groups()
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.freeze()  # keep the collector off the pre-fork heap: fewer copy-on-write page faults
    if mode.namespaces:
        isolation.become_namespace_init()  # from here on this process is PID 1 of its namespace
        isolation.lock_inheritable_privileges()
    runner.prepare_worker_process()
    ctx = runner.SandboxContext(namespaces=mode.namespaces, cgroup_procs_fd=cgroup_fd, sample_uid=sample_uid)
    send(proto_out, {"ready": True, "namespaces": mode.namespaces, "user_namespace": mode.user_namespace,
                     "reason": mode.reason, "cgroup": cgroup_fd is not None})
    tests_cache: OrderedDict[str, Any] = OrderedDict()
    while True:
        try:
            message = receive(proto_in)
        except EOFError:
            return
        job, limits, tests_key, tests = message
        if tests_key is not None:
            if tests is not None:
                tests_cache[tests_key] = tests
            tests = tests_cache[tests_key]
            remember(tests_cache, tests_key)
        verdict = runner.run_job(job, tests, limits, ctx)
        send(proto_out, ("verdict", verdict))


if __name__ == "__main__":
    sys.exit(main())
