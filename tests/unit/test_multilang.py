"""Programs in other languages (HumanEval-X, MultiPL-E prompt files): loading, program assembly,
and compile-then-run verdicts in the real sandbox, told apart for the failure taxonomy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codealign.tasks.evaluation.execute import execute
from codealign.tasks.evaluation.taxonomy import classify
from codealign.tasks.generation.postprocess import command_solution, flow_completion
from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.multilang import HUMANEVAL_X_LANGUAGES, load_multipl_e
from codealign.tasks.problems.problem import go_with_imports
from codealign.tasks.problems.registry import DataFileError, load_benchmark
from codealign.tasks.sandbox import toolchains
from codealign.tasks.sandbox.limits import Limits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "multipl_e"


@pytest.mark.parametrize("language", HUMANEVAL_X_LANGUAGES)
def test_humaneval_x_loads_every_task_with_its_entry_point(language):
    problems = load_benchmark(f"humaneval-x-{language}")
    assert len(problems) == 164
    assert all(p.language == language and p.entry_point and p.canonical_completion for p in problems)
    first = problems[0]
    assert first.entry_point.lower().replace("_", "") == "hascloseelements"
    assert first.instruction.startswith(f"Write a {toolchains.LANGUAGE_NAMES[language]} function")


def test_go_program_drops_the_solution_imports_and_adds_the_used_helpers():
    setup = 'package main\n\nimport (\n    "testing"\n    "github.com/stretchr/testify/assert"\n)\n'
    solution = 'import (\n    "math"\n    "sort"\n)\n\nfunc F(x float64) float64 {\n    return math.Abs(x)\n}\n'
    program = go_with_imports(solution, setup, ["math", "strings", "sort"])
    assert program.startswith('import (\n    "math"\n)\n')  # sort is imported but unused: dropped
    assert program.count("import") == 1 and "func F" in program


def test_flow_completion_keeps_the_closing_brace_humaneval_x_needs():
    problem = load_benchmark("humaneval-x-cpp")[0]
    raw = "    return false;\n}\n\nint main() { return 0; }\n"
    completion = flow_completion(problem, raw, list(problem.stop_tokens))
    assert completion == "    return false;\n}\n"


def test_command_solution_prefers_the_block_in_the_problem_language():
    problem = load_benchmark("humaneval-x-js")[0]
    raw = ("Here it is in Python:\n```python\ndef hasCloseElements(n, t): pass\n```\nand in JS:\n"
           "```javascript\nconst hasCloseElements = (numbers, threshold) => false\n```\n")
    assert command_solution(problem, raw).startswith("const hasCloseElements")


def test_multipl_e_file_loads_with_its_stop_tokens():
    problems = load_multipl_e(str(FIXTURES / "humaneval-cpp-reworded.jsonl"), "multipl-e:x")
    assert [p.task_id for p in problems] == ["HumanEval_0_has_close_elements", "HumanEval_23_strlen"]
    assert problems[0].language == "cpp" and problems[0].stop_tokens == ("\n}",)
    assert problems[0].entry_point == "has_close_elements" and problems[0].benchmark == "multipl-e:x"
    assert load_benchmark(f"multipl-e:{FIXTURES / 'humaneval-js-reworded.jsonl'}")[1].entry_point == "strlen"


@pytest.mark.parametrize("line, expected", [
    ("{not json", ":1: malformed JSON"),
    (json.dumps({"name": "a", "language": "cpp", "prompt": "", "tests": ""}), ":1: field 'stop_tokens' missing"),
    (json.dumps({"name": "a", "language": "cpp", "prompt": 3, "tests": "", "stop_tokens": []}),
     ":1: field 'prompt' should be str, got int"),
    (json.dumps({"name": "a", "language": "cobol", "prompt": "", "tests": "", "stop_tokens": []}),
     ":1: field 'language': unsupported language 'cobol'"),
])
def test_malformed_multipl_e_files_name_file_line_and_field(tmp_path, line, expected):
    bad = tmp_path / "humaneval-cpp-reworded.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(DataFileError) as err:
        load_multipl_e(str(bad))
    assert str(bad) + expected in str(err.value)


def test_missing_toolchain_is_a_verdict_naming_the_package(monkeypatch):
    monkeypatch.setitem(toolchains.TOOLCHAINS, "js", toolchains.Toolchain(("no-such-node",), ("nodejs",)))
    problem = load_benchmark("humaneval-x-js")[0]
    [verdict] = execute([problem], [Sample(problem.task_id, 0, problem.canonical_completion)], workers=1)
    assert not verdict.passed and "ToolchainMissing" in verdict.detail and "apt-get install nodejs" in verdict.detail


def _run(problem, completions, limits=None):
    samples = [Sample(problem.task_id, i, c) for i, c in enumerate(completions)]
    return execute([problem], samples, limits=limits, workers=1)


def _classes(problem, completions, verdicts):
    return [classify(problem, "flow", v.to_json(), raw=c, completion=c, solution=None, finish_reason="stop")
            if not v.passed else None for c, v in zip(completions, verdicts)]


@pytest.mark.slow
@pytest.mark.parametrize("language", HUMANEVAL_X_LANGUAGES)
def test_compiled_verdicts_pass_fail_and_classify(language):
    """Per language: the canonical solution passes; a wrong answer is an assertion failure; code
    that does not compile is a syntax (compile) error; an endless loop is a timeout."""
    problem = load_benchmark(f"humaneval-x-{language}")[0]  # has_close_elements
    wrong = {
        "cpp": "    return false;\n}\n",
        "go": "    return false\n}\n",
        "java": "        return false;\n    }\n}",
        "js": "  return false;\n}\n",
        "rust": "    return false;\n}\n",
    }[language]
    broken = "    this is not code (\n}\n"
    loop = {
        "cpp": "    while (true) {}\n    return false;\n}\n",
        "go": "    for {}\n}\n",
        "java": "        while (true) {}\n    }\n}",
        "js": "  while (true) {}\n}\n",
        "rust": "    loop {}\n}\n",
    }[language]
    completions = [problem.canonical_completion, wrong, broken, loop]
    verdicts = _run(problem, completions, Limits(cpu_s=2))
    assert [v.status for v in verdicts] == ["passed", "failed", "error", "timeout"], [v.detail for v in verdicts]
    assert verdicts[2].detail.startswith("CompileError")
    assert _classes(problem, completions, verdicts) == [None, "wrong_answer", "compile_error", "timeout"]


@pytest.mark.slow
def test_runtime_errors_are_named_by_their_type():
    js = load_benchmark("humaneval-x-js")[0]
    java = load_benchmark("humaneval-x-java")[0]
    js_v = _run(js, ["  return numbers.nope.length > threshold;\n}\n"])[0]
    java_v = _run(java, ["        return numbers.get(99) > threshold;\n    }\n}"])[0]
    assert (js_v.status, js_v.detail.split(":")[0]) == ("error", "TypeError")
    assert (java_v.status, java_v.detail.split(":")[0]) == ("error", "IndexOutOfBoundsException")
    assert classify(java, "flow", java_v.to_json(), raw="x", completion="x", solution=None,
                    finish_reason="stop") == "runtime_error:IndexOutOfBoundsException"


@pytest.mark.slow
@pytest.mark.parametrize("language, right, wrong", [
    ("cpp", "    for (size_t i = 0; i < numbers.size(); i++)\n        for (size_t j = i + 1; j < numbers.size(); j++)\n"
            "            if (fabs(numbers[i] - numbers[j]) < threshold) return true;\n    return false;\n",
     "    return true;\n"),
    ("js", "  for (let i = 0; i < numbers.length; i++)\n    for (let j = i + 1; j < numbers.length; j++)\n"
           "      if (Math.abs(numbers[i] - numbers[j]) < threshold) return true;\n  return false;\n}\n",
     "  return true;\n}\n"),
])
def test_multipl_e_programs_run_prompt_completion_tests(language, right, wrong):
    [problem, _] = load_multipl_e(str(FIXTURES / f"humaneval-{language}-reworded.jsonl"))
    verdicts = _run(problem, [right, wrong])
    assert [v.status for v in verdicts] == ["passed", "failed"], [v.detail for v in verdicts]


def test_go_helper_imports_ignore_comments_and_longer_names():
    solution = "// a list of strings.\nfunc F(operand []int) int {\n    return len(operand) // operand.\n}\n"
    assert go_with_imports(solution, "package main\n", ["strings", "math/rand"]) == solution


@pytest.mark.slow
def test_demo_lists_each_language_and_the_canonicals_that_cannot_pass(tmp_path, monkeypatch):
    """`codealign demo` (here over HumanEval-X JavaScript only): the language's canonical results,
    each known-broken canonical with its reason, exit 0 (only unexplained failures fail it)."""
    from typer.testing import CliRunner

    from codealign import cli
    from codealign.flows import sandbox_commands
    from codealign.tasks.problems import registry

    monkeypatch.setattr(sandbox_commands, "BENCHMARKS", {"humaneval-x-js": registry.BENCHMARKS["humaneval-x-js"]})
    result = CliRunner().invoke(cli.app, ["demo", "--out", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "humaneval-x-js 162/164" in result.output
    assert "JavaScript/112 cannot pass: the canonical solution returns `(z, false)`" in result.output
    canonical = json.loads((tmp_path / "canonical.json").read_text())["humaneval-x-js"]
    assert canonical["failures"] == [] and set(canonical["cannot_pass"]) == {"JavaScript/112", "JavaScript/155"}


@pytest.mark.slow
def test_caches_under_tmp_judge_every_language(tmp_path, monkeypatch):
    """With HOME under /tmp (as in many containers) and no cache variables, the workers are sent
    the toolchain paths: every language's canonical passes (JavaScript/162 needs js-md5 from the
    prepared node_modules), the built toolchains are reused (copied, never rebuilt), and a
    Python sample sees the toolchains but not the reference cache beside them."""
    import shutil

    for language in HUMANEVAL_X_LANGUAGES:
        toolchains.prepare(language)  # built once per machine, in the usual cache
    home = tmp_path / "home"
    cache = home / ".cache" / "codealign"
    shutil.copytree(toolchains.toolchain_root(), cache / "toolchains", symlinks=True)
    (cache / "reference").mkdir()
    (cache / "reference" / "answers.pkl").write_bytes(b"expected outputs")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("CODEALIGN_CACHE_DIR", raising=False)
    assert toolchains.toolchain_root() == cache / "toolchains"

    for language in HUMANEVAL_X_LANGUAGES:
        problems = load_benchmark(f"humaneval-x-{language}")
        picked = [problems[0]] + ([problems[162]] if language == "js" else [])
        wrong = {"cpp": "    return false;\n}\n", "go": "    return false\n}\n",
                 "java": "        return false;\n    }\n}",
                 "js": "  return false;\n}\n", "rust": "    return false;\n}\n"}[language]
        samples = [Sample(p.task_id, 0, p.canonical_completion) for p in picked] + [Sample(picked[0].task_id, 1, wrong)]
        verdicts = execute(picked, samples, workers=1)
        expected = ["passed"] * len(picked) + ["failed"]
        assert [v.status for v in verdicts] == expected, (language, [v.detail for v in verdicts])

    python = load_benchmark("humaneval")[0]
    sees = (f"    import os\n"
            f"    if os.path.isdir({str(cache / 'toolchains')!r}) "
            f"and not os.path.exists({str(cache / 'reference')!r}):\n"
            f"        return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
            f"    return None\n")
    verdicts = execute([python], [Sample(python.task_id, 0, python.canonical_completion),
                                  Sample(python.task_id, 1, sees)], workers=1)
    assert [v.status for v in verdicts] == ["passed", "passed"], [v.detail for v in verdicts]
