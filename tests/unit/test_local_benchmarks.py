"""Benchmarks from local files (tasks/problems/local_files.py): EvoEval, EvalPerf and
CODAL-Bench in their published formats, named ``evoeval:PATH`` etc."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.local_files import (
    JudgedBenchmarkError,
    JudgedProblem,
    evalperf_pe_inputs,
)
from codealign.tasks.problems.registry import BENCHMARKS, DataFileError, load_benchmark

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "local_benchmarks"
EVOEVAL = FIXTURES / "EvoEval_difficult.jsonl"
EVALPERF = FIXTURES / "evalperf.jsonl"
CODAL = FIXTURES / "codal-bench.jsonl"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# ---------------------------------------------------------------------------- names


def test_names_are_accepted_but_not_listed():
    assert f"evoeval:{EVOEVAL}" in BENCHMARKS and f"codal:{CODAL}" in BENCHMARKS
    assert "evalperf:relative/file.jsonl" in BENCHMARKS
    assert "evoeval:" not in BENCHMARKS and "nope:x.jsonl" not in BENCHMARKS
    assert not any(":" in name for name in BENCHMARKS)  # `codealign demo` iterates the shipped ones only
    with pytest.raises(ValueError, match="unknown benchmark 'nope:x'"):
        load_benchmark("nope:x")


def test_evaluation_settings_accept_file_benchmarks():
    from codealign.tasks.evaluation.settings import EvalSettings

    settings = EvalSettings(benchmarks=[f"evoeval:{EVOEVAL}", "humaneval+"])
    assert [p.task_id for p in settings.select_problems()[f"evoeval:{EVOEVAL}"]] == [
        "EvoEval/0", "EvoEval/1", "EvoEval/2"]


# ---------------------------------------------------------------------------- EvoEval


def test_evoeval_release_file_gives_differential_problems():
    name = f"evoeval:{EVOEVAL}"
    problems = load_benchmark(name)
    records = _lines(EVOEVAL)
    assert [p.task_id for p in problems] == [r["task_id"] for r in records]
    for p, r in zip(problems, records):
        assert p.benchmark == name
        assert (p.prompt, p.entry_point) == (r["prompt"], r["entry_point"])
        assert p.canonical_solution == r["prompt"] + "\n" + r["canonical_solution"]  # as EvoEval runs it
        assert f"`{r['entry_point']}`" in p.instruction and r["prompt"].strip() in p.instruction
        assert p.differential is not None and p.differential.flavor == "humaneval"
        assert len(p.differential.base_inputs) == len(r["inputs"]) and p.differential.plus_inputs == []
        assert p.metadata["variant"] == "difficult" and p.metadata["parent"] == r["parent"]
        assert p.metadata["where"].endswith(f"EvoEval_difficult.jsonl:{records.index(r) + 1}")
        compile(p.canonical_solution, p.task_id, "exec")
    first, second = problems[0].differential.base_inputs, problems[1].differential.base_inputs
    assert first[0] == [[(1.0, "a"), (1.2, "b"), (3.0, "a")], 0.5]
    assert first[4][0][0] == (math.inf, "a")  # float('inf'), read without eval
    assert second[4] == ["(" * 50 + ")" * 50]  # arithmetic on literals
    # EvoEval's special oracles (difficult EvoEval/10, /32) are flagged, not silently dropped
    assert not any(p.metadata["evoeval_special_oracle"] for p in problems)


def test_evoeval_json_object_keyed_by_task_id(tmp_path):
    records = _lines(EVOEVAL)
    keyed = {r["task_id"]: {k: v for k, v in r.items() if k != "task_id"} for r in records}
    path = tmp_path / "EvoEval_difficult.json"
    path.write_text(json.dumps(keyed, indent=2))
    from_json = load_benchmark(f"evoeval:{path}")
    from_jsonl = load_benchmark(f"evoeval:{EVOEVAL}")
    assert [(p.task_id, p.differential.base_inputs) for p in from_json] == [
        (p.task_id, p.differential.base_inputs) for p in from_jsonl]
    assert from_json[1].metadata["where"] == (
        f"{path}:{path.read_text().splitlines().index('  ' + chr(34) + 'EvoEval/1' + chr(34) + ': {') + 1}")


def test_evoeval_verbose_raw_inputs_and_find_zero(tmp_path):
    rec = {"task_id": "HumanEval/32", "entry_point": "find_zero",
           "prompt": "import math\n\n\ndef poly(xs: list, x: float):\n"
                     "    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])\n\n\n"
                     "def find_zero(xs: list):\n"
                     "    \"\"\"Return one root of the polynomial with coefficients xs (even length).\"\"\"\n",
           "canonical_solution": "    begin, end = -1.0, 1.0\n    while poly(xs, begin) * poly(xs, end) > 0:\n"
                                 "        begin *= 2.0\n        end *= 2.0\n    while end - begin > 1e-10:\n"
                                 "        center = (begin + end) / 2.0\n"
                                 "        if poly(xs, center) * poly(xs, begin) > 0:\n"
                                 "            begin = center\n        else:\n            end = center\n"
                                 "    return begin\n",
           "base_input": [[[1, 2]], [[-6, 11, -6, 1]]], "plus_input": [[[2, -4]]]}
    path = _write_jsonl(tmp_path / "EvoEval_verbose.jsonl", [rec])
    (p,) = load_benchmark(f"evoeval:{path}")
    assert p.differential.base_inputs == rec["base_input"] and p.differential.plus_inputs == rec["plus_input"]
    assert p.differential.atol == 1e-6 and p.metadata["variant"] == "verbose"


# ---------------------------------------------------------------------------- EvalPerf


def test_evalperf_problems_are_the_plus_tasks_with_performance_data():
    name = f"evalperf:{EVALPERF}"
    problems = load_benchmark(name)
    plus = {p.task_id: p for p in load_benchmark("humaneval+") + load_benchmark("mbpp+")}
    records = _lines(EVALPERF)
    assert [p.task_id for p in problems] == ["HumanEval/39", "HumanEval/55", "Mbpp/3"]
    for p, r in zip(problems, records):
        base = plus[p.task_id]
        assert p.benchmark == name
        assert (p.prompt, p.instruction, p.entry_point, p.canonical_completion, p.differential) == (
            base.prompt, base.instruction, base.entry_point, base.canonical_completion, base.differential)
        assert p.metadata["reference"] == r["reference"] and p.metadata["scores"] == r["scores"]
        assert p.metadata["correctness_from"] == base.benchmark
    assert evalperf_pe_inputs(problems[0]) == [[11]]  # pe_input given as a list (release file)
    assert evalperf_pe_inputs(problems[1]) == [[9000]]  # as a JSON string (Hugging Face dataset)
    assert evalperf_pe_inputs(problems[2]) == [[999999937]]


# ---------------------------------------------------------------------------- CODAL-Bench


def _check_codal(problems, name, where_suffix):
    records = _lines(CODAL)
    assert [p.task_id for p in problems] == ["CODAL/0", "CODAL/1", "CODAL/2"]
    for i, (p, r) in enumerate(zip(problems, records)):
        assert isinstance(p, JudgedProblem) and p.benchmark == name
        assert p.instruction == r["instruction"] and p.prompt == "" and p.differential is None
        assert p.metadata["preference"] == r["preference"] and p.metadata["scoring"] == "llm-judge"
        assert p.metadata["references"] == {
            "gpt-3.5-turbo": r["gpt-3.5-turbo_response"], "gpt-4-turbo": r["gpt-4-turbo_response"],
            "claude-3-sonnet-20240229": r["claude-3-sonnet-20240229_response"]}
        assert p.metadata["where"].endswith(where_suffix(i))
    assert problems[2].metadata["judge_dimension"] == "instruction_following"
    judge_rubrics = Path(__file__).resolve().parents[2] / "tasks" / "preferences" / "templates" / "judge"
    assert all((judge_rubrics / f"{p.metadata['judge_dimension']}.txt").is_file() for p in problems)


def test_codal_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_codal(load_benchmark(f"codal:{CODAL}"), f"codal:{CODAL}", lambda i: f"codal-bench.jsonl:{i + 1}")
    parquet = tmp_path / "test-00000-of-00001.parquet"  # the Hugging Face file's layout and columns
    pq.write_table(pa.Table.from_pylist(_lines(CODAL)), parquet)
    _check_codal(load_benchmark(f"codal:{parquet}"), f"codal:{parquet}", lambda i: f": row {i}")


def test_codal_is_judged_not_executed():
    from codealign.tasks.evaluation.execute import job_and_tests

    problem = load_benchmark(f"codal:{CODAL}")[0]
    with pytest.raises(JudgedBenchmarkError, match="scored by an LLM judge.*'complexity'"):
        job_and_tests(problem, Sample(problem.task_id, 0, None, "def merge_sorted(a, b):\n    return sorted(a + b)\n"))


# ---------------------------------------------------------------------------- bad input


def _evo(**changes):
    rec = dict(_lines(EVOEVAL)[0])
    for key, value in changes.items():
        if value is None:
            rec.pop(key)
        else:
            rec[key] = value
    return rec


GOOD_EVO = _lines(EVOEVAL)[1]
GOOD_PERF = _lines(EVALPERF)[0]
GOOD_CODAL = _lines(CODAL)[0]


@pytest.mark.parametrize("kind, file_name, records, where, message", [
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, '{"task_id": "EvoEval/0", "prompt": '], 2,
     "malformed JSON"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, _evo(entry_point=None)], 2, "missing field 'entry_point'"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, _evo(inputs="3.5, 1")], 2,
     "field 'inputs' must be a list of argument-list strings, got str"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, _evo(inputs=["1, 2", 3])], 2,
     "field 'inputs[1]' must be a string, got int"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, _evo(inputs=["__import__('os').getcwd()"])], 2,
     "field 'inputs[0]' cannot be read as literal arguments"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, _evo(inputs=["[1, 2"])], 2,
     "field 'inputs[0]' is not Python argument syntax"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, _evo(inputs=None)], 2, "missing field 'inputs'"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, GOOD_EVO], 2, "duplicate task_id 'EvoEval/1'"),
    ("evoeval", "EvoEval_difficult.jsonl", [GOOD_EVO, [1, 2]], 2, "expected a JSON object"),
    ("evalperf", "evalperf.jsonl", [GOOD_PERF, {**GOOD_PERF, "task_id": "HumanEval/55", "scores": [1.0]}], 2,
     "field 'scores' has 1 numbers for 2 references"),
    ("evalperf", "evalperf.jsonl", [{**GOOD_PERF, "pe_input": "[[11]"}], 1, "field 'pe_input' is not valid JSON"),
    ("evalperf", "evalperf.jsonl", [{**GOOD_PERF, "reference": "def prime_fib(n): ..."}], 1,
     "field 'reference' must be a list"),
    ("evalperf", "evalperf.jsonl", [{**GOOD_PERF, "task_id": "HumanEval/999"}], 1,
     "task 'HumanEval/999' is not in HumanEval+"),
    ("evalperf", "evalperf.jsonl", [{**GOOD_PERF, "entry_point": "fib"}], 1,
     "field 'entry_point' is 'fib' but HumanEval/39 defines 'prime_fib'"),
    ("codal", "codal-bench.jsonl", [GOOD_CODAL, {**GOOD_CODAL, "preference": "speed"}], 2,
     "field 'preference' must be one of instruction-following, readability"),
    ("codal", "codal-bench.jsonl", [GOOD_CODAL, GOOD_CODAL, {**GOOD_CODAL, "instruction": 7}], 3,
     "field 'instruction' must be the coding instruction, got int"),
    ("codal", "codal-bench.jsonl", [{**GOOD_CODAL, "gpt-4-turbo_response": ["a"]}], 1,
     "field 'gpt-4-turbo_response' must be a string, got list"),
])
def test_bad_input_names_file_line_and_field(tmp_path, kind, file_name, records, where, message):
    path = _write_jsonl(tmp_path / file_name, records)
    with pytest.raises(DataFileError) as info:
        load_benchmark(f"{kind}:{path}")
    assert str(info.value).startswith(f"{path}:{where}: ")
    assert message in str(info.value)


def test_bad_json_object_and_parquet_rows_are_located(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    broken = tmp_path / "EvoEval_creative.json"
    broken.write_text('{\n  "EvoEval/0": {\n    "prompt": "def f():\\n",\n    "entry_point": "f",,\n  }\n}\n')
    with pytest.raises(DataFileError, match=rf"^{broken}:4: malformed JSON"):
        load_benchmark(f"evoeval:{broken}")
    keyed = tmp_path / "EvoEval_subtle.json"
    keyed.write_text(json.dumps({"EvoEval/0": GOOD_EVO | {"task_id": "EvoEval/0"},
                                 "EvoEval/1": _evo(canonical_solution=None, task_id="EvoEval/1")}, indent=1))
    line = keyed.read_text().splitlines().index(' "EvoEval/1": {') + 1
    with pytest.raises(DataFileError, match=rf"^{keyed}:{line}: missing field 'canonical_solution'"):
        load_benchmark(f"evoeval:{keyed}")
    parquet = tmp_path / "codal.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD_CODAL, {**GOOD_CODAL, "preference": "fast"}]), parquet)
    with pytest.raises(DataFileError, match=rf"^{parquet}: row 1: field 'preference' must be one of"):
        load_benchmark(f"codal:{parquet}")


def test_missing_or_empty_file_is_named(tmp_path, monkeypatch):
    missing = tmp_path / "EvoEval_difficult.jsonl"
    with pytest.raises(DataFileError, match=rf"^{missing}: evoeval benchmark file not found;"):
        load_benchmark(f"evoeval:{missing}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataFileError,
                       match=rf"^data/evalperf.jsonl: evalperf benchmark file not found \(relative to {tmp_path}\)"):
        load_benchmark("evalperf:data/evalperf.jsonl")
    empty = _write_jsonl(tmp_path / "codal.jsonl", [])
    with pytest.raises(DataFileError, match=rf"^{empty}: no tasks in this CODAL-Bench file"):
        load_benchmark(f"codal:{empty}")


# ---------------------------------------------------------------------------- in the sandbox


def test_evoeval_canonical_solutions_pass_and_wrong_ones_fail(tmp_path, monkeypatch):
    from codealign.tasks.evaluation.execute import execute

    monkeypatch.setenv("CODEALIGN_CACHE_DIR", str(tmp_path / "cache"))
    problems = load_benchmark(f"evoeval:{EVOEVAL}")
    wrong = "    return round(number - int(number), digits + 1)\n"  # EvoEval/2, off by one digit
    samples = [Sample(p.task_id, 0, p.canonical_completion) for p in problems] + [Sample("EvoEval/2", 1, wrong)]
    verdicts = execute(problems, samples, workers=2)
    assert [(v.task_id, v.passed) for v in verdicts] == [
        ("EvoEval/0", True), ("EvoEval/1", True), ("EvoEval/2", True), ("EvoEval/2", False)], verdicts
    assert verdicts[-1].detail.startswith("base input #")
