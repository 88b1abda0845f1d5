"""Sandbox worker process: ``python -m tasks.sandbox.worker``.

Started by :class:`tasks.sandbox.pool.SandboxPool` with a scrubbed environment.  It isolates
itself once (network and read-only mount namespaces), pre-imports what samples commonly need
so each sample starts as a cheap ``fork``, then serves jobs over a length-prefixed pickle
protocol on the file descriptors it was given (its stdin/stdout, moved out of the way so a
stray print cannot corrupt the protocol).
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

_HEADER = struct.Struct("!Q")

# Imported once here so that a sample's ``import`` of them costs nothing after fork.
_PRELOAD = (
    "numpy", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
    "typing", "random", "statistics", "fractions", "decimal", "hashlib", "copy", "operator",
    "json", "datetime", "cmath", "array", "sys", "io", "tempfile", "traceback",
)


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
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    ctx = runner.SandboxContext(namespaces=mode.namespaces, cgroup_procs_fd=cgroup_fd)
    send(proto_out, {"ready": True, "namespaces": mode.namespaces, "user_namespace": mode.user_namespace,
                     "reason": mode.reason, "cgroup": cgroup_fd is not None})
    tests_cache: dict[str, Any] = {}  # the pool sends each task's tests once per worker
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
        verdict = runner.run_job(job, tests, limits, ctx)
        send(proto_out, ("verdict", verdict))


if __name__ == "__main__":
    sys.exit(main())
