"""The failure taxonomy on hand-made samples: one per class, and through the real sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.evaluation.scoring import score
from codealign.tasks.evaluation.taxonomy import classify, label_failures
from codealign.tasks.problems.problem import Problem

REPO = Path(__file__).resolve().parents[2]
PROMPT = 'def add(a, b):\n    """Return a plus b."""\n'
ADD = Problem("toy-test", "t/0", PROMPT, "Write add(a, b) returning a + b.", "add", "    return a + b\n",
              test="assert add(1, 2) == 3\nassert add(-1, 1) == 0\n")
INFILL = Problem("toy-test", "t/1", 'def total(xs):\n    """Sum xs."""\n', "", "total",
                 "    s = 0\n    for x in xs:\n        s += x\n", test="assert total([1, 2]) == 3\n",
                 suffix="    return s\n")
FAILED = {"passed": False, "status": "failed", "detail": "AssertionError"}


def fenced(code: str, language: str = "python") -> str:
    return f"Here is the function.\n```{language}\n{code}```\n"


@pytest.mark.parametrize("case, expected", [
    (dict(mode="flow", completion=""), "empty"),
    (dict(mode="command", raw="I cannot help with that.", solution="\n"), "empty"),
    (dict(mode="flow", completion="    return a +", finish_reason="length"), "truncated"),
    (dict(mode="command", raw="def add(a, b):\n    return a - b\n", solution="def add(a, b):\n    return a - b\n"),
     "format:no_code"),
    (dict(mode="command", raw=fenced("function add(a, b) { return a + b; }\n", "javascript"),
          solution="function add(a, b) { return a + b; }\n"), "format:language"),
    (dict(mode="flow", completion="    return a - b\n\ndef add(a, b):\n    return 0\n"), "over_generation"),
    (dict(mode="command", raw=fenced("def add(a, b):\n    return a + b\nassert add(1, 1) == 3\n"),
          solution="def add(a, b):\n    return a + b\nassert add(1, 1) == 3\n"), "over_generation"),
    (dict(mode="command", raw=fenced("def add(a, b, c=0):\n    return a + b\n"),
          solution="def add(a, b, c=0):\n    return a + b\n"), "signature_change"),
    (dict(mode="command", raw=fenced("def plus(a, b):\n    return a + b\n"),
          solution="def plus(a, b):\n    return a + b\n"), "signature_change"),
    (dict(mode="flow", completion="    return a +\n"), "syntax_error"),
    (dict(mode="flow", completion="    while True:\n        pass\n",
          verdict={"passed": False, "status": "timeout", "detail": "CPU limit 3s exceeded"}), "timeout"),
    (dict(mode="flow", completion="    return [0] * 10**12\n",
          verdict={"passed": False, "status": "memory", "detail": "MemoryError"}), "memory"),
    (dict(mode="flow", completion="    return a + str(b)\n",
          verdict={"passed": False, "status": "error", "detail": "TypeError: unsupported operand type(s)"}),
     "runtime_error:TypeError"),
    (dict(mode="flow", completion="    import os; os.abort()\n",
          verdict={"passed": False, "status": "crashed", "detail": "killed by signal SIGABRT"}),
     "runtime_error:crashed"),
    (dict(mode="flow", completion="    return a - b\n"), "wrong_answer"),
    (dict(mode="flow", completion="    return a + b\n", verdict={"passed": True, "status": "passed"}), None),
], ids=lambda value: value if isinstance(value, str) else None)
def test_each_class_on_a_hand_made_sample(case, expected):
    case = dict(case)
    mode, verdict = case.pop("mode"), case.pop("verdict", FAILED)
    assert classify(ADD, mode, verdict, **case) == expected


def test_infilling_that_runs_into_its_suffix_is_over_generation():
    middle = "    s = 0\n    for x in xs:\n        s += x\n    return s\n"
    assert classify(INFILL, "flow", FAILED, raw=middle, completion=middle) == "over_generation"
    assert classify(INFILL, "flow", FAILED, raw="    s = 1\n", completion="    s = 1\n") == "wrong_answer"


def test_real_sandbox_verdicts_are_classified_and_counted():
    from codealign.tasks.evaluation.execute import execute
    from codealign.tasks.generation.samples import Sample

    completions = ["    return a + b\n", "    return a - b\n", "    return a + str(b)\n", "    return a +\n",
                   "    raise KeyError(a)\n"]
    samples = [Sample("t/0", i, completion=c) for i, c in enumerate(completions)]
    verdicts = [v.to_json() for v in execute([ADD], samples, workers=1)]
    rows = [{"task_id": "t/0", "index": i, "raw": c, "completion": c, "solution": None, "finish_reason": "stop"}
            for i, c in enumerate(completions)]
    labelled = label_failures([ADD], "flow", rows, verdicts)
    assert [v["failure"] for v in labelled] == [None, "wrong_answer", "runtime_error:TypeError", "syntax_error",
                                                "runtime_error:KeyError"]
    scores = score(labelled, [1])
    assert scores["benchmarks"]["toy-test"]["failures"] == {"runtime_error:KeyError": 1, "runtime_error:TypeError": 1,
                                                            "syntax_error": 1, "wrong_answer": 1}
    assert scores["overall"]["failures"]["wrong_answer"] == 1


def test_score_command_prints_failures_by_class(tmp_path):
    verdicts = tmp_path / "verdicts.jsonl"
    rows = [{"task_id": "t/0", "sample_index": 0, "passed": False, "benchmark": "b", "failure": "wrong_answer"},
            {"task_id": "t/0", "sample_index": 1, "passed": False, "benchmark": "b", "failure": "syntax_error"},
            {"task_id": "t/0", "sample_index": 2, "passed": True, "benchmark": "b", "failure": None}]
    verdicts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "-m", "codealign", "score", "--verdicts", str(verdicts), "--k", "1"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.strip() == "failures" for line in lines)
    assert any(line.split() == ["│", "wrong_answer", "│", "1", "│"] for line in lines), r.stdout
    written = json.loads(verdicts.with_suffix(".scores.json").read_text())
    assert written["benchmarks"]["b"]["failures"] == {"syntax_error": 1, "wrong_answer": 1}
