"""What runs inside the sandboxed sample process for a program in another language: write it,
compile it under the compile limits, run it under the sample's limits, and judge the outcome.

Compiling and running are child processes of the sample process, each started with its own
resource limits (set between fork and exec); the sample process itself holds limits wide
enough for both (``CompiledTests.process_limits``).  A verdict follows the benchmark
harnesses (CodeGeeX's HumanEval-X, MultiPL-E): passing means the program compiled and its run
exited with status 0 — and, for JavaScript, whose ``console.assert`` only prints, left stderr
empty.  Failures are told apart for the failure taxonomy: ``CompileError``, an assertion
(``failed``), a runtime error named by its exception/panic type, memory, or the CPU limit.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from typing import Any

from codealign.tasks.sandbox.records import CompiledTests, Job, SampleLimits

_DETAIL_CHARS = 300
_OUTPUT_TAIL = 64 * 1024

_ASSERTION = re.compile(
    r"Assertion `.*' failed|Assertion failed|AssertionError|assertion failed|assertion `left == right` failed"
    r"|Error Trace:|--- FAIL|ERR_ASSERTION",
)
_MEMORY = re.compile(r"OutOfMemoryError|std::bad_alloc|memory allocation of \d+ bytes failed|out of memory"
                     r"|heap out of memory|Cannot allocate memory")
_JAVA_EXCEPTION = re.compile(r"Exception in thread \"\w+\" ([\w.$]+)(?::\s*(.*))?")
_JS_ERROR = re.compile(r"^(\w*Error)(?::\s*(.*))?$", re.MULTILINE)
_PANIC = re.compile(r"panic(?:ked)?(?: at [^\n]*?)?:?\s*(.*)")


def _limit_child(cpu_s: float, memory_mb: int, processes: int) -> Any:
    def apply() -> None:
        cpu = max(1, int(cpu_s + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
        os.setpgid(0, 0)

    return apply


def _run_step(argv: list[str], env: dict[str, str], cpu_s: float, wall_s: float, memory_mb: int,
              processes: int) -> tuple[int | None, str, str, bool]:
    """Run one step; returns (exit code, None if killed by a signal; stderr tail; stdout tail;
    timed out).  Output goes to files in the work directory (bounded by the file-size limit)."""
    with open(".step-stdout", "w+b") as out, open(".step-stderr", "w+b") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                preexec_fn=_limit_child(cpu_s, memory_mb, processes), close_fds=True)
        timed_out = False
        try:
            code = proc.wait(timeout=wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            code = None
        try:  # the step's process group, and what it left running, does not outlive the step
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if code is None:
            proc.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        tails = []
        for f in (err, out):
            f.seek(max(0, f.tell() - _OUTPUT_TAIL))
            tails.append(f.read().decode("utf-8", errors="replace"))
    os.unlink(".step-stdout")
    os.unlink(".step-stderr")
    if code is not None and code < 0:
        # SIGXCPU comes only from the CPU limit; SIGKILL from its hard limit a second later
        timed_out = timed_out or -code == signal.SIGXCPU or (-code == signal.SIGKILL and cpu >= cpu_s)
        code = None
    return code, tails[0], tails[1], timed_out


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if re.search(r"\berror\b", line, re.IGNORECASE):
            return line.strip()[:_DETAIL_CHARS]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("# ")]
    return lines[0][:_DETAIL_CHARS] if lines else ""


def _runtime_detail(text: str, language: str) -> tuple[str, str]:
    """(status, detail) for a run that did not pass."""
    if _MEMORY.search(text):
        return "memory", _MEMORY.search(text).group(0)  # type: ignore[union-attr]
    if _ASSERTION.search(text):
        line = next((ln for ln in text.splitlines() if _ASSERTION.search(ln)), "")
        return "failed", f"AssertionError: {line.strip()}"[:_DETAIL_CHARS]
    if language == "java" and (m := _JAVA_EXCEPTION.search(text)):
        name = m.group(1).rsplit(".", 1)[-1]
        return "error", f"{name}: {m.group(2) or ''}".strip()[:_DETAIL_CHARS]
    if language == "js" and (m := _JS_ERROR.search(text)):
        return "error", f"{m.group(1)}: {m.group(2) or ''}".strip()[:_DETAIL_CHARS]
    if language in ("go", "rust") and (m := _PANIC.search(text)):
        return "error", f"Panic: {m.group(1).strip()}"[:_DETAIL_CHARS]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "error", (lines[-1] if lines else "")[:_DETAIL_CHARS]


def run(job: Job, tests: CompiledTests, limits: SampleLimits) -> tuple[str, str, Any]:
    """Build and run ``job.program``; ``(status, detail, outputs)`` like harness.run."""
    if tests.unavailable:
        return "error", f"ToolchainMissing: {tests.unavailable}"[:_DETAIL_CHARS], None
    import shutil

    from codealign.tasks.sandbox.guards import guarded
    from codealign.tasks.sandbox.isolation import make_non_dumpable

    make_non_dumpable()  # the program's processes cannot trace this one, which judges them
    nonce = os.urandom(16).hex() if job.tests_code else ""
    program = guarded(tests, job.setup, job.program, job.tests_code, nonce) if nonce else job.program
    with open(tests.source_name, "w", encoding="utf-8") as f:
        f.write(program)
    for source, target in tests.copies:
        shutil.copytree(source, target)
    work = os.getcwd()
    env = {**os.environ, **{k: v.replace("{work}", work) for k, v in tests.env}, "HOME": work}
    for argv in tests.compile:
        code, err, out, timed_out = _run_step(list(argv), env, tests.compile_cpu_s, tests.compile_wall_s,
                                              tests.compile_memory_mb, 256)
        if timed_out:
            return "error", f"CompileError: compilation exceeded its limit ({tests.compile_cpu_s:g}s CPU)", None
        if code != 0:
            return "error", f"CompileError: {_first_error_line(err + out)}"[:_DETAIL_CHARS], None
    heap = str(max(64, limits.memory_mb // 2))
    argv = [a.replace("{heap_mb}", heap) for a in tests.run]
    start = time.monotonic()
    code, err, out, timed_out = _run_step(argv, env, limits.cpu_s, limits.wall_s, limits.memory_mb,
                                          limits.max_processes)
    if timed_out:
        if time.monotonic() - start >= limits.wall_s:
            return "timeout", f"wall-clock limit {limits.wall_s:g}s exceeded", None
        return "timeout", f"CPU limit {limits.cpu_s:g}s exceeded", None
    finished = not nonce or nonce in out or nonce in err
    if code == 0 and finished and not (tests.fail_on_stderr and err.strip()):
        return "passed", "", None
    if code == 0 and not finished:
        return "error", "exited with status 0 before the tests ran to their end", "ended_early"
    status, detail = _runtime_detail(err + "\n" + out, tests.language)
    if code is None and status == "error" and not detail:
        detail = "killed by a signal"
    return status, detail, None
