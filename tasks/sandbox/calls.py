"""The call protocol between a judge and a sample process, and the sample's side of it.

A sample process is a *function server*: it runs the model's program once, then answers calls
(``name(*args, **kwargs)``) that its judge sends, one at a time, with the result in the
data-only encoding of :mod:`codealign.tasks.sandbox.plain`.  Tests and expected outputs stay with the
judge; nothing the sample sends is ever unpickled.

Frames on the sample's private socket (fd :data:`CALL_FD`): one kind byte, an 8-byte length,
the payload.
"""

from __future__ import annotations

import builtins
import os
import struct
from typing import NoReturn

from codealign.tasks.sandbox import plain

CALL_FD = 3
HEADER = struct.Struct("<cQ")

# judge -> sample
CALL = b"c"  # payload: encode((name, args, kwargs, return_args))
# sample -> judge
READY = b"r"  # the program ran to its end; calls may come
LOAD_FAILED = b"x"  # payload: encode((status, detail)): the program itself failed
VALUE = b"v"  # payload: encode((result, args or None))
RAISED = b"e"  # payload: encode((status, exception type name, detail))
NOT_PLAIN = b"n"  # payload: encode(type name)
VERDICT = b"V"  # in-process modes (compiled languages, judged_in_process): JSON verdict


def send_frame(fd: int, kind: bytes, payload: bytes = b"") -> None:
    view = memoryview(HEADER.pack(kind, len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _recv_frame(fd: int) -> tuple[bytes, bytes]:
    kind, size = HEADER.unpack(_read_exact(fd, HEADER.size))
    return kind, _read_exact(fd, size)


def _raised(exc: BaseException) -> bytes:
    from codealign.tasks.sandbox.harness import classify_exception

    status, detail = classify_exception(exc)
    name = type(exc).__name__ if type(type(exc).__name__) is str else "Exception"
    return plain.encode((status, str(name), str(detail)))


_MUTABLE = (list, dict, set, bytearray)


def serve(program: str) -> NoReturn:
    """Run ``program``, then answer calls on :data:`CALL_FD` until the judge is done (it then
    has the worker kill this process).  Runs in the sample process; never returns."""
    from codealign.tasks.sandbox.harness import first_line, fresh_globals

    fd = CALL_FD
    namespace = fresh_globals()
    try:
        code = compile(program, "<sample>", "exec")
    except (SyntaxError, ValueError) as exc:
        send_frame(fd, LOAD_FAILED, plain.encode(("error", first_line(exc))))
        os._exit(0)
    try:
        exec(code, namespace)  # noqa: S102 - this is the sandbox
    except BaseException as exc:  # noqa: BLE001 - every way out is reported
        status, _, detail = plain.decode(_raised(exc))
        send_frame(fd, LOAD_FAILED, plain.encode((status, detail)))
        os._exit(0)
    send_frame(fd, READY)
    while True:
        try:
            kind, payload = _recv_frame(fd)
            if kind != CALL:
                os._exit(0)
            name, args, kwargs, return_args = plain.decode(payload)
        except BaseException:  # noqa: BLE001 - the judge went away
            os._exit(0)
        fn = namespace.get(name)
        if fn is None or not callable(fn):
            send_frame(fd, RAISED, plain.encode(("error", "NameError", f"NameError: name {name!r} is not defined")))
            continue
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the judge, which decides
            send_frame(fd, RAISED, _raised(exc))
            continue
        try:
            mutated = args if return_args and any(type(a) in _MUTABLE for a in args) else None
            send_frame(fd, VALUE, plain.encode((result, mutated)))
        except plain.NotPlainData as exc:
            send_frame(fd, NOT_PLAIN, plain.encode(exc.type_name))
        except RecursionError:
            send_frame(fd, NOT_PLAIN, plain.encode("a value nested too deeply"))
        except MemoryError:
            send_frame(fd, RAISED, plain.encode(("memory", "MemoryError", "MemoryError")))


def builtin_exception(name: str) -> type[BaseException] | None:
    """The builtin exception class called ``name`` (None for anything else): what a judge
    raises in the test code when the sample's function raised it."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None
