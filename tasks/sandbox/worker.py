"""Sandbox worker process: ``python -m codealign.tasks.sandbox.worker``, a clean fork server.

Started by :class:`codealign.tasks.sandbox.pool.SandboxPool` with a scrubbed environment.  It isolates
itself once (network and read-only mount namespaces, the answer keys hidden from its view),
pre-imports what samples commonly need so each sample starts as a cheap ``fork``, then serves
jobs over its control socket (fd number in ``CODEALIGN_SANDBOX_CONTROL_FD``; its stdin/stdout
point at /dev/null, so a stray print cannot corrupt the protocol).

It never holds tests or expected outputs: each job brings only the program (and, for the modes
judged in the sample's own process, what those need) and the sample's call socket, whose other
end stays with the judge.  Messages are length-prefixed pickles between two trusted processes;
nothing from a sample travels on this socket.
"""

from __future__ import annotations

import array
import gc
import os
import pickle
import socket
import struct
import sys
from typing import Any

_HEADER = struct.Struct("!Q")
CONTROL_FD_ENV = "CODEALIGN_SANDBOX_CONTROL_FD"
HIDE_ENV = "CODEALIGN_SANDBOX_HIDE"  # os.pathsep-separated paths samples must not see
VISIBLE_ENV = "CODEALIGN_SANDBOX_VISIBLE"  # ... and paths they must (the toolchains)

# Imported once here so that a sample's ``import`` of them costs nothing after fork.  Only cheap,
# common ones: every mapped library makes every fork (one per sample) slower, so numpy and the
# like are imported by the samples that need them.
_PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
            "copy", "operator", "decimal")


def send(sock: socket.socket, obj: Any, fds: tuple[int, ...] = ()) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = _HEADER.pack(len(data)) + data
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        data = data[sent:]
    sock.sendall(data)


def receive(sock: socket.socket) -> tuple[Any, list[int]]:
    """The next message and the file descriptors that came with it."""
    fds: list[int] = []
    head = b""
    while len(head) < _HEADER.size:
        chunk, ancillary, _, _ = sock.recvmsg(_HEADER.size - len(head), socket.CMSG_LEN(4 * 4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        if not chunk:
            raise EOFError
        head += chunk
    (size,) = _HEADER.unpack(head)
    parts, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        got += len(chunk)
    return pickle.loads(b"".join(parts)), fds


def main() -> None:
    control = socket.socket(fileno=int(os.environ[CONTROL_FD_ENV]))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)

    # Everything a sample process runs of ours, imported before the checkout is hidden.
    from codealign.tasks.sandbox import (  # noqa: F401
        calls,
        compiled,
        guards,
        isolation,
        judge,
        plain,
        runner,
        selftests,
    )

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
    hide = [p for p in os.environ.get(HIDE_ENV, "").split(os.pathsep) if p]
    visible = [p for p in os.environ.get(VISIBLE_ENV, "").split(os.pathsep) if p]
    if mode.namespaces:  # keep the interpreter's directories before anything covers them
        secrets = isolation.secret_roots()
        hidden = [h for h in isolation.answer_keys([*hide, *isolation.non_system_roots()]) if h not in secrets]
        isolation.keep_visible([*isolation.python_paths(hidden), *visible],
                               [*isolation.SCRATCH_MOUNTS, *secrets, *hidden])
        isolation.hide_secrets(secrets)
        isolation.hide_answer_keys(hidden)
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
    send(control, {"ready": True, "namespaces": mode.namespaces, "user_namespace": mode.user_namespace,
                   "reason": mode.reason, "cgroup": cgroup_fd is not None})
    while True:
        try:
            message, fds = receive(control)
        except EOFError:
            return
        if message[0] != "job" or not fds:  # a late "finish" for a sample that had already ended
            for fd in fds:
                os.close(fd)
            continue
        _, job, limits, tests = message
        report = runner.run_job(job, tests, limits, ctx, fds[0], control)
        for fd in fds[1:]:
            os.close(fd)
        send(control, ("exit", report))


if __name__ == "__main__":
    sys.exit(main())
