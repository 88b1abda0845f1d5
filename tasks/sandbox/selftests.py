"""Model-written tests (SelfCodeAlign's self-tests path), judged apart from the code they test.

Code and tests are both untrusted, so the tests may not run in the judge; nor may they run in
the sample's process, where the code could patch their comparisons.  The sample process forks a
*tests process* before the model's program runs (a clean fork, holding nothing of the program):
it makes itself non-dumpable (so the sample cannot trace it or read its memory), runs the tests
with the sample's functions as proxies (the judge's own :func:`codealign.tasks.sandbox.judge.asserts`,
per-statement CPU read from the sample's clock) and reports to the judge on the call socket,
which the sample process no longer holds.
"""

from __future__ import annotations

import json
import os
import socket
from typing import NoReturn

from codealign.tasks.sandbox import calls, judge
from codealign.tasks.sandbox.isolation import make_non_dumpable
from codealign.tasks.sandbox.records import AssertTests


def serve_with_tests(program: str, tests: AssertTests) -> NoReturn:
    """In the sample process, before its program runs: fork the tests process, then serve
    calls from it.  Never returns."""
    ours, theirs = socket.socketpair()
    if os.fork() == 0:
        ours.close()
        _tests_process(theirs, tests)
    theirs.close()
    os.dup2(ours.fileno(), calls.CALL_FD)  # the judge's socket is the tests process's alone now
    ours.close()
    calls.serve(program)


def _tests_process(sock: socket.socket, tests: AssertTests) -> NoReturn:
    try:
        make_non_dumpable()
        channel = judge.Channel(sock, None)
        outcome = channel.start() or judge.asserts(channel, tests)
    except BaseException as exc:  # noqa: BLE001 - every way out is a verdict
        outcome = judge.outcome_of(exc)
    counts = outcome.counts or {"passed": 0, "total": len(tests.statements)}
    message = {"status": outcome.status, "detail": outcome.detail, "counts": counts, "flag": outcome.flag}
    try:
        calls.send_frame(calls.CALL_FD, calls.VERDICT, json.dumps(message).encode())
    finally:
        os._exit(0)
