"""The local stack's process handling, without starting the stack (tests/e2e/test_deployments.py
starts it for real)."""

from __future__ import annotations

import subprocess
import sys
import time

from codealign.infra.local_stack import _alive


def test_an_exited_but_unreaped_service_is_not_alive():
    """`stack down` runs in another process than `stack up`: the services it stops are not its
    children, and one that exited stays a zombie until someone reaps it.  It must not count as
    running (down would wait out its grace period for nothing)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while _alive(proc.pid):  # exits at once; not reaped until proc.wait() below
        assert time.monotonic() < deadline, "a zombie counted as alive"
        time.sleep(0.05)
    with open(f"/proc/{proc.pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "Z"  # it was a zombie, not gone
    proc.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not _alive(sleeper.pid)
