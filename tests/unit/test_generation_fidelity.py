"""Generation-fidelity metrics on constructed samples: each metric, the labels stored with
verdicts, their aggregation in score(), and `codealign score`'s table.  No sandbox, no servers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from codealign.tasks.evaluation.generation_fidelity import (
    SampleFidelity,
    edit_similarity,
    label_fidelity,
    levenshtein,
    measure,
    normalise,
    stop_adherent,
)
from codealign.tasks.evaluation.scoring import score
from codealign.tasks.problems.problem import Problem

REPO = Path(__file__).resolve().parents[2]
PROMPT = 'def add(a, b):\n    """Return a plus b."""\n'
ADD = Problem("toy-test", "t/0", PROMPT, "Write add(a, b) returning a + b.", "add", "    return a + b\n",
              test="assert add(1, 2) == 3\n")
MIDDLE = "    s = 0\n    for x in xs:\n        s += x\n"
INFILL = Problem("toy-infill", "t/1", 'def total(xs):\n    """Sum xs."""\n', "", "total", MIDDLE,
                 test="assert total([1, 2]) == 3\n", suffix="    s = s * 1\n    return s\n")
PROGRAM = Problem("toy-mbpp", "t/2", "", "Write add(a, b).", "add", "def add(a, b):\n    return a + b\n",
                  completion_is_program=True)


def _dp(a: str, b: str) -> int:
    """The textbook Levenshtein DP, as the reference for the bit-parallel one."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_edit_similarity_on_known_strings():
    assert levenshtein("kitten", "sitting") == 3
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("flaw", "lawn") == pytest.approx(1 - 2 / 4)


def test_levenshtein_matches_the_textbook_dp():
    rng = random.Random(0)
    for _ in range(500):
        a = "".join(rng.choice("ab c\n") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("abd\n") for _ in range(rng.randint(0, 70)))
        assert levenshtein(a, b) == _dp(a, b) == levenshtein(b, a)


def test_normalise_strips_trailing_whitespace_and_outer_blank_lines_only():
    assert normalise("\n  x = 1   \r\n\n  y = 2\t\n\n") == "  x = 1\n\n  y = 2"


def test_infilling_exact_match_similarity_and_length_ratio():
    exact = measure(INFILL, "flow", raw=MIDDLE, completion="\n" + MIDDLE.replace("\n", "  \n") + "\n")
    assert exact == SampleFidelity(connects=True, exact_match=True, edit_similarity=1.0, length_ratio=1.0)
    other = "    s = 1\n"
    m = measure(INFILL, "flow", raw=other, completion=other)
    reference = normalise(MIDDLE)
    assert m.exact_match is False and m.connects is True
    assert m.edit_similarity == pytest.approx(1 - _dp("    s = 1", reference) / len(reference))
    assert m.length_ratio == pytest.approx(len("    s = 1") / len(reference))
    assert m.stop_adherent is None and m.follows_format is None


def test_a_middle_that_duplicates_the_suffix_does_not_connect():
    runs_on = MIDDLE + "    s = s * 1\n    return s\n"
    m = measure(INFILL, "flow", raw=runs_on, completion=runs_on)
    assert m.connects is False and m.exact_match is False and m.length_ratio > 1
    assert measure(INFILL, "flow", raw="", completion=None) == SampleFidelity()  # no middle: nothing applies



def test_a_suffix_line_standing_at_another_depth_in_a_correct_middle_still_connects():
    # HumanEval/92 single-line infilling: the reference middle holds the suffix's line, deeper
    p = Problem("toy-infill", "t/3", "def f(x):\n    if x:\n", "", "f", "        return False\n",
                suffix="    return False\n")
    assert measure(p, "flow", completion="        return False\n").connects is True
    assert measure(p, "flow", completion="        return False\n    return False\n").connects is False


def test_a_suffix_that_begins_mid_line_is_looked_for_from_its_second_line():
    p = Problem("toy-infill", "t/4", "def mean(xs):\n    m = sum(xs) /", "", "mean", " len(xs)",
                suffix=" if xs else 0\n    return m\n")
    assert measure(p, "flow", completion=" len(xs)").connects is True
    assert measure(p, "flow", completion=" len(xs) if xs else 0\n    return m\n").connects is False

@pytest.mark.parametrize("raw, finish_reason, expected", [
    ("    return a + b\n", "stop", True),
    ("    return a + b\n\n\n", None, True),
    ("    if a:\n        return a + b\n\n    return b\n", "stop", True),
    ("    return a + b\n\ndef sub(a, b):\n    return a - b\n", "stop", False),
    ("    return a + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n", "stop", False),
    ("    return a + b\n\nassert add(1, 2) == 3\n", "stop", False),
    ("    return a + b\n```\nThis adds the two numbers.\n", "stop", False),
    ("    total = a\n    total +=", "length", False),
])
def test_stop_adherence(raw, finish_reason, expected):
    assert stop_adherent(raw, finish_reason) is expected
    assert measure(ADD, "flow", raw=raw, completion="unused", finish_reason=finish_reason).stop_adherent is expected


@pytest.mark.parametrize("raw, expected", [
    ("    return a + b\n", True),
    ("def add(a, b):\n    return a + b\n", False),  # re-emits the prompt's function
    ("Here is the body:\n    return a + b\n", False),  # prose, not the function's body
    ("", False),
])
def test_flow_format_continues_the_function(raw, expected):
    assert measure(ADD, "flow", raw=raw, completion=raw).follows_format is expected


@pytest.mark.parametrize("raw, expected", [
    ("Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n", True),
    ("```\ndef add(a, b):\n    return a + b\n```\n", True),
    ("def add(a, b):\n    return a + b\n", False),  # bare code, no fence
    ("```javascript\nfunction add(a, b) { return a + b; }\n```\n", False),
])
def test_command_format_is_a_fenced_python_block(raw, expected):
    m = measure(ADD, "command", raw=raw)
    assert m == SampleFidelity(follows_format=expected)
    assert measure(PROGRAM, "command", raw=raw).follows_format is expected


def test_what_does_not_apply_is_none():
    assert measure(ADD, "flow", raw=None, completion="    return a + b\n") == SampleFidelity()  # samples file
    assert measure(PROGRAM, "flow", raw="def add(a, b):\n    return a + b\n") == SampleFidelity()
    if "language" in Problem.__dataclass_fields__:  # problems in other languages: no Python shape checks
        go = Problem("toy-go", "t/5", "func Add(a, b int) int {\n", "Write Add.", "Add", "\treturn a + b\n}\n",
                     language="go")
        assert measure(go, "flow", raw="\treturn a + b\n}\n") == SampleFidelity()


def _verdict(task_id: str, index: int, benchmark: str) -> dict:
    return {"task_id": task_id, "sample_index": index, "benchmark": benchmark, "passed": False, "status": "failed"}


def test_labels_are_stored_with_verdicts_and_averaged_in_score():
    flow_raws = ["    return a + b\n", "    return a + b\n\ndef sub(a, b):\n    return a - b\n",
                 "def add(a, b):\n    return a + b\n"]
    middles = [MIDDLE, "    s = 1\n", MIDDLE + "    s = s * 1\n    return s\n"]
    samples = ([{"task_id": "t/0", "index": i, "raw": r, "completion": r, "finish_reason": "stop"}
                for i, r in enumerate(flow_raws)]
               + [{"task_id": "t/1", "index": i, "raw": m, "completion": m, "finish_reason": "stop"}
                  for i, m in enumerate(middles)])
    verdicts = ([_verdict("t/0", i, "toy-test") for i in range(3)]
                + [_verdict("t/1", i, "toy-infill") for i in range(3)]
                + [_verdict("t/9", 0, "toy-test")])  # a task nobody knows: no fidelity
    labelled = label_fidelity([ADD, INFILL], "flow", samples, verdicts)
    assert [v["fidelity"] is None for v in labelled] == [False] * 6 + [True]
    assert labelled[0]["fidelity"]["stop_adherent"] is True and labelled[0]["fidelity"]["connects"] is None
    assert json.loads(json.dumps(labelled)) == labelled  # stored as JSON

    scores = score(labelled, [1])
    flow, infill = scores["benchmarks"]["toy-test"]["fidelity"], scores["benchmarks"]["toy-infill"]["fidelity"]
    assert flow == {"stop_adherent": {"mean": pytest.approx(2 / 3), "n": 3},
                    "follows_format": {"mean": pytest.approx(2 / 3), "n": 3}}  # only the re-emitted def fails
    assert infill["connects"] == {"mean": pytest.approx(2 / 3), "n": 3}
    assert infill["exact_match"] == {"mean": pytest.approx(1 / 3), "n": 3}
    assert infill["length_ratio"]["n"] == 3
    assert infill["edit_similarity"]["mean"] == pytest.approx(
        sum(v["fidelity"]["edit_similarity"] for v in labelled[3:6]) / 3)
    overall = scores["overall"]["fidelity"]
    assert overall["stop_adherent"] == flow["stop_adherent"] and overall["connects"] == infill["connects"]
    assert "fidelity" not in score([_verdict("t/0", 0, "b")], [1])["benchmarks"]["b"]  # unlabelled verdicts


def test_score_command_prints_the_fidelity_table(tmp_path):
    verdicts = tmp_path / "verdicts.jsonl"
    fidelity = {**{m: None for m in SampleFidelity.__dataclass_fields__}, "stop_adherent": True, "follows_format": True}
    rows = [{**_verdict("t/0", 0, "b"), "failure": "wrong_answer", "fidelity": fidelity},
            {**_verdict("t/0", 1, "b"), "failure": "wrong_answer", "fidelity": {**fidelity, "stop_adherent": False}}]
    verdicts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "-m", "codealign", "score", "--verdicts", str(verdicts), "--k", "1"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.strip().startswith("generation fidelity") for line in lines), r.stdout
    assert any(line.split() == ["│", "stop_adherent", "│", "50.0%", "n=2", "│"] for line in lines), r.stdout
    assert any(line.split() == ["│", "follows_format", "│", "100.0%", "n=2", "│"] for line in lines), r.stdout
    written = json.loads(verdicts.with_suffix(".scores.json").read_text())
    assert written["benchmarks"]["b"]["fidelity"]["stop_adherent"] == {"mean": 0.5, "n": 2}


def test_command_mode_format_is_checked_in_the_problem_language():
    from codealign.tasks.problems.registry import load_benchmark

    problem = load_benchmark("humaneval-x-go")[0]
    assert measure(problem, "command", raw="```go\nfunc F() {}\n```").follows_format is True
    assert measure(problem, "command", raw="```python\ndef f(): pass\n```").follows_format is False
    assert measure(problem, "flow", raw="    return false\n}\n").stop_adherent is None
