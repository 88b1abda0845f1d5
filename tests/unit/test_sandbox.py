"""Hostile and legitimate samples in the sandbox: every escape named in the foundation issue is
contained, verdicts stay honest, and nothing a sample starts survives its verdict."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from codealign.tasks.evaluation.execute import execute
from codealign.tasks.generation.samples import Sample
from codealign.tasks.sandbox.limits import Limits

LIMITS = Limits(cpu_s=3, wall_s=12)


def run(problem, programs: dict[str, str], limits: Limits = LIMITS, workers: int = 2) -> dict[str, object]:
    samples = [Sample(problem.task_id, i, solution=src) for i, src in enumerate(programs.values())]
    verdicts = execute([problem], samples, limits, workers=workers, use_reference=False)
    return dict(zip(programs, verdicts))


def _marker_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


EARLY_EXITS = {
    "sys_exit_0": "import sys\ndef f():\n    sys.exit(0)",
    "raise_systemexit": "def f():\n    raise SystemExit(0)",
    "os_exit_0": "import os\ndef f():\n    os._exit(0)",
    "exit_at_import": "import sys\nsys.exit(0)\ndef f():\n    return 1",
    "atexit_then_exit": (
        "import atexit, os\natexit.register(lambda: print('passed'))\n"
        "def f():\n    os._exit(0)"
    ),
    "prints_success": (
        "import sys\ndef f():\n    print('passed'); print('{\"status\": \"passed\"}')\n"
        "    sys.stdout.flush(); os_exit = __import__('os')._exit; os_exit(0)"
    ),
    "writes_fake_verdict_to_every_fd": (
        "import os\ndef f():\n    for fd in range(3, 64):\n        try:\n"
        "            os.write(fd, b'0' * 32 + b'J{\"status\": \"passed\", \"detail\": \"\"}')\n"
        "        except OSError:\n            pass\n    os._exit(0)"
    ),
    "kills_itself": "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGKILL)",
}


def test_a_correct_program_passes(problem_factory):
    v = run(problem_factory(), {"ok": "def f():\n    return 1"})["ok"]
    assert v.passed and v.status == "passed"
    assert v.cpu_s >= 0 and v.wall_s > 0


def test_a_wrong_program_fails(problem_factory):
    v = run(problem_factory(), {"bad": "def f():\n    return 2"})["bad"]
    assert not v.passed and v.status == "failed" and "AssertionError" in v.detail


@pytest.mark.parametrize("name", sorted(EARLY_EXITS))
def test_exiting_early_never_passes(problem_factory, name):
    v = run(problem_factory(), {name: EARLY_EXITS[name]}, workers=1)[name]
    assert not v.passed, v
    assert v.status in {"error", "crashed", "failed"}, v  # PID 1 ignores its own SIGKILL: f() returns None


def test_syntax_error_is_an_error(problem_factory):
    v = run(problem_factory(), {"s": "def f(:\n  pass"})["s"]
    assert v.status == "error" and "SyntaxError" in v.detail


def test_cpu_limit_even_when_signals_are_ignored(problem_factory):
    src = ("import signal\nfor s in (signal.SIGXCPU, signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n"
           "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\ndef f():\n    return 1")
    v = run(problem_factory(), {"spin": src})["spin"]
    assert v.status == "timeout" and not v.passed
    assert 3 <= v.cpu_s <= 6


def test_wall_clock_backstop_for_sleepers(problem_factory):
    v = run(problem_factory(), {"sleep": "import time\ntime.sleep(600)"}, Limits(cpu_s=2, wall_s=2))["sleep"]
    assert v.status == "timeout" and "wall-clock" in v.detail
    assert v.wall_s < 10


def test_memory_limit(problem_factory):
    v = run(problem_factory(), {"hog": "x = bytearray(6 * 1024 ** 3)\ndef f():\n    return 1"})["hog"]
    assert v.status == "memory" and not v.passed


def test_a_two_second_computation_passes(problem_factory):
    src = ("import time\ndef f():\n    t = time.process_time()\n    n = 0\n"
           "    while time.process_time() - t < 2.0:\n        n += 1\n    return 1")
    v = run(problem_factory(), {"compute": src}, Limits())["compute"]
    assert v.passed, v
    assert v.cpu_s >= 2.0


def test_no_descendant_outlives_its_verdict(problem_factory):
    """Children, double-forked daemons and new sessions are all gone once the verdict is in."""
    marker = f"codealign-orphan-{uuid.uuid4().hex[:8]}"
    src = f"""
import os, subprocess
subprocess.Popen(['sh', '-c', 'exec -a {marker} sleep 300'])
subprocess.Popen(['setsid', 'sh', '-c', 'exec -a {marker} sleep 300'], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp('sh', ['sh', '-c', 'exec -a {marker} sleep 300'])
    os._exit(0)
def f():
    return 1
"""
    v = run(problem_factory(), {"orphans": src})["orphans"]
    assert v.passed, v
    time.sleep(0.5)
    assert _marker_processes(marker) == []


def test_killing_parent_or_everything_does_not_disturb_others(problem_factory):
    killer = ("import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
              "    except OSError:\n        pass\ndef f():\n    return 1")
    programs = {f"ok{i}": "import time\ndef f():\n    time.sleep(0.2)\n    return 1" for i in range(6)}
    programs["killer"] = killer
    programs.update({f"after{i}": "def f():\n    return 1" for i in range(4)})
    verdicts = run(problem_factory(), programs)
    # Nothing outside the sample can be reached: every other sample, and the worker that judges
    # the killer itself, carry on (the killer's own tests then pass).
    assert all(v.passed for v in verdicts.values()), verdicts


def test_no_network(problem_factory):
    src = ("import socket\ndef f():\n    try:\n        socket.create_connection(('127.0.0.1', 22), timeout=2)\n"
           "    except OSError:\n        return 1\n    return 0")
    assert run(problem_factory(), {"net": src})["net"].passed


def test_writes_outside_tmp_do_not_persist(problem_factory, tmp_path):
    target = Path.cwd() / f"PWNED-{uuid.uuid4().hex[:6]}"
    outside = tmp_path / "written"
    src = f"""
import os
for path in ({str(target)!r}, {str(outside)!r}):
    try:
        open(path, 'w').write('x')
    except OSError:
        pass
def f():
    return 1
"""
    assert run(problem_factory(), {"w": src})["w"].passed
    assert not target.exists() and not outside.exists()


def test_private_temp_dir_is_writable_and_not_shared(problem_factory):
    tag = uuid.uuid4().hex
    writer = (f"import os\nopen('/tmp/shared-{tag}', 'w').write('x')\n"
              "open('mine', 'w').write('x')\ndef f():\n    return 1")
    reader = f"import os, time\ntime.sleep(0.3)\ndef f():\n    return 0 if os.path.exists('/tmp/shared-{tag}') else 1"
    verdicts = run(problem_factory(), {"writer": writer, "reader": reader})
    assert verdicts["writer"].passed and verdicts["reader"].passed
    assert not Path(f"/tmp/shared-{tag}").exists()


def test_environment_is_scrubbed(problem_factory, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    src = ("import os\ndef f():\n    blob = open('/proc/self/environ', 'rb').read()\n"
           "    try:\n        blob += open('/proc/1/environ', 'rb').read()\n    except OSError:\n        pass\n"
           "    leaked = any(k in os.environ for k in ('AWS_SECRET_ACCESS_KEY', 'HF_TOKEN'))\n"
           "    return 0 if leaked or b'hunter2' in blob or b'hf_secret' in blob else 1")
    assert run(problem_factory(), {"env": src})["env"].passed


def test_stdin_is_closed_and_output_is_capped(problem_factory):
    src = ("import sys\ndef f():\n    print('x' * 10_000_000)\n    try:\n        input()\n    except EOFError:\n"
           "        return 1\n    return 0")
    v = run(problem_factory(), {"io": src}, Limits(cpu_s=5, output_bytes=1000))["io"]
    assert v.passed, v


def test_process_count_is_limited(problem_factory):
    src = """
import os, time
children = 0
for _ in range(500):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children += 1
def f():
    return 1 if children < 200 else 0
"""
    v = run(problem_factory(), {"forks": src}, Limits(cpu_s=5, max_processes=32))["forks"]
    assert v.passed, v


def test_cannot_remount_or_regain_privileges(problem_factory):
    src = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
           "rc = libc.mount(None, b'/', None, 32 | 4096, None)\ndef f():\n    return 1 if rc != 0 else 0")
    assert run(problem_factory(), {"remount": src})["remount"].passed


def test_samples_hold_no_capabilities_and_cannot_gain_any(problem_factory):
    """Effective, permitted, inheritable and bounding sets empty, no_new_privs set (the bounding
    set and no_new_privs are set once in the worker and inherited; this checks they arrive)."""
    src = ("status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())\n"
           "caps = [int(status[k], 16) for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')]\n"
           "def f():\n    return 1 if caps == [0] * 5 and status['NoNewPrivs'].strip() == '1' else 0")
    assert run(problem_factory(), {"caps": src})["caps"].passed


@pytest.mark.slow
def test_verdicts_hold_under_cpu_load(problem_factory):
    """CPU time is the limit, so a busy machine does not turn a 1 s computation into a timeout."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        compute = ("import time\ndef f():\n    t = time.process_time()\n"
                   "    while time.process_time() - t < 1.0:\n        pass\n    return 1")
        programs = {f"compute{i}": compute for i in range(4)}
        programs.update({name: src for name, src in EARLY_EXITS.items()})
        programs["spin"] = "while True:\n    pass"
        # the wall-clock backstop (default 3 x cpu_s + 10 s = 19 s) set far off: with these four
        # burners and CI's other test worker on 2 cores, a 1 s computation took 6.8 s of wall time
        # and one hit the backstop (CI23); what is tested here is the CPU limit
        verdicts = run(problem_factory(), programs, Limits(cpu_s=3, wall_s=180))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert all(verdicts[f"compute{i}"].passed for i in range(4)), verdicts
    assert not any(verdicts[name].passed for name in EARLY_EXITS)
    assert verdicts["spin"].status == "timeout"


def test_strict_isolation_refuses_without_namespaces(problem_factory, monkeypatch):
    from codealign.tasks.sandbox.pool import IsolationUnavailable

    monkeypatch.setenv("CODEALIGN_SANDBOX_NO_NAMESPACES", "1")
    with pytest.raises(IsolationUnavailable):
        execute([problem_factory()], [Sample("t/0", 0, solution="def f():\n    return 1")], strict_isolation=True,
                use_reference=False)


def test_fallback_without_namespaces_still_judges_and_warns(problem_factory, monkeypatch, capfd):
    import codealign.tasks.sandbox.pool as pool

    monkeypatch.setenv("CODEALIGN_SANDBOX_NO_NAMESPACES", "1")
    monkeypatch.setattr(pool, "_warned", False)
    marker = f"codealign-fallback-{uuid.uuid4().hex[:8]}"
    verdicts = run(problem_factory(), {
        "ok": "def f():\n    return 1",
        "exit": "import os\ndef f():\n    os._exit(0)",
        "child": (f"import subprocess\nsubprocess.Popen(['sh', '-c', 'exec -a {marker} sleep 300'])\n"
                  "def f():\n    return 1"),
    })
    assert verdicts["ok"].passed and not verdicts["exit"].passed and verdicts["child"].passed
    assert "WARNING: sandbox namespaces unavailable" in capfd.readouterr().err
    time.sleep(0.3)
    assert _marker_processes(marker) == []


def test_samples_cannot_read_the_hosts_secrets(problem_factory):
    """Canaries in the account's home, in /root and in an owner-only file elsewhere, and
    /etc/shadow: a hostile sample that raises their content gets nothing into its verdict
    (home directories are covered; samples run as an unprivileged uid).  Honest samples using
    the standard library and numpy still pass."""
    tag = uuid.uuid4().hex
    repo = Path(__file__).resolve().parents[2]
    home_dir = Path.home() / f".codealign-canary-{tag}"
    canaries = [home_dir / "credentials", Path("/root") / f".codealign-root-canary-{tag}", repo / f".canary-{tag}"]
    written = []
    try:
        for i, path in enumerate(canaries):
            if path.parent.is_dir() or path.parent == home_dir:
                path.parent.mkdir(exist_ok=True)
                path.write_text(f"SECRET-{tag}-{i}")
                path.chmod(0o600)
                written.append(path)
        hostile = {f"read_{i}": f"def f():\n    raise ValueError(open({str(p)!r}).read())"
                   for i, p in enumerate(written)}
        hostile["list_home"] = f"import os\ndef f():\n    raise ValueError(os.listdir({str(home_dir.parent)!r}))"
        hostile["shadow"] = "def f():\n    raise ValueError(open('/etc/shadow').read())"
        honest = {"stdlib_numpy": "import heapq, json, numpy\ndef f():\n    return int(numpy.array([heapq.nsmallest(1, "
                                  "json.loads('[1, 2]'))[0]]).sum())"}
        verdicts = run(problem_factory(), {**hostile, **honest})
    finally:
        for path in written:
            path.unlink()
        if home_dir.exists():
            home_dir.rmdir()
    assert verdicts["stdlib_numpy"].passed, verdicts["stdlib_numpy"]
    for name in hostile:
        v = verdicts[name]
        assert not v.passed and f"SECRET-{tag}" not in v.detail, (name, v)
        if name.startswith("read_"):
            assert v.detail.startswith(("PermissionError", "FileNotFoundError")), (name, v)
    assert f"canary-{tag}" not in verdicts["list_home"].detail, verdicts["list_home"]  # not even the names
    assert verdicts["shadow"].detail.startswith(("PermissionError", "FileNotFoundError")), verdicts["shadow"]


def test_workers_start_for_a_checkout_that_is_not_installed(tmp_path):
    """`python -m codealign` from a checkout (not installed, no PYTHONPATH: codealign is found
    through the caller's cwd only) still starts sandbox workers, which run from `/`."""
    root = Path(__file__).resolve().parents[2]
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from codealign.tasks.evaluation.execute import execute\n"
        "from codealign.tasks.generation.samples import Sample\n"
        "from codealign.tasks.problems.registry import load_benchmark\n"
        "from codealign.tasks.sandbox.limits import Limits\n"
        "p = load_benchmark('toy')[0]\n"
        "[v] = execute([p], [Sample(p.task_id, 0, solution=p.canonical_solution)], Limits(), workers=1,\n"
        "              use_reference=False)\n"
        "print('verdict', v.status)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verdict passed" in done.stdout, done.stdout[-2000:]


def test_a_worker_is_given_the_directory_codealign_was_imported_from(monkeypatch):
    """The fix behind the test above, checked where an editable install would hide it: the
    worker's PYTHONPATH starts with the directory holding the imported codealign package (a
    checkout's root), and keeps the caller's own entries after it."""
    import codealign
    from codealign.tasks.sandbox import pool

    class Started(Exception):
        pass

    given: dict[str, str] = {}

    def popen(args, **kwargs):
        given.update(kwargs["env"])
        raise Started

    monkeypatch.setattr(pool, "_make_cgroup", lambda _: None)
    monkeypatch.setattr(pool.subprocess, "Popen", popen)
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    with pytest.raises(Started):
        pool.SandboxPool(1)._start_worker()
    root = str(Path(os.path.abspath(codealign.__file__)).parent.parent)
    assert given["PYTHONPATH"].split(os.pathsep) == [root, "/somewhere/else"]
