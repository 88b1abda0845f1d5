"""File helpers every stage shares: atomic writes, JSONL reading with ``FILE:LINE`` errors, and
codealign's one cache directory.

Why one module: a reader must never see half a file (a crashed run leaves nothing that looks
complete), and a user with a bad input file must be told which line is wrong — the same way
for samples, verdicts, shots, instruction files and data files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from codealign.tasks.errors import CodealignError


class InputError(CodealignError, ValueError):
    """Bad user input; the message names the file and line (``FILE:LINE: what is wrong``)."""


def cache_dir() -> Path:
    """codealign's cache (reference runs, toy models, remote checkpoint copies):
    ``$CODEALIGN_CACHE_DIR``, else ``$XDG_CACHE_HOME/codealign``, else ``~/.cache/codealign``.
    Read on every call, so a test or a worker that sets the variable late is still obeyed."""
    explicit = os.environ.get("CODEALIGN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codealign"


def data_dir() -> Path:
    """Where benchmark data files live: ``$CODEALIGN_DATA_DIR``, else ``../shared/datasets``."""
    env = os.environ.get("CODEALIGN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


@contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it is flushed to disk and
    renamed over ``path`` (all or nothing), on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """A fresh temporary directory beside ``target`` to fill; on success it replaces ``target``
    whole, on failure it is removed.  Readers tell a complete directory by a marker file the
    writer puts in last (``.complete``, ``DONE``)."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(target, ignore_errors=True)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path, binary=True) as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, jsonl_text(records))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


# Files and folders a user gave this process (benchmark and source files, local stores): the
# sandbox hides them from samples, as it hides the shipped benchmarks (tasks.sandbox.pool).
_KEPT_FROM_SAMPLES: set[str] = set()


def keep_from_samples(path: str | Path) -> None:
    """Record that samples must never see ``path`` (it may hold answers)."""
    _KEPT_FROM_SAMPLES.add(os.path.realpath(path))


def kept_from_samples() -> list[str]:
    return sorted(_KEPT_FROM_SAMPLES)


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file, or an :class:`InputError` naming it."""
    keep_from_samples(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read {what} ({exc})") from exc


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, or an :class:`InputError` naming it."""
    keep_from_samples(path)
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def parse_jsonl(text: str, where: str, error: type[Exception] = InputError) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(FILE:LINE, object)`` for every non-blank line of a JSONL text; a line that is not a
    JSON object raises ``error`` naming ``where`` and the line."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        at = f"{where}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{at}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise error(f"{at}: expected a JSON object, got {type(record).__name__}")
        yield at, record


def read_jsonl(path: str | Path, what: str = "file", required: tuple[str, ...] = ()
               ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(FILE:LINE, object)`` for every record of a JSONL file, each checked to have the
    ``required`` fields."""
    for at, record in parse_jsonl(read_text(path, what), str(path)):
        for name in required:
            if name not in record:
                raise InputError(f"{at}: missing field {name!r}")
        yield at, record
