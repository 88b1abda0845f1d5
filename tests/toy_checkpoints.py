"""Checkpoint directories for tests: copies of toy-base that differ in one small file, so each
has its own content hash (and its own evaluation units) and samples the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_checkpoints(root: Path, toy_model_paths, steps) -> Path:
    for step in steps:
        target = root / f"checkpoint-{step}"
        shutil.copytree(toy_model_paths["toy-base"], target)
        (target / "trainer_state.json").write_text(json.dumps({"global_step": step}))  # not hashed
        (target / "step.txt").write_text(str(step))  # hashed: a distinct checkpoint
    return root
