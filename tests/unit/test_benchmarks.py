"""Benchmark loading: counts, splits, program assembly, and clear errors for bad data files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from codealign.tasks.problems import registry as benchmarks
from codealign.tasks.problems.registry import DATA_FILES, DataFileError, load_benchmark

EXPECTED_COUNTS = {
    "humaneval": 164,
    "humaneval+": 164,
    "mbpp": 974,
    "mbpp-sanitized": 427,
    "mbpp+": 378,
    "humaneval-infill-single": 1033,
    "humaneval-infill-multi": 5815,
    "humaneval-infill-span": 1640,
    "humaneval-infill-span-light": 164,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_counts_and_unique_ids(name):
    problems = load_benchmark(name)
    assert len(problems) == EXPECTED_COUNTS[name]
    assert len({p.task_id for p in problems}) == len(problems)
    assert all(p.entry_point for p in problems)


def test_mbpp_standard_splits():
    problems = load_benchmark("mbpp")
    sizes = {s: len(load_benchmark("mbpp", split=s)) for s in ("prompt", "test", "validation", "train")}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    assert problems[10].task_id == "Mbpp/11" and problems[10].split == "test"


def test_mbpp_plus_inputs_get_their_python_types():
    by_id = {p.task_id: p for p in load_benchmark("mbpp+")}
    assert isinstance(by_id["Mbpp/2"].differential.base_inputs[0][0], tuple)
    assert isinstance(by_id["Mbpp/124"].differential.base_inputs[0][1], complex)


def test_solutions_are_assembled_per_benchmark():
    he = load_benchmark("humaneval")[0]
    assert he.solution("    return 1\n") == he.prompt + "    return 1\n"
    assert f"check({he.entry_point})" in he.test_program(he.canonical_solution)
    infill = load_benchmark("humaneval-infill-single")[0]
    assert infill.canonical_solution == infill.prompt + infill.canonical_completion + infill.suffix
    mbpp = load_benchmark("mbpp")[0]
    assert mbpp.solution("def min_cost(): pass") == "def min_cost(): pass"
    assert mbpp.entry_point == "min_cost"
    assert mbpp.instruction.startswith("Write a function") and "should pass these tests" in mbpp.instruction


def test_unknown_benchmark_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        load_benchmark("nope")


def _copy_data(tmp_path: Path) -> Path:
    src = benchmarks.data_dir()
    for name in DATA_FILES:
        shutil.copy(src / name, tmp_path / name)
    return tmp_path


def test_missing_file_names_file_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEALIGN_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(benchmarks, "_CACHE", {})
    with pytest.raises(DataFileError, match=r"MbppPlus-v0\.2\.0\.jsonl\.gz: data file missing.*mbppplus_release"):
        load_benchmark("mbpp+")


def test_corrupt_file_is_rejected_by_sha256(tmp_path, monkeypatch):
    data = _copy_data(tmp_path)
    target = data / "HumanEval-SingleLineInfilling.jsonl.gz"
    raw = gzip.decompress(target.read_bytes()).replace(b"return", b"retrun", 1)
    target.write_bytes(gzip.compress(raw))
    monkeypatch.setenv("CODEALIGN_DATA_DIR", str(data))
    monkeypatch.setattr(benchmarks, "_CACHE", {})
    with pytest.raises(DataFileError, match=r"SingleLineInfilling\.jsonl\.gz: sha256 .* does not match"):
        load_benchmark("humaneval-infill-single")


def test_reference_cache_is_per_task_and_a_subset_evicts_nothing(tmp_path, monkeypatch, capsys):
    """Canonical runs are cached per task: running a subset (``--limit``, a test's few tasks)
    reuses the cached tasks and keeps the others; a task whose data changed is run again and its
    old version removed; benchmarks whose names prefix each other keep their own."""
    import dataclasses

    from codealign.tasks.evaluation.execute import reference_runs
    from codealign.tasks.sandbox.pool import SandboxPool

    monkeypatch.setenv("CODEALIGN_CACHE_DIR", str(tmp_path))
    toy, infill = load_benchmark("toy")[:3], load_benchmark("toy-infill")[:2]

    def cached() -> list[str]:
        return sorted(f"{p.parent.name}/{p.name.rsplit('-', 1)[0]}" for p in (tmp_path / "reference").glob("*/*.pkl"))

    with SandboxPool(1) as pool:
        first = reference_runs(toy[:2], pool)
        reference_runs(infill, pool)  # the same task ids, another benchmark
        capsys.readouterr()
        assert reference_runs(toy[:1], pool) == {toy[0].task_id: first[toy[0].task_id]}  # from the cache
        assert "running" not in capsys.readouterr().err
        reference_runs(toy, pool)
        assert "(1 tasks, cached afterwards)" in capsys.readouterr().err  # only the one not cached yet
        changed = dataclasses.replace(toy[0], canonical_completion=toy[0].canonical_completion + "\n# v2\n")
        reference_runs([changed], pool)
    flat = [t.task_id.replace("/", "_") for t in toy]
    assert cached() == sorted([*(f"toy/{t}" for t in flat), *(f"toy-infill/{t.task_id.replace('/', '_')}"
                                                               for t in infill)])
