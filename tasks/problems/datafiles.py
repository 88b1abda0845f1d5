"""The data files benchmarks are read from: the shipped ones (verified against a recorded sha256
before use) and users' own files (``evoeval:PATH`` and the like), with one error for a bad file.

Data files are read from ``CODEALIGN_DATA_DIR`` (default: ``../shared/datasets`` next to the
checkout; :func:`codealign.tasks.files.data_dir`).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from codealign.tasks.errors import CodealignError
from codealign.tasks.files import data_dir, parse_jsonl


class DataFileError(CodealignError, RuntimeError):
    """A benchmark data file is missing, corrupt or malformed (the message says which and why)."""


@dataclass(frozen=True)
class DataFile:
    """A data file we depend on, with where it comes from and the sha256 of its bytes on disk."""

    name: str
    sha256: str
    source: str


DATA_FILES: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile(
            "HumanEvalPlus-v0.1.10.jsonl.gz",
            "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
            "evalplus/humanevalplus_release HumanEvalPlus.jsonl.gz @ 200defce9e3429d28ca215b6dd061c0f7f31c18b",
        ),
        DataFile(
            "MbppPlus-v0.2.0.jsonl.gz",
            "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63",
            "evalplus/mbppplus_release MbppPlus.jsonl.gz @ 64fc4195b858a17cdfdb3324f0baf37939144e14 (v0.2.0)",
        ),
        DataFile(
            "mbpp.jsonl.gz",
            "2809de2a637dffecb4bd58128bcfe1250d0a335779b019956b7f3c28f646e4a6",
            "google-research/google-research mbpp/mbpp.jsonl (gzip -n -9)",
        ),
        DataFile(
            "sanitized-mbpp.json.gz",
            "0eb858cb58bf7086e5d0cfb944d2e75155936dd84d8235d887523637f7af4890",
            "google-research/google-research mbpp/sanitized-mbpp.json (gzip -n -9)",
        ),
        DataFile(
            "code_alpaca_2k.json.gz",
            "1b83f61829ae612aa7c587c6d14a77c2d59a56c028c3e753cae0d0357dfcb46b",
            "sahil280114/codealpaca data/code_alpaca_2k.json @ 2f78ddc5c682ed6738ad092bbbfa59ba915afcb0",
        ),
        DataFile(
            "new_codealpaca.json.gz",
            "68a55127c3556c6a3c04453f56a144b14890da593b0ef4f5bba47925c252a1f5",
            "sahil280114/codealpaca data/new_codealpaca.json @ 2f78ddc5c682ed6738ad092bbbfa59ba915afcb0",
        ),
        *(
            DataFile(f"humaneval_{lang}.jsonl.gz", sha,
                     f"THUDM/CodeGeeX codegeex/benchmark/humaneval-x/{lang}/data/humaneval_{lang}.jsonl.gz "
                     "@ 2838420b7b4492cf3d16bce5320e26e65960c9e2")
            for lang, sha in [
                ("cpp", "dcf2e280a1e91bbc3c5f90edb41397e8a9ac1ccc9f5d2b70082f0b0fbfb6dbb0"),
                ("go", "09126ef64ac68f87296c5f3781186aedc5dec799b114d9df99d6de4a715a7830"),
                ("java", "276f36db2eb7aeb864f36a19a2f4e1bb2460fb6e22ff100f0b5bedabe3799967"),
                ("js", "fe5d467f2c1a027b3f6f18d3729aca01f6458c1de2e2d1292a019c5aa9bed424"),
                ("rust", "ae5cabbbfc8fe25244a608b04f09ac3b324c645ac969dfc033756c12f0f9924c"),
            ]
        ),
        DataFile(
            "HumanEval-SingleLineInfilling.jsonl.gz",
            "1277073e7ddce163ef68598c2bca777f688a53df99422f097e37362090f88e1f",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
        DataFile(
            "HumanEval-MultiLineInfilling.jsonl.gz",
            "2f341612eee1d35da1357a4f365e0c0b3ba6e2b62eb491e88aaefa4855af0349",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
        DataFile(
            "HumanEval-RandomSpanInfilling.jsonl.gz",
            "b4f330d8a8ff97bf85d9def497dffcae4d741e506449386a877236e422e33e8d",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
        DataFile(
            "HumanEval-RandomSpanInfillingLight.jsonl.gz",
            "1432250ecac0cb56e6f97f8faf0970419ef892a98fda7e1f5aa4c4b87209b760",
            "openai/human-eval-infilling data/ @ 88062ff9859c875d04db115b698ed4b0f0395170",
        ),
    ]
}

@cache
def _verified_bytes(path: str, size: int, mtime_ns: int) -> bytes:
    name = Path(path).name
    expected = DATA_FILES[name]
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected.sha256:
        raise DataFileError(
            f"{path}: sha256 {digest} does not match the expected {expected.sha256}; "
            f"the file is corrupt or a different version. Get it again from {expected.source}."
        )
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # pragma: no cover - sha256 already guards this
        raise DataFileError(f"{path}: not a valid gzip file ({exc})") from exc


def read_data_file(name: str) -> bytes:
    """Decompressed bytes of a verified data file; a clear error if missing or corrupt."""
    info = DATA_FILES[name]
    path = data_dir() / name
    if not path.is_file():
        raise DataFileError(
            f"{path}: data file missing. It comes from {info.source}; "
            f"set CODEALIGN_DATA_DIR to the folder that holds it (CI uses ../shared/datasets)."
        )
    stat = path.stat()
    return _verified_bytes(str(path), stat.st_size, stat.st_mtime_ns)


def read_data_jsonl(name: str) -> list[dict[str, Any]]:
    """The records of a verified JSONL data file."""
    text = read_data_file(name).decode("utf-8")
    return [record for _, record in parse_jsonl(text, str(data_dir() / name), DataFileError)]


def read_user_file(path: str, kind: str) -> bytes:
    """The bytes of a user's benchmark file (gunzipped when gzipped); a ``DataFileError`` naming
    the file when it is missing or unreadable."""
    p = Path(path).expanduser()
    if not p.is_file():
        where = "" if p.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataFileError(f"{path}: {kind} benchmark file not found{where}; name an existing file, "
                     f"e.g. {kind}:/abs/path/to/file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read {kind} benchmark file ({exc.strerror or exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFileError(f"{path}: not a valid gzip file ({exc})") from exc
    return raw
