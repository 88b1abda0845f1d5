"""The toy world's preference-data sources (registered as ``codealign.sources`` entry points)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from codealign.tasks.preferences.sources import Instruction, Source
from codealign.tasks.toy import families
from codealign.tasks.toy.families import TOY_MODEL_TRAIN_PER_FAMILY, toy_tasks

# Toy sources: training-split tasks per family that the toy models were not trained on (up to
# 80 each: 345 in all, as `lists`, `loops` and `dicts` have fewer training tasks).  With 40 (217
# instructions) the toy sweep's best gain was +8.3 points; with 80, +15 (issue 25; the same
# preset settings in both).
TOY_SOURCE_PER_FAMILY = 80


def toy_source(name: str) -> Source:
    """``toy-train`` (instructions with given tests) or ``toy-seeds`` (SelfCodeAlign seeds)."""
    tasks = toy_tasks("train", TOY_SOURCE_PER_FAMILY, skip=TOY_MODEL_TRAIN_PER_FAMILY)
    digest = hashlib.sha256(Path(families.__file__).read_bytes() + f"{name}:{TOY_SOURCE_PER_FAMILY}".encode())
    if name == "toy-train":
        items = [Instruction(f"toy/{t.family}/{t.name}", name, t.instruction, tuple(t.asserts()), "given", t.name,
                             prompt=t.prompt) for t in tasks]
    else:
        items = [Instruction(f"toy-seed/{t.family}/{t.name}", name, "", (), "self", seed=t.source) for t in tasks]
    return Source(name, f"toy://{name}", digest.hexdigest(), items)
