"""The judge: the trusted side of a sample's judgement, in a process samples cannot reach.

It holds the tests and the expected outputs, never forks a sample, and talks to the sample's
function server (:mod:`codealign.tasks.sandbox.calls`) over a private socket: it sends each call's
arguments, decodes the plain value that comes back and compares it here.  So an object whose
``__eq__`` always says yes, a patched ``math.isclose``, or a walk of the sample's own stack
frames finds nothing to exploit: the comparison and the answers are in another process.

The judge runs in the process that owns the sandbox pool (one thread per worker).  Samples run
in a PID namespace of their own under another uid, so they can neither see nor trace it.  Each
call's CPU time is read from the sample's process CPU clock by the judge (outside the sample's
control), which is how per-input limits (evalplus') and per-statement limits are enforced.

Drivers: :func:`differential` (evalplus' "+" benchmarks, oracles included), :func:`record`
(the canonical solution's outputs, which become the expected outputs), :func:`proxied` (test
code, e.g. HumanEval's ``check(candidate)`` or MBPP's asserts, runs here with ``candidate`` a
proxy to the sample) and :func:`asserts` (the same, counted statement by statement).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import math
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from codealign.tasks.sandbox import calls, plain
from codealign.tasks.sandbox.harness import classify_exception
from codealign.tasks.sandbox.records import AssertTests, DifferentialJob, ProxiedTests

# Outputs whose encoding is larger than this are compared by digest (exactly), streaming:
# MBPP+/255's largest output is about 1.6 GiB.
HUGE_BYTES = 256 << 20
MAX_MESSAGE_BYTES = 1 << 20  # anything but a value is short


@dataclass(frozen=True)
class HugeValue:
    """A value too large to hold: the sha256 and size of its encoding."""

    sha256: str
    size: int


class SampleGone(BaseException):
    """The sample process ended (or its worker reported it ended) before answering."""


class CallTimeout(BaseException):
    """A call ran past its CPU limit (measured on the sample's process CPU clock)."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"CPU limit {limit:.2f}s exceeded")
        self.limit = limit


class NotPlainResult(BaseException):
    """The sample answered with a value that is not plain data (a BaseException, so the test
    code's ``except Exception`` cannot turn it into a pass)."""


class SampleExited(BaseException):
    """The sample's function raised SystemExit."""


class Unproxiable(BaseException):
    """The tests pass something that cannot cross to the sample (a class, an object of the
    sample's own classes): the problem is judged in the sample's process instead."""


class ProtocolError(BaseException):
    """The sample wrote something that is not a frame of the call protocol."""


@dataclass
class Outcome:
    """What the judge concluded.  ``gone``: the conversation was cut by the sample's end, so
    the worker's exit report decides the status; ``flag`` names a failure class the verdict
    carries (``not_plain_data``, ``ended_early``)."""

    status: str
    detail: str = ""
    counts: dict[str, int] | None = None
    tests_cpu_s: float | None = None
    outputs: Any = None
    flag: str = ""
    gone: bool = False


class Channel:
    """The judge's end of one sample's call socket.  ``control`` is the worker's socket: when it
    becomes readable the worker has reported the sample's end (even if a stray process still
    holds the call socket open)."""

    def __init__(self, sock: socket.socket, control: socket.socket | None) -> None:
        self.sock = sock
        self.control = control
        self.pid: int | None = None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ, "sample")
        if control is not None:
            self._sel.register(control, selectors.EVENT_READ, "worker")
        self._buf = bytearray()
        # (CPU clock at the start, limit): the statement being judged, whose calls share its limit
        self.budget: tuple[float, float] | None = None

    def close(self) -> None:
        self._sel.close()
        self.sock.close()

    # ---------------------------------------------------------------- the sample's CPU clock
    def cpu(self) -> float | None:
        """The sample process's CPU seconds (all its threads), read from outside it."""
        if self.pid is None:
            return None
        try:
            return time.clock_gettime((~self.pid << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
        except OSError:
            return None

    # ---------------------------------------------------------------- frames
    def _fill(self, n: int, cpu_start: float | None, limit: float | None) -> None:
        """Read until the buffer holds ``n`` bytes, waiting on the sample and its worker."""
        while len(self._buf) < n:
            timeout = None
            if limit is not None and cpu_start is not None:
                now = self.cpu()
                if now is not None and now - cpu_start > limit:
                    raise CallTimeout(limit)
                timeout = max(0.002, limit - ((now or cpu_start) - cpu_start))
            events = self._sel.select(timeout)
            if any(key.data == "sample" for key, _ in events):
                self._read_some()
            elif events:  # only the worker spoke: the sample is over
                self._read_some(block=False)
                if len(self._buf) < n:
                    raise SampleGone

    def _read_some(self, block: bool = True) -> None:
        try:
            if self.pid is None:
                data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(12))
                for level, kind, payload in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
                        self.pid = struct.unpack("iII", payload[:12])[0] or None
            else:
                data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            raise SampleGone from None
        if not data:
            raise SampleGone
        self._buf += data

    def read_frame(self, cpu_start: float | None = None, limit: float | None = None) -> tuple[bytes, Any]:
        """The next frame: its kind and payload (a :class:`HugeValue` for huge values)."""
        head = calls.HEADER.size
        self._fill(head, cpu_start, limit)
        kind, size = calls.HEADER.unpack_from(self._buf)
        if size > HUGE_BYTES and kind == calls.VALUE:
            return kind, self._digest(head, size, cpu_start, limit)
        if size > MAX_MESSAGE_BYTES and kind != calls.VALUE:
            raise ProtocolError(f"a {kind!r} frame of {size} bytes")
        self._fill(head + size, cpu_start, limit)
        payload = bytes(self._buf[head:head + size])
        del self._buf[:head + size]
        return kind, payload

    def _digest(self, head: int, size: int, cpu_start: float | None, limit: float | None) -> HugeValue:
        """Stream a huge payload into a digest instead of memory.  The payload is the encoding of
        ``(result, None)``: a 2-tuple header (tag + count) then the result, then ``N``."""
        h = hashlib.sha256()
        del self._buf[:head]
        left = size
        prefix = 5  # b"t" + u32 count of the (result, args) tuple
        while left:
            if not self._buf:
                self._fill(1, cpu_start, limit)
            piece = self._buf[:left]
            del self._buf[:len(piece)]
            left -= len(piece)
            if prefix:
                skip = min(prefix, len(piece))
                piece, prefix = piece[skip:], prefix - skip
            h.update(piece if left else piece[:-1])  # the final b"N" is the (absent) args
        return HugeValue(h.hexdigest(), size - 6)

    def send(self, kind: bytes, payload: bytes) -> None:
        data = memoryview(calls.HEADER.pack(kind, len(payload)) + payload)
        while data:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                self._wait_writable()
                continue
            except OSError:
                raise SampleGone from None
            data = data[sent:]

    def _wait_writable(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_WRITE)
            if self.control is not None:
                sel.register(self.control, selectors.EVENT_READ)
            for key, _ in sel.select():
                if key.fileobj is self.control:
                    raise SampleGone

    # ---------------------------------------------------------------- conversation
    def start(self) -> Outcome | None:
        """Wait for the program to load: None when it is ready for calls, else its outcome."""
        try:
            kind, payload = self.read_frame()
        except SampleGone:
            return Outcome("error", "ended before answering every call (while loading)", flag="ended_early",
                           gone=True)
        if kind == calls.READY:
            return None
        if kind == calls.LOAD_FAILED:
            status, detail = _decoded(payload)
            return Outcome(str(status), str(detail))
        raise ProtocolError(f"unexpected frame {kind!r} while loading")

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None,
             limit: float | None = None, return_args: bool = False,
             encoded: bytes | None = None) -> tuple[Any, Any, float]:
        """``name(*args, **kwargs)`` in the sample: (value, the arguments as the call left them
        or None, CPU seconds).  Raises what the sample's function raised (builtin exceptions as
        themselves), :class:`NotPlainResult`, :class:`CallTimeout` or :class:`SampleGone`."""
        try:
            payload = encoded or plain.encode((name, tuple(args), dict(kwargs or {}), return_args))
        except plain.NotPlainData as exc:
            raise Unproxiable(f"the tests pass a value that is not plain data: {exc.type_name}") from None
        start = self.cpu()
        clock_start = start
        if limit is None and self.budget is not None:
            clock_start, limit = self.budget
        self.send(calls.CALL, payload)
        kind, body = self.read_frame(clock_start, limit)
        end = self.cpu()
        used = (end - start) if start is not None and end is not None else 0.0
        if limit is not None and clock_start is not None and end is not None and end - clock_start > limit:
            raise CallTimeout(limit)
        if kind == calls.VALUE:
            if isinstance(body, HugeValue):
                return body, None, used
            value, mutated = _decoded(body)
            return value, mutated, used
        if kind == calls.NOT_PLAIN:
            raise NotPlainResult(f"returned a value that is not plain data: {_decoded(body)}")
        if kind == calls.RAISED:
            status, name_, detail = _decoded(body)
            raise _exception(str(status), str(name_), str(detail))
        raise ProtocolError(f"unexpected frame {kind!r}")


def _decoded(payload: bytes) -> Any:
    try:
        return plain.decode(payload)
    except plain.MalformedData as exc:
        raise ProtocolError(str(exc)) from None


class SampleMemoryError(BaseException):
    """The sample's function ran out of memory."""


def _exception(status: str, name: str, detail: str) -> BaseException:
    if status == "memory":
        return SampleMemoryError(detail)
    if name == "SystemExit":
        return SampleExited(detail)
    message = detail.split(": ", 1)[1] if detail.startswith(f"{name}: ") else ("" if detail == name else detail)
    cls = calls.builtin_exception(name)
    if cls is not None:
        try:
            return cls(message) if message else cls()
        except Exception:  # noqa: BLE001 - an exception class with required arguments
            pass
    return SampleRaised(name, detail)


class SampleRaised(Exception):
    """The sample's function raised an exception that is not a builtin one."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


def outcome_of(exc: BaseException, where: str = "") -> Outcome:
    """The verdict an exception in judging means (``where`` prefixes the detail)."""
    prefix = f"{where}: " if where else ""
    if isinstance(exc, CallTimeout):
        return Outcome("timeout", f"{prefix}{exc}")
    if isinstance(exc, SampleGone):
        return Outcome("error", f"{prefix}ended before answering every call", flag="ended_early", gone=True)
    if isinstance(exc, NotPlainResult):
        return Outcome("failed", f"{prefix}{exc}", flag="not_plain_data")
    if isinstance(exc, SampleExited):
        return Outcome("error", f"{prefix}exited before the tests completed (SystemExit)")
    if isinstance(exc, SampleMemoryError):
        return Outcome("memory", f"{prefix}MemoryError")
    if isinstance(exc, SampleRaised):
        return Outcome("error", f"{prefix}{str(exc)[:300]}")
    if isinstance(exc, ProtocolError):
        return Outcome("crashed", f"{prefix}protocol: {exc}")
    status, detail = classify_exception(exc)
    return Outcome(status, prefix + detail)


# ------------------------------------------------------------------ differential ("+")

def differential(ch: Channel, tests: DifferentialJob) -> Outcome:
    """evalplus' judgement: every input in order, each under its own CPU limit; a pass carries
    the CPU seconds spent in the entry point (the efficiency metric's numerator)."""
    groups = (
        ("base", tests.base_inputs, tests.base_expected, tests.base_limits),
        ("plus", tests.plus_inputs, tests.plus_expected, tests.plus_limits),
    )
    spent = 0.0
    for group, inputs, expected, limits in groups:
        assert expected is not None and len(expected) == len(inputs), "expected outputs missing"
        atol = tests.atol  # evalplus restarts its tolerance state for each group
        payloads = _call_payloads(tests, group)
        for i, (inp, exp) in enumerate(zip(inputs, expected)):
            limit = limits[i] if limits else None
            try:
                out, _, used = ch.call(tests.entry_point, (), limit=limit, encoded=payloads[i])
            except Unproxiable:
                raise
            except CallTimeout:
                return Outcome("timeout", f"{group} input #{i}: CPU limit {limit:.2f}s for this input exceeded")
            except BaseException as exc:  # noqa: BLE001 - every failure is a verdict
                outcome = outcome_of(exc, f"{group} input #{i}")
                if outcome.status == "error" and not outcome.gone and isinstance(exc, Exception):
                    outcome.status = "failed"
                return outcome
            spent += used
            ok, atol = matches(tests.flavor, tests.entry_point, inp, out, exp, atol)
            if not ok:
                return Outcome("failed", f"{group} input #{i}: wrong output")
    return Outcome("passed", tests_cpu_s=spent)


_PAYLOADS: dict[tuple[int, str], tuple[Any, list[bytes]]] = {}
_PAYLOADS_LOCK = threading.Lock()


def _call_payloads(tests: DifferentialJob, group: str) -> list[bytes]:
    """Each input's CALL payload, encoded once per task's input list and shared by every sample
    judged against it (a sweep judges tens of samples per task).  The last few lists only."""
    inputs = tests.base_inputs if group == "base" else tests.plus_inputs
    with _PAYLOADS_LOCK:
        hit = _PAYLOADS.get((id(inputs), tests.entry_point))
        if hit is not None and hit[0] is inputs:
            return hit[1]
    try:
        payloads = [plain.encode((tests.entry_point, tuple(inp), {}, False)) for inp in inputs]
    except plain.NotPlainData as exc:
        raise Unproxiable(f"the tests pass a value that is not plain data: {exc.type_name}") from None
    with _PAYLOADS_LOCK:
        while len(_PAYLOADS) >= 16:
            _PAYLOADS.pop(next(iter(_PAYLOADS)))
        _PAYLOADS[(id(inputs), tests.entry_point)] = (inputs, payloads)
    return payloads


def record(ch: Channel, tests: DifferentialJob) -> Outcome:
    """The canonical solution's output and CPU time on every input (evalplus' ground truth)."""
    outputs: dict[str, list[Any]] = {}
    for group, inputs in (("base", tests.base_inputs), ("plus", tests.plus_inputs)):
        outs, cpu = [], []
        for i, inp in enumerate(inputs):
            try:
                out, _, used = ch.call(tests.entry_point, tuple(inp))
            except Unproxiable:
                raise
            except BaseException as exc:  # noqa: BLE001
                return outcome_of(exc, f"{group} input #{i}")
            outs.append(out is not None if tests.output_not_none else out)
            cpu.append(used)
        outputs[group], outputs[f"{group}_cpu"] = outs, cpu
    return Outcome("passed", outputs=outputs)


# ------------------------------------------------------------------ test code with a proxy

class _Proxy:
    """Stands for the sample's function ``name`` in test code that runs in the judge."""

    __slots__ = ("_channel", "_name", "__name__")

    def __init__(self, channel: Channel, name: str) -> None:
        self._channel, self._name, self.__name__ = channel, name, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mutable = any(type(a) in (list, dict, set, bytearray) for a in args)
        value, mutated, _ = self._channel.call(self._name, args, kwargs, return_args=mutable)
        if mutated is not None:
            for original, after in zip(args, mutated):
                _apply_mutation(original, after)
        return value

    def __repr__(self) -> str:
        return f"<sample function {self._name}>"


def _apply_mutation(original: Any, after: Any) -> None:
    """Arguments a call changed in place are changed here too (in-place tests keep working)."""
    t = type(original)
    if t is not type(after) or original == after:
        return
    if t is list or t is bytearray:
        original[:] = after
    elif t is dict or t is set:
        original.clear()
        original.update(after)


class _TestNamespace(dict):
    """Globals for test code: a name neither the tests, the trusted helpers nor the builtins
    define stands for the sample's function of that name (a test may call the function by its
    name, or call another function the program defines)."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(__builtins__=builtins, __name__="__codealign_tests__")
        self._channel = channel

    def __missing__(self, name: str) -> Any:
        if hasattr(builtins, name):
            raise KeyError(name)
        return _Proxy(self._channel, name)


def trusted_helpers(canonical_solution: str, prompt: str, entry_point: str) -> str:
    """The imports and prompt-given helpers the tests may use (HumanEval/32's ``poly``, /38's
    ``encode_cyclic``, /50's ``encode_shift``): top-level statements of the canonical solution
    that appear word for word in the prompt, and its imports; never the entry point.  A helper
    the prompt does not give is the sample's own: test code reaches it through the proxy."""
    try:
        tree = ast.parse(canonical_solution)
    except SyntaxError:
        return ""
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            keep.append(ast.get_source_segment(canonical_solution, node) or "")
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name != entry_point:
            segment = ast.get_source_segment(canonical_solution, node) or ""
            if segment and segment in prompt:
                keep.append(segment)
    return "\n".join(keep)


def proxied(ch: Channel, tests: ProxiedTests) -> Outcome:
    """Run the test code here, each call of the sample's functions going to the sample."""
    namespace = _TestNamespace(ch)
    namespace[tests.entry_point] = _Proxy(ch, tests.entry_point)
    try:
        exec(compile(tests.helpers, "<trusted helpers>", "exec"), namespace)  # noqa: S102 - trusted
        namespace[tests.entry_point] = _Proxy(ch, tests.entry_point)
        exec(compile(tests.code, "<tests>", "exec"), namespace)  # noqa: S102 - the benchmark's tests
    except Unproxiable:
        raise
    except BaseException as exc:  # noqa: BLE001 - every way out is a verdict
        return outcome_of(exc)
    return Outcome("passed")


def asserts(ch: Channel, tests: AssertTests) -> Outcome:
    """Each statement under its own CPU limit (the sample's CPU while it runs); every statement
    runs, a failure does not stop the count.  Passed only if all passed."""
    namespace = _TestNamespace(ch)
    if tests.setup:
        try:
            exec(compile(tests.setup, "<test setup>", "exec"), namespace)  # noqa: S102 - given, trusted
        except Unproxiable:
            raise
        except BaseException as exc:  # noqa: BLE001
            outcome = outcome_of(exc, "test setup")
            outcome.counts = {"passed": 0, "total": len(tests.statements)}
            return outcome
    passed, first_failure, flag = 0, "", ""
    for i, statement in enumerate(tests.statements):
        start = ch.cpu()
        ch.budget = (start, tests.limit_s) if start is not None else None
        try:
            exec(compile(statement, f"<test {i}>", "exec"), namespace)  # noqa: S102 - given, trusted
            end = ch.cpu()
            if start is not None and end is not None and end - start > tests.limit_s:
                raise CallTimeout(tests.limit_s)
            passed += 1
            continue
        except Unproxiable:
            raise
        except (SampleGone, ProtocolError, SampleExited) as exc:
            outcome = outcome_of(exc, f"test #{i}")
            outcome.counts = {"passed": passed, "total": len(tests.statements)}
            return outcome
        except CallTimeout:
            detail = f"CPU limit {tests.limit_s:g}s exceeded"
        except BaseException as exc:  # noqa: BLE001 - a failing test is counted, not fatal
            outcome = outcome_of(exc)
            detail, flag = outcome.detail or type(exc).__name__, flag or outcome.flag
        first_failure = first_failure or f"test #{i}: {detail}"
    counts = {"passed": passed, "total": len(tests.statements)}
    return Outcome("passed" if passed == len(tests.statements) else "failed", first_failure, counts, flag=flag)


# --------------------------------------------------------------------- evalplus' oracles

MBPP_SET_EQ = frozenset(
    {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
     "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
)
MBPP_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


def _surface_area(base_edge: float, height: float) -> int:
    """Reference for Mbpp/581 (height is the perpendicular height of the pyramid)."""
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant) / 2)


def _digit_distance(a: int, b: int) -> int:
    """Reference for Mbpp/558: numbers are zero-padded to the same length."""
    sa, sb = str(a), str(b)
    width = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(width), sb.zfill(width)))


def _poly(xs: list[float], x: float) -> float:
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def matches(flavor: str, entry_point: str, inp: Any, out: Any, exp: Any, atol: float) -> tuple[bool, float]:
    """Does ``out`` match ``exp``?  Returns the verdict and the tolerance to use from now on
    (evalplus switches to 1e-6 for the rest of a group once it meets a float expectation).
    Both are plain values (decoded here, in the judge), so Python's own equality is honest."""
    try:
        return _matches(flavor, entry_point, inp, out, exp, atol)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):  # e.g. an oracle on a wrong type
        return False, atol


def _matches(flavor: str, entry_point: str, inp: Any, out: Any, exp: Any, atol: float) -> tuple[bool, float]:
    exact = out == exp
    if flavor == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164: any answer is accepted
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - _surface_area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == _digit_distance(*inp)
        elif entry_point in MBPP_SET_EQ:
            exact = set(out) == set(exp)
        elif entry_point in MBPP_NOT_NONE:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if flavor == "humaneval" and entry_point == "find_zero":  # HumanEval/32: any root
        return bool(abs(_poly(*inp, out)) <= atol), atol
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        if type(out) is not type(exp):
            return False, atol
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False, atol
        import numpy as np

        return bool(np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
    if not exact:
        return False, atol
    return True, atol

