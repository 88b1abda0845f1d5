"""Starting servers in tests: a free loopback port, retries of a start (never of an
assertion), stopping a child process, killing a run at a chosen moment.  Imported by the
layers' conftest files and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

START_ATTEMPTS = 3


def start_with_retries(what: str, start):
    """Call ``start()`` (which starts a server and waits until it is ready, raising if it is
    not) up to START_ATTEMPTS times: a port taken between choosing and binding it, or a slow
    machine, costs a retry of the *start*, never a failed assertion."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start()
        except Exception as exc:  # any failure to start is retried, then raised
            if attempt == START_ATTEMPTS:
                raise RuntimeError(f"{what} did not start after {START_ATTEMPTS} attempts") from exc
            print(f"{what} did not start ({exc}); attempt {attempt + 1} of {START_ATTEMPTS}")


# Ports Ray's components take by default whatever other ports a node is given (dashboard agent
# 52365, dashboard 8265, Ray Client 10001, metrics 8080): a server given one of them by
# free_port() would make the Ray node that starts next fail ("used by other components").
RAY_DEFAULT_PORTS = frozenset({52365, 52366, 8265, 10001, 8080, 6379})


def free_port() -> int:
    """A free loopback port, never one of Ray's default ports."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sigkill_when(command: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool], what: str,
                 timeout: float = 400) -> None:
    """Run ``command`` in a session of its own and SIGKILL the whole session (the flow process
    and everything it started) as soon as ``ready()`` holds; fail, with the run's stderr, if it
    ends first or ``ready`` does not hold within ``timeout`` seconds."""
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"no {what} in time"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # also on failure: nothing of the run outlives the test
        proc.wait()
        proc.stderr.close()


class CuttableProxy:
    """A TCP proxy on a loopback port in front of ``target`` (host, port) that a test can cut:
    while cut, its port refuses connections and the open ones are dropped, as when a server or
    the network to it is away; :meth:`restore` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        import threading

        self.target, self.port = target, free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes its accept() (close alone does not)
            except OSError:
                pass
            listener.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.cut()
