"""Slim the wheel folder that `make gpu-wheels` carries to a bare GPU machine (docs/gpu.md).

Why: the folder must fit what such machines are handed (64 MiB), and pyarrow (what ``datasets``
stores tables in) is 55 MB of it.  Its Arrow Flight RPC library, C++ headers, Cython sources
and tests are ~13 MB that neither ``datasets`` nor TRL loads (they read and write Arrow and
Parquet; ``pyarrow.lib`` links no Flight library), so they are left out of a rewritten wheel
whose RECORD lists what remains.  ``import pyarrow``, ``pyarrow.parquet`` and ``pyarrow.dataset``
work as before; ``pyarrow.flight`` does not.

Run: ``python -m codealign.infra.gpu_wheels FOLDER``.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

LEFT_OUT = re.compile(r"""^pyarrow/(?:include/|tests/|src/|.*\.(?:pyx|pxd|pxi)$|.*flight)""")


def slim_pyarrow(wheel: Path) -> tuple[int, int]:
    """Rewrite ``wheel`` (a pyarrow wheel) in place without :data:`LEFT_OUT`'s members; returns
    its size before and after."""
    before = wheel.stat().st_size
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if LEFT_OUT.match(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines() if not LEFT_OUT.match(line.split(",")[0])]
                data = ("\n".join(kept) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    slim.replace(wheel)
    return before, wheel.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    wheels = sorted(args.folder.glob("pyarrow-*.whl"))
    if not wheels:
        print(f"{args.folder}: no pyarrow wheel to slim", file=sys.stderr)
        return 2
    for wheel in wheels:
        before, after = slim_pyarrow(wheel)
        print(f"{wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
