"""Guards around a compiled-language program, so that a wrong answer cannot pass by leaving
early, taking the tests' entry point away, or silencing the assertions they call.

A program in another language is judged by its run's exit status.  Three ways to get status 0
without passing are closed here, in every language:

1. *Leaving with status 0 before (or while) the tests run* (``exit(0)`` in a static
   initializer, ``init()``, a constructor, ``.init_array``, a panic hook): the tests report
   their completion with a per-run random nonce that the sample's code never sees in its text
   (it is written in after the model wrote the code); no nonce, no pass.
2. *Taking the entry point away* (``#define main ...``): every name the tests use is
   ``#undef``-ed between the sample and the tests (C++); elsewhere the entry point cannot be
   redefined without a compile error.  And no nonce without the tests' own end.
3. *Silencing the assertion functions* (``#define assert``, ``console.assert = () => {}``,
   ``macro_rules! assert_eq``, a class named ``AssertionError``): the tests call assertions
   bound before the sample's code or by full path (``::std::assert_eq!``,
   ``java.lang.AssertionError``, a frozen copy of ``assert`` taken before the sample ran).

What a determined program can still do in its own process is listed per language in
``docs/architecture.md`` (Verdict integrity); those verdicts carry ``judged_in_process``.
"""

from __future__ import annotations

import re

from codealign.tasks.sandbox.records import CompiledTests

_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\b")


def guarded(tests: CompiledTests, setup: str, solution: str, test: str, nonce: str) -> str:
    """The program to build: setup, the sample's solution and the tests, with the guards."""
    language = tests.language
    if language == "cpp":
        return _cpp(setup, solution, test, nonce)
    if language == "java":
        return f"{setup}{solution}\n{_java(test, nonce)}\n"
    if language == "js":
        return _js(setup, solution, test, nonce)
    if language == "go":
        if tests.source_name.endswith("_test.go"):
            return _go_test(setup, solution, test, nonce)
        report = 'println("' + nonce + '")'
        return f"{setup}{solution}\n{_before_last_brace(test, report)}\n"
    if language == "rust":
        harness = any("--test" in step for step in tests.compile)
        return f"{setup}{solution}\n{_rust(test, nonce, harness)}\n"
    return f"{setup}{solution}\n{test}\n"


def _before_last_brace(code: str, statement: str) -> str:
    """``statement`` inserted before the last ``}`` of ``code`` (the end of its main)."""
    at = code.rfind("}")
    if at < 0:
        return code + "\n" + statement + "\n"
    return code[:at] + "\n" + statement + "\n" + code[at:]


# C++'s alternative operator spellings are not identifiers: never macros, and #undef refuses them
_CPP_OPERATOR_NAMES = frozenset({"and", "and_eq", "bitand", "bitor", "compl", "not", "not_eq", "or", "or_eq", "xor",
                                 "xor_eq"})
_ASSERT_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*<(?:assert\.h|cassert)>[ \t]*$", re.MULTILINE)


def _cpp(setup: str, solution: str, test: str, nonce: str) -> str:
    """Before the sample: the completion report and the assertion failure, bound now.  Between
    the sample and the tests: every name the tests use ``#undef``-ed (a macro of the sample's
    cannot rewrite them), and ``assert`` redefined to trap (no library function a sample could
    interpose, such as ``__assert_fail``, stands between a failed assertion and the process's
    death)."""
    done, fail = f"codealign_done_{nonce}", f"codealign_fail_{nonce}"
    prelude = (f"#include <unistd.h>\n"
               f"static void {done}() {{ ::write(1, \"{nonce}\\n\", {len(nonce) + 1}); }}\n"
               f"static void {fail}(const char* e) {{ ::write(2, \"Assertion failed: \", 18);"
               f" ::write(2, e, __builtin_strlen(e)); ::write(2, \"\\n\", 1); __builtin_trap(); }}\n")
    names = sorted((set(_IDENTIFIER.findall(test)) | {"main", "assert", "NDEBUG"}) - _CPP_OPERATOR_NAMES)
    undefs = "".join(f"#undef {n}\n" for n in names)
    asserting = f"#define assert(e) ((e) ? (void)0 : {fail}(#e))\n"
    body = _before_last_brace(_ASSERT_INCLUDE.sub("", test), f"{done}();")
    return f"{prelude}{setup}{solution}\n{undefs}{asserting}{body}\n"


_JAVA_QUALIFIED = {
    r"\bArrays\.": "java.util.Arrays.",
    r"\bList<": "java.util.List<",
    r"\bnew AssertionError\b": "new java.lang.AssertionError",
    r"\bObjects\.": "java.util.Objects.",
}


def _java(test: str, nonce: str) -> str:
    for pattern, qualified in _JAVA_QUALIFIED.items():
        test = re.sub(pattern, qualified, test)
    # before the closing braces of main and of its class
    at = test.rfind("}")
    at = test.rfind("}", 0, at) if at > 0 else at
    marker = f'java.lang.System.out.println("{nonce}");'
    return test[:at] + "\n" + marker + "\n" + test[at:] if at >= 0 else test + "\n" + marker


def _js(setup: str, solution: str, test: str, nonce: str) -> str:
    prelude = (
        "const __codealign = (() => {\n"
        "  const fs = require('fs'), write = fs.writeSync, nodeAssert = require('assert');\n"
        "  const exit = process.reallyExit.bind(process);\n"
        "  const frozen = Object.freeze(Object.assign((...a) => nodeAssert(...a), nodeAssert));\n"
        "  return Object.freeze({\n"
        "    assert: (ok, ...m) => { if (!ok) { write(2, 'Assertion failed\\n'); exit(1); } },\n"
        "    nodeAssert: frozen,\n"
        f"    done: () => write(1, '{nonce}\\n'),\n"
        "  });\n"
        "})();\n")
    test = re.sub(r"\bconsole\.assert\s*\(", "__codealign.assert(", test)
    test = re.sub(r"require\(\s*['\"](?:node:)?assert(?:/strict)?['\"]\s*\)", "__codealign.nodeAssert", test)
    return f"{prelude}{setup}{solution}\n{test}\n__codealign.done();\n"


def _go_test(setup: str, solution: str, test: str, nonce: str) -> str:
    """The tests' entry point is ours: a ``TestMain`` that reports completion only when every
    test passed (a sample's own ``TestMain``, which could run the tests and exit 0 anyway, is a
    duplicate definition)."""
    imports = 'import codealign_os "os"\n'
    main = (f"func TestMain(m *testing.M) {{\n    code := m.Run()\n    if code == 0 {{\n"
            f"        println(\"{nonce}\")\n    }}\n    codealign_os.Exit(code)\n}}\n")
    return f"{setup}{imports}{solution}\n{test}\n{main}"


_RUST_ASSERT = re.compile(r"(?<![\w:])(assert|assert_eq|assert_ne|debug_assert|debug_assert_eq|debug_assert_ne)!")


def _rust(test: str, nonce: str, harness: bool) -> str:
    test = _RUST_ASSERT.sub(r"::std::\1!", test)
    write = f'::std::io::Write::write_all(&mut ::std::io::stdout(), b"{nonce}\\n").unwrap();'
    if harness:  # libtest runs tests one at a time in name order (--test-threads=1): this one last
        return (f"{test}\n#[cfg(test)]\nmod zzzz_codealign_{nonce} {{\n    #[test]\n"
                f"    fn zzzz_done() {{ {write} }}\n}}\n")
    return _before_last_brace(test, write)
