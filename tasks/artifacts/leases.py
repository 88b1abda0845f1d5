"""Leases in the artifact store: one writer per artifact across runs, processes and nodes.

Two runs over the same checkpoint (two nightly sweeps, a UI retry racing a CLI resume) share
its evaluation units.  Without coordination both would compute a unit and their writes could
interleave (one run's content under the other's sidecar).  Before computing an artifact a
stage takes the artifact's lease: an object ``<artifact>.lease`` created only if absent
(local: a hard link, which fails if the name exists; S3: a conditional PUT,
``If-None-Match: *``), holding who holds
it and until when.  The holder renews it while it works; the others wait and then find the
artifact made.  A holder that died leaves a lease that expires (or, on the same host, whose
process is gone): the next one takes it over.  So does a lease this very process took and no
longer holds: an attempt that failed while the store was unreachable could not delete it, and
the retry (same process: a sampler actor, a Ray worker) must not wait out its expiry.

:func:`produce_once` is the one way stages use this.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from codealign.tasks.artifacts.store import ArtifactRef, ArtifactStore

LEASE_SUFFIX = ".lease"
LEASE_TTL_S = 90.0  # renewed every third of it while the holder works
POLL_S = 1.0

T = TypeVar("T")
_HELD: set[str] = set()  # holders of the leases this process holds now


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    host: str
    pid: int
    expires: float

    def expired(self, now: float) -> bool:
        return now > self.expires

    def holder_gone(self) -> bool:
        """The holder ran on this host and its process no longer exists (killed, crashed), or
        it is this process and none of its leases in hand is this one (left by a failed attempt)."""
        if self.host != socket.gethostname():
            return False
        if self.pid == os.getpid():
            return self.holder not in _HELD
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class Lease:
    """A held lease on ``key``; renewed in the background until :meth:`release`."""

    def __init__(self, store: ArtifactStore, key: str, ttl: float):
        self.store, self.key, self.ttl = store, key + LEASE_SUFFIX, ttl
        self.holder = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> bytes:
        record = {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                  "expires": time.time() + self.ttl}
        return json.dumps(record).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is free, or expired, or its holder's process is gone."""
        if self.store.create_exclusive(self.key, self._record()):
            self._start_renewing()
            return True
        current = read_lease(self.store, self.key)
        if current is None or current.expired(time.time()) or current.holder_gone():
            # A stale lease: remove it (only if it is still the one we read) and race for it.
            if read_lease(self.store, self.key) == current:
                self.store.delete_object(self.key)
            if self.store.create_exclusive(self.key, self._record()):
                self._start_renewing()
                return True
        return False

    def _start_renewing(self) -> None:
        _HELD.add(self.holder)
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            current = read_lease(self.store, self.key)
            if current is None or current.holder != self.holder:
                return  # taken over (we stalled past the expiry): the new holder writes
            self.store.write_object(self.key, self._record())

    def release(self) -> None:
        self._stop.set()
        _HELD.discard(self.holder)
        if self._renewer is not None:
            self._renewer.join()
        current = read_lease(self.store, self.key)
        if current is not None and current.holder == self.holder:
            self.store.delete_object(self.key)


def read_lease(store: ArtifactStore, key: str) -> LeaseRecord | None:
    raw = store.read_object(key)
    if raw is None:
        return None
    try:
        return LeaseRecord(**json.loads(raw))
    except (ValueError, TypeError):
        return LeaseRecord("unreadable", "", 0, 0.0)  # half-written by a dead holder: stale


def produce_once(store: ArtifactStore, key: str, make: Callable[[], ArtifactRef], *, ttl: float = LEASE_TTL_S,
                 poll_s: float = POLL_S, on_wait: Callable[[LeaseRecord | None], None] | None = None) -> ArtifactRef:
    """The artifact at ``key``: the existing one, or ``make()``'s, computed by exactly one of
    the callers that want it at the same time (the others wait for it and return it)."""
    warned = False
    while True:
        if ref := store.ref_if_exists(key):
            return ref
        lease = Lease(store, key, ttl)
        if lease.try_acquire():
            try:
                if ref := store.ref_if_exists(key):  # made while we were acquiring
                    return ref
                return make()
            finally:
                lease.release()
        if on_wait is not None and not warned:
            on_wait(read_lease(store, key + LEASE_SUFFIX))
            warned = True
        time.sleep(poll_s)
