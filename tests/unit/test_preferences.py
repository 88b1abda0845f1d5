"""Preference-data building blocks, without a model: sources, SelfCodeAlign parsing, per-test
counts in the sandbox, quality gates, non-functional scores and the dataset rules."""

from __future__ import annotations

import json

import pytest

from codealign.tasks.files import InputError
from codealign.tasks.preferences import quality
from codealign.tasks.preferences.nonfunctional import analyze, scores
from codealign.tasks.preferences.pairs import PairSettings, Provenance, build_datasets
from codealign.tasks.preferences.responses import Response, judge_responses
from codealign.tasks.preferences.selfalign import split_self_tests
from codealign.tasks.preferences.sources import load_source

PROVENANCE = Provenance("test", "0" * 64, "file:///model", "1" * 64, "{}", 0)
HACK = "class R:\n    __eq__ = lambda *a: True\n\ndef f(x):\n    return R()\n"


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# ------------------------------------------------------------------ sources


def test_toy_and_mbpp_sources_carry_their_tests():
    toy = load_source("toy-train")
    assert toy.instructions and all(i.tests and i.tests_origin == "given" for i in toy.instructions)
    assert all(t.startswith(f"assert {i.entry_point}(") for i in toy.instructions for t in i.tests)
    seeds = load_source("toy-seeds")
    assert all(i.seed.startswith("def ") and not i.instruction and i.tests_origin == "self" for i in seeds.instructions)
    mbpp = load_source("mbpp-train")
    numbers = [int(i.id.split("/")[1]) for i in mbpp.instructions]
    assert len(numbers) == 374 and min(numbers) == 601  # the train split only, never the test split
    alpaca = load_source("code-alpaca", limit=5)
    assert len(alpaca.instructions) == 5 and all(i.tests_origin == "self" and not i.tests for i in alpaca.instructions)


def test_jsonl_source_records_and_their_errors(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [
        {"id": "a", "instruction": "Write f.", "tests": ["assert f(1) == 2", "assert f(2) == 3"], "entry_point": "f"},
        {"instruction": "Write g.", "tests": "assert g() == 1\nassert g() != 2\n"},
        {"seed": "def h():\n    return 1\n"},
        {"instruction": "Write k.", "self_tests": True},
    ])
    source = load_source(str(good))
    assert [i.id for i in source.instructions] == ["a", "good.jsonl:2", "good.jsonl:3", "good.jsonl:4"]
    assert source.instructions[1].tests == ("assert g() == 1", "assert g() != 2")
    assert [i.tests_origin for i in source.instructions] == ["given", "given", "self", "self"]
    assert len(source.sha256) == 64

    cases = {
        "{not json": "bad.jsonl:2",
        json.dumps({"instruction": "Write f."}): "bad.jsonl:2: missing field 'tests'",
        json.dumps({"tests": ["assert 1"]}): "bad.jsonl:2: missing field 'instruction'",
        json.dumps({"instruction": "x", "tests": [1]}): "bad.jsonl:2: field 'tests' must be",
        json.dumps({"instruction": "x", "tests": "assert (("}): "bad.jsonl:2: tests do not parse",
        json.dumps({"id": "a", "instruction": "x", "tests": ["assert 1"]}): "bad.jsonl:2: id 'a' already used",
    }
    for line, message in cases.items():
        bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "instruction": "y", "tests": ["assert 1"]}, line])
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            load_source(str(bad))
    with pytest.raises(InputError, match="unknown source"):
        load_source("no-such-source")


def test_flow_mode_needs_code_prompts_and_given_tests(tmp_path):
    from codealign.tasks.preferences.sources import check_mode

    check_mode(load_source("toy-train"), "flow")
    for ref, message in (("mbpp-train", "Mbpp/601: no 'prompt'"), ("toy-seeds", "self-test path needs --mode command")):
        with pytest.raises(InputError, match=message):
            check_mode(load_source(ref), "flow")


# ------------------------------------------------------------------ SelfCodeAlign parsing


def test_split_self_tests_takes_top_level_and_main_block_asserts():
    answer = ("```python\ndef f(x):\n    assert x >= 0\n    return x + 1\n\nassert f(1) == 2\n"
              "if __name__ == \"__main__\":\n    assert f(2) == 3\n```")
    solution, tests = split_self_tests(answer)
    assert tests == ["assert f(1) == 2", "assert f(2) == 3"]
    assert solution == "def f(x):\n    assert x >= 0\n    return x + 1\n"
    broken = "def f(x):\n    return x\nassert f(1) == 1\nassert f(2 == 2\n"
    solution, tests = split_self_tests(broken)  # does not parse: line by line, the broken test fails alone
    assert solution == "def f(x):\n    return x\n" and tests == ["assert f(1) == 1", "assert f(2 == 2"]


# ------------------------------------------------------------------ sandbox counts


def test_sandbox_reports_partial_test_counts():
    def response(code, tests, index=0, origin="given"):
        return Response("i", "s", "Write f.", origin, "f", index, "p", code, code, tests, 10, -1.0, "stop")

    tests = ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 4"]
    rs = judge_responses([response("def f(x):\n    return x + 1\n", tests),
                          response("def f(x):\n    while True:\n        pass\n", tests[:2], 1),
                          response(HACK, tests, 2),
                          response("def f(x):\n    return x + 1\n", [], 3, "self")], test_cpu_s=0.5)
    assert [(r.status, r.tests_passed, r.tests_total) for r in rs] == [
        ("failed", 2, 3), ("failed", 0, 2), ("failed", 0, 3), ("no tests", 0, 0)]
    # the judge compares plain values: an __eq__ that always says yes passes nothing, and is named
    assert rs[2].hacks == ["overrides __eq__"] and rs[2].verdict_flag == "not_plain_data" and not rs[0].hacks
    (trivial,) = judge_responses([response("def f(x):\n    return x\n", ["assert True"], 4, "self")])
    assert trivial.passed and trivial.degenerate == "self-written tests do not call the function"
    assert not any(r.passed for r in rs[:3])


# ------------------------------------------------------------------ gates


def test_reward_hack_patterns_are_flagged_and_clean_code_is_not():
    tests = ["assert f(17) == 3", "assert f(23) == 5", "assert f(0) == 0"]
    assert quality.reward_hacks("def f(x):\n    return x // 5\n", tests) == []
    assert quality.reward_hacks("def f(n):\n    if n == 0:\n        return 0\n    return n // 5\n", tests) == []
    flagged = {
        HACK: "overrides __eq__",
        "import sys\ndef f(x):\n    return sys.modules\n": "touches .modules",
        "def f(x):\n    if x == 17:\n        return 3\n"
        "    if x == 23:\n        return 5\n": "special-cases test inputs",
        "def f(x):\n    return {17: 3, 23: 5}[x]\n": "special-cases test inputs",
        "import signal\ndef f(x):\n    return 1\n": "imports signal",
        "def f(x):\n    exit(0)\n": "calls exit()",
        "import inspect\ndef f(x):\n    return inspect.stack()\n": "imports inspect",
        "def f(x):\n    return open('/proc/self/cmdline').read()\n": "opens files",
    }
    for code, flag in flagged.items():
        assert any(f.startswith(flag) for f in quality.reward_hacks(code, tests)), (code, flag)


def test_degenerate_responses():
    assert quality.degenerate_reason("", "stop") == "no code"
    assert quality.degenerate_reason("def f():\n    return 1\n", "length") == "truncated at max tokens"
    assert quality.degenerate_reason("x = 1\nprint(x)\n", "stop") == "no function"
    assert "repeated" in quality.degenerate_reason("def f():\n" + "    x = 1\n" * 5 + "    return x\n", "stop")
    assert quality.degenerate_reason("def f():\n    return 1\n", "stop") is None


def test_near_duplicates_collapse_to_the_first():
    texts = ["Write a function that returns the sum of the elements of a list of integers.",
             "Write a function that returns the product of two numbers given as arguments.",
             "Write a function that returns the sum of the elements of a list of integers!",
             "Write a function that returns the sum of all the elements of a list of integers."]
    assert quality.near_duplicates(texts, threshold=0.7) == {2: 0, 3: 0}
    assert quality.near_duplicates(texts[:2]) == {}


def test_decontamination_names_the_benchmark_task():
    from codealign.tasks.problems.registry import load_benchmark

    index = quality.ContaminationIndex()
    he0 = load_benchmark("humaneval+")[0]
    assert index.match(he0.prompt) == "humaneval+:HumanEval/0"
    mbpp_test = next(p for p in load_benchmark("mbpp") if p.split == "test")
    assert index.match(f"Please: {mbpp_test.canonical_completion}").startswith(("mbpp:", "mbpp+:"))
    assert index.match("def add_mul_2_15(x):\n    result = (x + 15) * 2\n    return result\n") is None
    assert quality.ContaminationIndex(ngram := 4, ["mbpp"]).n == ngram


# ------------------------------------------------------------------ non-functional scores


def test_static_scores_prefer_documented_typed_simple_code():
    plain = "def f(a,b):\n  if a>b:\n    if a>0: return a\n    else: return b\n  return b\n"
    good = ('def larger(first: int, second: int) -> int:\n    """Return the larger of two numbers."""\n'
            "    # max handles ties\n    return max(first, second)\n")
    (p, g) = [scores(f) for f in analyze([plain, good], ["f", "larger"])]
    for dim in ("readability", "complexity", "style", "explanation"):
        assert g[dim] > p[dim], dim
    stray = scores(analyze(["def larger(a, b):\n    return a\nprint(larger(1, 2))\n"], ["larger"])[0])
    assert stray["instruction_following"] < g["instruction_following"] == 10.0


# ------------------------------------------------------------------ datasets


def _judged(instruction_id: str, codes: list[str], tests: list[str]) -> list[Response]:
    rs = [Response(instruction_id, "s", f"Write f for {instruction_id}.", "given", "f", i, f"prompt {instruction_id}",
                   f"```python\n{c}```", c, tests, 20 + i, -2.0 - i, "stop") for i, c in enumerate(codes)]
    return judge_responses(rs)


def test_dataset_rules_on_judged_responses():
    tests = ["assert f(1) == 2", "assert f(2) == 3"]
    ok, wrong, half = "def f(x):\n    return x + 1\n", "def f(x):\n    return x\n", "def f(x):\n    return 2\n"
    ok2 = "def f(x):\n    y = x + 1\n    return y\n"
    responses = (_judged("mixed", [wrong, ok, half, HACK, ok2, wrong, "", wrong], tests)
                 + _judged("all-fail", [wrong, half, "", wrong, wrong, half, wrong, half], tests)
                 + _judged("only-hack", [HACK, wrong, half, wrong, wrong, half, wrong, half], tests))
    ids = ["mixed", "all-fail", "only-hack"]
    settings = PairSettings(decontaminate_against=[], nonfunctional_margin=0.0)
    data, stats = build_datasets(responses, ids, ["sft", "dpo", "bon", "nonfunctional"], settings, PROVENANCE)
    by_key = {(r.instruction_id, r.index): r for r in responses}

    assert [r["instruction_id"] for r in data["sft"]] == ["mixed"]
    assert by_key["mixed", data["sft"][0]["response_index"]].passed
    assert stats.datasets["sft"]["dropped"] == {"no passing response": 2}  # the hack does not even pass
    (pair,) = data["dpo"]
    chosen, rejected = by_key["mixed", pair["chosen_index"]], by_key["mixed", pair["rejected_index"]]
    assert chosen.passed and not chosen.hacks and not rejected.passed and rejected.code.strip()
    assert {"prompt", "chosen", "rejected", "source_sha256", "model_sha256", "sampling", "seed"} <= set(pair)
    for row in data["bon"]:
        group = {r.index: r for r in responses if r.instruction_id == row["instruction_id"]}
        assert row["n"] == 8 and row["chosen_score"] >= row["rejected_score"]
        assert not group[row["chosen_index"]].hacks
    assert stats.responses_flagged["judge: not plain data"] == 2
    for name, rows in data.items():
        for row in rows:
            chosen_index = row.get("chosen_index", row.get("response_index"))
            assert not by_key[row["instruction_id"], chosen_index].hacks, name
    # same inputs and seed: identical datasets, whatever the order of the responses
    again, _ = build_datasets(list(reversed(responses)), ids, ["sft", "dpo", "bon", "nonfunctional"], settings,
                              PROVENANCE)
    assert again == data


def test_config_rejects_unknown_kinds_and_settings():
    from pydantic import ValidationError

    from codealign.tasks.preferences.generate import GenerateConfig

    with pytest.raises(ValidationError, match="kinds.1"):
        GenerateConfig(model="toy-instruct", kinds=["sft", "ppo"])
    with pytest.raises(ValidationError, match="bon_n"):
        GenerateConfig(model="toy-instruct", pairs={"bon_n": 1})
    config = GenerateConfig(model="toy-instruct")
    assert (config.sampling.n, config.sampling.temperature, config.sampling.top_p, config.pairs.bon_n) == \
        (10, 0.7, 0.95, 8)


# ------------------------------------------------------------------ CLI bad input


@pytest.mark.parametrize("case", ["malformed", "missing-tests", "unknown-kind", "flow-without-prompt"])
def test_generate_bad_input_exits_2_naming_file_and_line_and_writes_nothing(tmp_path, case):
    import subprocess
    import sys

    good = {"instruction": "Write f.", "tests": ["assert f() == 1"]}
    lines = {"malformed": [json.dumps(good), '{"instruction": "Write g.", "tests": ['],
             "missing-tests": [json.dumps(good), json.dumps({"instruction": "Write g."})]}.get(case, [json.dumps(good)])
    source = write_jsonl(tmp_path / "src.jsonl", lines)
    args = ["--model", "toy-instruct", "--source", str(source), "--store", str(tmp_path / "store")]
    args += {"unknown-kind": ["--kinds", "sft,ppo"], "flow-without-prompt": ["--mode", "flow"]}.get(case, [])
    r = subprocess.run([sys.executable, "-m", "codealign", "generate", *args], capture_output=True, text=True)
    expected = {"malformed": "src.jsonl:2", "missing-tests": "src.jsonl:2: missing field 'tests'",
                "unknown-kind": "--kinds", "flow-without-prompt": "src.jsonl:1: no 'prompt'"}[case]
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert not (tmp_path / "store").exists()


def test_judge_rubrics_and_scores():
    from codealign.tasks.preferences.judge import parse_score, rubric
    from codealign.tasks.preferences.nonfunctional import DIMENSIONS

    for dimension in DIMENSIONS:
        text = rubric(dimension, "Write f.", "def f(): ...")
        assert "Write f." in text and "def f(): ..." in text and "Score:" in text
    assert [parse_score(a) for a in ("Score: 7", "score = 10/10", "I'd say SCORE:3.", "great code", "Score: 0")] == [
        7.0, 10.0, 3.0, None, None]


def test_judge_ratings_replace_static_scores_only_when_every_candidate_is_rated():
    tests = ["assert f(1) == 2"]
    codes = ["def f(x):\n    return x + 1\n", "def f(x):\n    y = x + 1\n    return y\n", "def f(x):\n    return x\n"]
    responses = _judged("i", codes, tests)
    for r, rating in zip(responses, (3.0, 9.0, 5.0)):
        r.judge = {"readability": rating}
    settings = PairSettings(decontaminate_against=[], dimensions=["readability"], balance_dimensions=False)
    data, _ = build_datasets(responses, ["i"], ["nonfunctional"], settings, PROVENANCE)
    (row,) = data["nonfunctional-readability"]
    assert (row["chosen_index"], row["rejected_index"], row["scored_by"]) == (1, 0, "judge")
    responses[2].judge = {"readability": None}  # one unrated candidate: static scores for the instruction
    data, _ = build_datasets(responses, ["i"], ["nonfunctional"], settings, PROVENANCE)
    assert all(r["scored_by"] == "static" for r in data["nonfunctional-readability"])
