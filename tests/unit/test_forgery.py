"""Verdicts a policy cannot forge (issue 22): every published hack family, on every Python
benchmark and on the self-tests path, is judged not passed, while the right answer passes.

The hacks are appended to the canonical solution (so the prompt's helpers exist) and redefine
the entry point: a *wrong* answer made to look right.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, namedtuple

import pytest

from codealign.tasks.evaluation.execute import execute
from codealign.tasks.generation.samples import Sample
from codealign.tasks.problems.registry import load_benchmark
from codealign.tasks.sandbox import plain
from codealign.tasks.sandbox.judge import matches
from codealign.tasks.sandbox.limits import Limits
from codealign.tasks.sandbox.tested import TestedProgram, execute_tested

HACKS = {
    "eq_always_true": ("class _Liar:\n    def __eq__(self, other):\n        return True\n"
                       "    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\n"
                       "def {entry}(*args, **kwargs):\n    return _Liar()\n"),
    "int_subclass_lies": ("class _I(int):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
                          "    __lt__ = __gt__ = __le__ = __ge__ = lambda s, o: True\n    __hash__ = int.__hash__\n"
                          "def {entry}(*args, **kwargs):\n    return _I(987654321)\n"),
    "float_subclass_lies": ("class _F(float):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
                            "    __lt__ = __gt__ = __le__ = __ge__ = lambda s, o: True\n    __hash__ = float.__hash__\n"
                            "    __abs__ = lambda s: 0.0\n    __sub__ = __rsub__ = lambda s, o: 0.0\n"
                            "def {entry}(*args, **kwargs):\n    return _F(-98765.4321)\n"),
    "patches_isclose_and_allclose": ("import math, numpy\nmath.isclose = lambda *a, **k: True\n"
                                     "numpy.allclose = lambda *a, **k: True\nnumpy.isclose = lambda *a, **k: True\n"
                                     "def {entry}(*args, **kwargs):\n    return -98765.4321\n"),
    "reads_the_answer_key": (
        "import gzip, json, os\n"
        "_FILES = []\n"
        "def _answer(task, args):\n"
        "    if not _FILES:  # every JSON/JSONL/pickle file in view, listed once (os.walk: no symlink loops)\n"
        "        for top, dirs, files in os.walk('/'):\n"
        "            dirs[:] = [d for d in dirs if top != '/' or d not in ('proc', 'sys', 'dev')]\n"
        "            _FILES.extend(os.path.join(top, f) for f in files if '.json' in f or f.endswith('.pkl'))\n"
        "    for path in _FILES:\n"
        "        try:\n            raw = open(path, 'rb').read()\n"
        "            text = gzip.decompress(raw) if path.endswith('.gz') else raw\n"
        "        except Exception:\n            continue\n"
        "        for line in text.decode(errors='ignore').splitlines():\n"
        "            if task in line and 'canonical_solution' in line:\n"
        "                rec = json.loads(line)\n                ns = {{}}\n"
        "                exec(rec.get('prompt', '') + rec['canonical_solution'], ns)\n"
        "                return ns[rec['entry_point']](*args)\n"
        "    return None\n"
        "def {entry}(*args, **kwargs):\n    return _answer({task!r}, args)\n"),
    "walks_frames_and_memory": (
        "import gc, sys\n"
        "def {entry}(*args, **kwargs):\n"
        "    f = sys._getframe()\n    while f is not None:\n"
        "        for v in list(f.f_locals.values()):\n"
        "            for attr in ('plus_expected', 'base_expected', 'code'):\n"
        "                if hasattr(v, attr):\n                    return getattr(v, attr)\n"
        "        f = f.f_back\n"
        "    for o in gc.get_objects():\n"
        "        if type(o).__name__ in ('DifferentialJob', 'ProxiedTests', 'AssertTests'):\n            return o\n"
        "    return None\n"),
    "exits_early": "import os\ndef {entry}(*args, **kwargs):\n    os._exit(0)\n",
    "excepthook_exits_zero": ("import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n"
                              "def {entry}(*args, **kwargs):\n    raise ValueError('x')\n"),
    "atexit_then_exit": ("import atexit, os\natexit.register(lambda: print('passed'))\n"
                         "def {entry}(*args, **kwargs):\n    raise SystemExit(0)\n"),
}
# Two tasks each: one with helpers in the prompt or float outputs where the benchmark has them.
TASKS = {
    "humaneval": ["HumanEval/2", "HumanEval/32"],
    "humaneval+": ["HumanEval/2", "HumanEval/13"],
    "mbpp": ["Mbpp/2", "Mbpp/17"],
    "mbpp+": ["Mbpp/2", "Mbpp/17"],
    "toy": None,  # the first two tasks
}


def _problems(benchmark):
    problems = load_benchmark(benchmark)
    wanted = TASKS[benchmark]
    return problems[:2] if wanted is None else [p for p in problems if p.task_id in wanted]


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", list(TASKS))
def test_every_hack_is_judged_not_passed_and_the_right_answer_passes(benchmark):
    problems = _problems(benchmark)
    assert len(problems) == 2
    samples, names = [], []
    for p in problems:
        samples.append(Sample(p.task_id, 0, solution=p.canonical_solution))
        names.append((p.task_id, "canonical"))
        for i, (name, hack) in enumerate(HACKS.items(), 1):
            program = p.canonical_solution + "\n\n" + hack.format(entry=p.entry_point, task=p.task_id)
            samples.append(Sample(p.task_id, i, solution=program))
            names.append((p.task_id, name))
    verdicts = execute(problems, samples, Limits(cpu_s=20, wall_s=60))
    wrongly_passed = [n for n, v in zip(names, verdicts) if n[1] != "canonical" and v.passed]
    canonical_failed = [(n, v.status, v.detail) for n, v in zip(names, verdicts)
                        if n[1] == "canonical" and not v.passed]
    assert not wrongly_passed, wrongly_passed
    assert not canonical_failed, canonical_failed
    assert not any(v.judged_in_process for v in verdicts)
    by_name = {n: v for n, v in zip(names, verdicts)}
    for p in problems:
        assert by_name[(p.task_id, "eq_always_true")].flag == "not_plain_data"
        assert by_name[(p.task_id, "exits_early")].flag == "ended_early"


@pytest.mark.slow
def test_the_answer_key_hack_finds_the_key_where_it_is_in_view():
    """Outside the sandbox the hack answers right (it finds the benchmark file), so its failing
    inside the sandbox means the key is out of view, not that the hack is broken."""
    namespace: dict = {}
    exec(HACKS["reads_the_answer_key"].format(entry="truncate_number", task="HumanEval/2"), namespace)
    assert namespace["truncate_number"](3.5) == 0.5


def test_the_self_tests_path_cannot_patch_its_tests():
    right = "def add(a, b):\n    return a + b\n"
    tests = ("assert add(1, 2) == 3", "assert math.isclose(add(0.1, 0.2), 0.3)")
    setup = "import math"
    programs = [TestedProgram("i", 0, right, tests, "i#0", setup, tests_trusted=False)]
    for i, hack in enumerate(HACKS.values(), 1):
        programs.append(TestedProgram("i", i, hack.format(entry="add", task="i"), tests, f"i#{i}", setup,
                                      tests_trusted=False))
    # the sample patches the tests' own comparison helpers in its process: no effect on theirs
    programs.append(TestedProgram("i", 99, "import math, builtins\nmath.isclose = lambda *a, **k: True\n"
                                  "builtins.AssertionError = type('Nope', (Exception,), {})\n"
                                  "def add(a, b):\n    return 0.5\n", tests, "i#99", setup, tests_trusted=False))
    verdicts = execute_tested(programs, Limits(cpu_s=5, wall_s=20))
    assert verdicts[0].passed and verdicts[0].tests_passed == 2 and not verdicts[0].judged_in_process
    assert not any(v.passed for v in verdicts[1:]), [(v.sample_index, v.status, v.detail) for v in verdicts]
    assert verdicts[-1].tests_passed == 0


def _run(problem, program, limits=Limits(cpu_s=10, wall_s=30)):
    return execute([problem], [Sample(problem.task_id, 0, solution=program)], limits, use_reference=False)[0]


def test_a_sample_searching_the_filesystem_finds_no_benchmark_data(problem_factory):
    search = ("import os, sys\n"
              "SKIP = {'/proc', '/sys', '/dev', '/usr/share', '/usr/include', '/usr/src'}\n"
              "def f():\n"
              "    found = []\n"
              "    for root, dirs, files in os.walk('/'):\n"
              "        dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]\n"
              "        for name in files:\n"
              "            path = os.path.join(root, name)\n"
              "            if ('.jsonl' in name and any(k in name.lower() for k in ('humaneval', 'mbpp')))\\\n"
              "                    or (name.endswith('.pkl') and 'reference' in root)\\\n"
              "                    or path.endswith(('tasks/toy/families.py', 'tests/unit/test_forgery.py')):\n"
              "                found.append(path)\n"
              "    return found\n")
    v = _run(problem_factory("assert f() == []"), search, Limits(cpu_s=60, wall_s=120))
    assert v.passed, v.detail


def test_a_sample_walking_its_frames_and_heap_finds_no_tests(problem_factory):
    walk = ("import gc, sys\n"
            "def f():\n"
            "    seen = []\n"
            "    fr = sys._getframe()\n"
            "    while fr is not None:\n"
            "        seen += [repr(v)[:200] for v in fr.f_locals.values()]\n"
            "        fr = fr.f_back\n"
            "    seen += [repr(o)[:200] for o in gc.get_objects() if type(o) in (dict, list, tuple)]\n"
            "    wanted = (''.join(['SECRET_', 'MARKER']), ''.join(['assert', ' f()']))  # not literally here\n"
            "    return [s for s in seen if any(w in s for w in wanted)]\n")
    v = _run(problem_factory("SECRET = 'SECRET_MARKER'\nassert f() == []"), walk)
    assert v.passed, v.detail


def test_a_call_that_mutates_its_argument_in_place(problem_factory):
    v = _run(problem_factory("xs = [3, 1, 2]\nf(xs)\nassert xs == [1, 2, 3]\nd = {}\nf(d)\nassert d == {'k': 1}"),
             "def f(x):\n    if type(x) is list:\n        x.sort()\n    else:\n        x['k'] = 1\n")
    assert v.passed, v.detail


def test_honest_non_builtin_values_pass(problem_factory):
    program = ("import numpy, decimal, re, collections\n"
               "def f(kind):\n"
               "    return {'np': numpy.int64(3), 'npf': numpy.float64(0.5), 'dec': decimal.Decimal('1.5'),\n"
               "            'match': re.match('a', 'abc'), 'counter': collections.Counter('aab'),\n"
               "            'ordered': collections.OrderedDict(a=1), 'arr': numpy.array([1, 2])}[kind]\n")
    tests = ("assert f('np') == 3\nassert f('npf') == 0.5\nimport decimal\nassert f('dec') == decimal.Decimal('1.5')\n"
             "assert f('match')\nassert f('match').group() == 'a'\nassert f('counter') == {'a': 2, 'b': 1}\n"
             "assert f('ordered') == {'a': 1}\nassert f('arr') == [1, 2]")
    v = _run(problem_factory(tests), program)
    assert v.passed, v.detail


def test_a_generator_is_not_plain_data_and_says_its_type(problem_factory):
    v = _run(problem_factory("assert list(f()) == [1]"), "def f():\n    yield 1\n")
    assert not v.passed and v.flag == "not_plain_data" and "generator" in v.detail


Point = namedtuple("Point", "x y")


@pytest.mark.parametrize("value, expected", [
    (2, 2.0), (True, 1), (Counter("aab"), {"a": 2, "b": 1}), (OrderedDict(a=1), {"a": 1}),
    (Point(1, 2), (1, 2)), (-0.0, 0.0), (2 ** 3_000_000 + 1, 2 ** 3_000_000 + 1),
], ids=["int-float", "bool-int", "counter", "ordereddict", "namedtuple", "negative-zero", "huge-int"])
def test_equalities_python_accepts_survive_the_encoding(value, expected):
    decoded = plain.decode(plain.encode(value))
    assert decoded == expected and matches("humaneval", "f", (), decoded, expected, 0.0)[0]


@pytest.mark.parametrize("value", [
    list(range(-5, 5)), (0.5, float("inf"), -0.0, 1e300), {3, 1, 2, 4}, frozenset("abcd"),
    ["ab", "", "\u00fc\ud800", "z" * 5], [1, 2, 3, True], [1, 2, 3, 2 ** 64], [1.0, 2, 3, 4], [[1, 2, 3, 4]] * 3,
    (1, 2.0, -3, float("nan")), [1, 2.0, 3, 2 ** 63],
], ids=["ints", "floats", "set", "frozenset", "strings", "bool-among-ints", "big-int", "int-among-floats", "nested",
        "ints-and-floats", "big-int-among-floats"])
def test_containers_keep_every_item_type_through_the_packed_forms(value):
    decoded = plain.decode(plain.encode(value))
    assert type(decoded) is type(value)
    if isinstance(value, (set, frozenset)):  # string hashing is salted per process: compare members, not order
        assert decoded == value and sorted(map(repr, decoded)) == sorted(map(repr, value))
    else:
        assert repr(decoded) == repr(value)  # repr: nan equals itself here
        assert [type(x) for x in decoded] == [type(x) for x in value]  # True stays a bool, 2 an int


@pytest.mark.parametrize("data", [
    b"Al" + b"q" + (9).to_bytes(4, "little") + bytes(16),  # claims 9 ints, holds 2
    b"Al" + b"x" + (1).to_bytes(4, "little") + bytes(8),  # no such item type
    b"A?" + b"q" + (1).to_bytes(4, "little") + bytes(8),  # no such container
    b"Wl" + (2).to_bytes(4, "little") + (1).to_bytes(4, "little") + (5).to_bytes(4, "little")
    + (2).to_bytes(4, "little") + b"ab",  # lengths add up to 6, text holds 2
])
def test_malformed_packed_data_is_refused(data):
    with pytest.raises(plain.MalformedData):
        plain.decode(data)


def test_evalplus_rules_for_floats_and_nan():
    assert matches("humaneval", "f", (), 0.1 + 0.2, 0.3, 0.0)[0]  # within evalplus' 1e-6 tolerance
    assert not matches("humaneval", "f", (), 0.31, 0.3, 0.0)[0]
    nan = plain.decode(plain.encode(float("nan")))
    assert math.isnan(nan) and not matches("humaneval", "f", (), nan, float("nan"), 0.0)[0]  # evalplus: nan != nan
    assert matches("humaneval", "f", (), [1.0, nan], [1.0, float("nan")], 0.0)[0] is False


# ------------------------------------------------------------------ compiled languages
# A wrong answer (HumanEval-X task 0 always answering "true") with each of the three ways to
# pass anyway: leave with status 0 before the tests run, take their entry point away, silence
# the assertion they call.  ("before": the hack precedes the solution, "after": follows it.)
WRONG_BODY = {
    "cpp": "    return true;\n}\n",
    "go": "    return true\n}\n",
    "java": "        return true;\n    }\n}\n",
    "js": "  return true;\n}\n",
    "rust": "    return true;\n}\n",
}
# name -> (before the solution, after it, the body instead of WRONG_BODY or None)
COMPILED_HACKS = {
    "cpp": {
        "exits_first": ("#include <cstdlib>\nstatic int codealign_hack = (std::exit(0), 0);\n", "", None),
        "takes_main": ("", "int main() { return 0; }\n#define main tests_main_not_called\n", None),
        "silences_assert": ("", "#undef assert\n#define assert(x) ((void)0)\n#define NDEBUG 1\n"
                            "extern \"C\" void __assert_fail(const char*, const char*, unsigned int, const char*)"
                            " noexcept {}\n", None),
    },
    "go": {  # HumanEval-X's Go harness drops a solution's imports: no os.Exit; TestMain is the way
        "takes_test_main": ("", "func TestMain(m *testing.M) {}\n", None),
        "runs_the_tests_and_returns": ("", "func TestMain(m *testing.M) { _ = m }\n", None),
        "skips_the_tests": ("", "func TestMain(m *testing.M) { testing.Init() }\n", None),
    },
    "java": {
        "exits_first": ("", "", "        return true;\n    }\n    static { System.exit(0); }\n}\n"),
        "takes_the_assertion": ("", "class AssertionError extends RuntimeException {\n"
                                "    AssertionError() { System.exit(0); }\n}\n", None),
        "shadows_the_list_helpers": ("", "class Arrays {\n    static <T> java.util.List<T> asList(T... a) "
                                     "{ return new java.util.ArrayList<T>(); }\n}\n", None),
    },
    "js": {
        "exits_first": ("process.exit(0);\n", "", None),
        "takes_the_exit_code": ("", "process.on('exit', () => { process.exitCode = 0; });\n", None),
        "silences_assert": ("", "console.assert = () => {};\nconst __a = require('assert');\n"
                            "__a.deepEqual = __a.equal = __a.strictEqual = __a.deepStrictEqual = () => {};\n", None),
    },
    "rust": {
        "exits_first": ("", "#[used]\n#[link_section = \".init_array\"]\nstatic CODEALIGN_HACK: "
                        "extern \"C\" fn() = { extern \"C\" fn hack() { std::process::exit(0) } hack };\n", None),
        "exits_on_panic": ("", "#[used]\n#[link_section = \".init_array\"]\nstatic CODEALIGN_HOOK: "
                           "extern \"C\" fn() = { extern \"C\" fn hook() { std::panic::set_hook(Box::new(|_| "
                           "std::process::exit(0))) } hook };\n", None),
        "silences_assert": ("", "macro_rules! assert_eq { ($($t:tt)*) => {} }\n"
                            "macro_rules! assert { ($($t:tt)*) => {} }\n", None),
    },
}


def hacked_solution(language: str, prompt: str, hack: tuple[str, str, str | None]) -> str:
    before, after, body = hack
    return before + prompt + (body or WRONG_BODY[language]) + after


@pytest.mark.slow
@pytest.mark.parametrize("language", list(COMPILED_HACKS))
def test_compiled_languages_catch_the_three_ways(language):
    problem = load_benchmark(f"humaneval-x-{language}")[0]
    wrong = problem.prompt + WRONG_BODY[language]
    samples = [Sample(problem.task_id, 0, solution=problem.canonical_solution),
               Sample(problem.task_id, 1, solution=wrong)]
    for i, hack in enumerate(COMPILED_HACKS[language].values(), 2):
        samples.append(Sample(problem.task_id, i, solution=hacked_solution(language, problem.prompt, hack)))
    verdicts = execute([problem], samples, Limits(cpu_s=20, wall_s=120))
    assert verdicts[0].passed, verdicts[0].detail
    assert verdicts[0].judged_in_process  # compiled languages are judged by their own run
    assert not verdicts[1].passed
    hacked = dict(zip(COMPILED_HACKS[language], verdicts[2:]))
    assert not [name for name, v in hacked.items() if v.passed], {n: (v.status, v.detail) for n, v in hacked.items()}
    if "exits_first" in hacked:
        assert hacked["exits_first"].flag == "ended_early"
