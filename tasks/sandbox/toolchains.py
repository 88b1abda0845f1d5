"""Compilers and runtimes for the non-Python benchmarks (HumanEval-X, MultiPL-E): how a program
in each language is compiled and run inside the sandbox.

The toolchains are Debian packages (installed by ``make toolchains``; see the Makefile): g++
with Boost and OpenSSL headers (C++), golang-go with testify (Go), default-jdk-headless (Java),
nodejs (JavaScript), rustc with the rand/regex/md5 crates (Rust).  Samples see them as every
sample sees ``/usr``: read-only.  Two things are built once, outside the sandbox, by trusted
code (:func:`prepare`), under ``cache_dir()/toolchains`` (which workers bind back read-only):

* Rust: the crates HumanEval-X's declarations ``use`` (rand, regex, md5), compiled from
  Debian's crate sources (``/usr/share/cargo/registry``) with ``cargo --offline``; samples link
  against the ``.rlib`` files.
* Go: a warm build cache holding testify and the standard packages the tests import; each
  sample gets a private copy (Go insists on a writable cache), so compiling a sample costs
  ~0.5 s instead of ~4 s.

A language whose tool is missing is reported by :func:`missing` with the package to install;
its samples then fail with that reason instead of a confusing "command not found".
This module is standard-library only: the sandbox worker imports the records it builds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from codealign.tasks.sandbox.records import CompiledTests

LANGUAGES = ("cpp", "go", "java", "js", "rust")
LANGUAGE_NAMES = {"cpp": "C++", "go": "Go", "java": "Java", "js": "JavaScript", "rust": "Rust", "python": "Python"}
# MultiPL-E's language codes for the same languages
ALIASES = {"rs": "rust", "javascript": "js", "c++": "cpp", "golang": "go", "go_test.go": "go"}

# Compilation gets its own, wider limits: compilers are trusted code that needs more memory
# and time than a test run, and a slow compile must not count as the sample timing out.
COMPILE_CPU_S = 60.0
COMPILE_WALL_S = 120.0
COMPILE_MEMORY_MB = 4096
# The JVM reserves address space it never touches; its heap is capped by -Xmx instead.
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:ReservedCodeCacheSize=64m", "-XX:CompressedClassSpaceSize=64m",
             "-XX:TieredStopAtLevel=1", "-Xss16m")
_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Toolchain:
    """What a language needs on the machine: the executables and the Debian packages giving them."""

    executables: tuple[str, ...]
    packages: tuple[str, ...]


TOOLCHAINS: dict[str, Toolchain] = {
    "cpp": Toolchain(("g++",), ("g++", "libboost-dev", "libssl-dev")),
    "go": Toolchain(("go",), ("golang-go", "golang-github-stretchr-testify-dev")),
    "java": Toolchain(("javac", "java"), ("default-jdk-headless",)),
    "js": Toolchain(("node",), ("nodejs",)),
    "rust": Toolchain(("rustc", "cargo"), ("rustc", "cargo", "librust-rand-dev", "librust-regex-dev",
                                           "librust-md5-dev", "librust-aho-corasick-dev", "librust-memchr-dev")),
}
DEBIAN_REGISTRY = "/usr/share/cargo/registry"
GO_PATH = "/usr/share/gocode"  # Debian's Go libraries (testify), GOPATH-style
RUST_CRATES = {"rand": "0.8", "regex": "1", "md5": "0.7"}
# The same for the cache warm-up and every sample: any difference (CGO_ENABLED above all)
# changes build IDs, and then every sample recompiles the standard library.
GO_ENV = {"GO111MODULE": "off", "GOPATH": GO_PATH, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0",
          "GOTOOLCHAIN": "local"}


def canonical_language(name: str) -> str:
    """``rs`` -> ``rust`` and so on; an unknown language is an error naming the known ones."""
    lang = ALIASES.get(name.lower(), name.lower())
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {name!r}; supported: {', '.join(LANGUAGES)}")
    return lang


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_PATH)


def missing(language: str) -> str | None:
    """Why ``language`` cannot run here (None when it can)."""
    chain = TOOLCHAINS[language]
    absent = [t for t in chain.executables if _which(t) is None]
    if absent:
        return (f"{LANGUAGE_NAMES[language]} toolchain missing ({', '.join(absent)} not in {_PATH}); "
                f"install the Debian packages: apt-get install {' '.join(chain.packages)} (or `make toolchains`)")
    return None


def toolchain_root() -> Path:
    from codealign.tasks.files import cache_dir

    return cache_dir() / "toolchains"


# ---------------------------------------------------------------------------- one-time builds


def _rust_deps_dir() -> Path:
    versions = sorted(p.name for p in Path(DEBIAN_REGISTRY).glob("*")) if Path(DEBIAN_REGISTRY).is_dir() else []
    rustc = subprocess.run([_which("rustc") or "rustc", "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(repr((RUST_CRATES, versions, rustc)).encode()).hexdigest()[:12]
    return toolchain_root() / f"rust-{key}"


def _build_rust_deps(target: Path) -> str | None:
    """Compile rand/regex/md5 from Debian's crate sources into ``target/deps``; a reason on failure."""
    if not Path(DEBIAN_REGISTRY).is_dir():
        return f"{DEBIAN_REGISTRY} missing: apt-get install {' '.join(TOOLCHAINS['rust'].packages[2:])}"
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    (work / ".cargo").mkdir()
    deps = "\n".join(f'{name} = "{version}"' for name, version in RUST_CRATES.items())
    (work / "Cargo.toml").write_text(
        f'[package]\nname = "codealign_rust_deps"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n{deps}\n')
    (work / "src" / "lib.rs").write_text("")
    (work / ".cargo" / "config.toml").write_text(
        f'[source.crates-io]\nreplace-with = "debian"\n[source.debian]\ndirectory = "{DEBIAN_REGISTRY}"\n'
        "[net]\noffline = true\n")
    env = {**os.environ, "CARGO_HOME": str(work / ".cargo"), "PATH": _PATH}
    done = subprocess.run(["cargo", "build", "--release", "--offline"], cwd=work, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return "building the Rust crates rand/regex/md5 failed: " + " | ".join(lines[-3:])
    built = work / "target" / "release" / "deps"
    shutil.rmtree(target, ignore_errors=True)
    (target / "deps").parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(built, target / "deps", ignore=shutil.ignore_patterns("*.d", "*codealign_rust_deps*"))
    shutil.rmtree(work, ignore_errors=True)
    return None


_GO_WARM_PROGRAM = """package main

import (
    "testing"
    "github.com/stretchr/testify/assert"
    "math"
    "strings"
    "fmt"
    "strconv"
    "time"
    "bytes"
    "regexp"
    "sort"
    "math/rand"
    "crypto/md5"
)

var _ = []interface{}{math.Abs, strings.Split, fmt.Sprint, strconv.Itoa, time.Now, bytes.Equal, regexp.MustCompile,
    sort.Ints, rand.Intn, md5.Sum}

func TestWarm(t *testing.T) {
    assert := assert.New(t)
    assert.Equal(1, 1)
}
"""
# packages HumanEval-X's Go programs may use beyond what the test file imports (CodeGeeX's list)
GO_HELPER_PACKAGES = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort", "math/rand",
                      "crypto/md5")


def _go_cache_dir() -> Path:
    go = subprocess.run([_which("go") or "go", "version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(repr((go, _GO_WARM_PROGRAM, GO_ENV)).encode()).hexdigest()[:12]
    return toolchain_root() / f"go-{key}"


def _build_go_cache(target: Path) -> str | None:
    if not Path(GO_PATH, "src/github.com/stretchr/testify").is_dir():
        return f"testify missing under {GO_PATH}: apt-get install golang-github-stretchr-testify-dev"
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    (work / "src" / "main_test.go").write_text(_GO_WARM_PROGRAM)
    env = {"PATH": _PATH, "HOME": str(work), **GO_ENV, "GOCACHE": str(work / "cache")}
    done = subprocess.run(["go", "test", "-c", "-o", str(work / "warm.test"), "."], cwd=work / "src", env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return "warming the Go build cache failed: " + " | ".join(done.stderr.strip().splitlines()[-3:])
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    os.rename(work / "cache", target / "cache")
    for root, dirs, files in os.walk(target):  # samples run as another uid: readable copies
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    shutil.rmtree(work, ignore_errors=True)
    return None


JS_PACKAGES = ("js-md5@0.8.3",)  # HumanEval-X JavaScript/162 requires js-md5 (as CodeGeeX's set-up installs)


def _js_modules_dir() -> Path:
    key = hashlib.sha256(repr(JS_PACKAGES).encode()).hexdigest()[:12]
    return toolchain_root() / f"js-{key}"


def _build_js_modules(target: Path) -> str | None:
    npm = _which("npm")
    if npm is None:
        return (f"npm missing: the JavaScript packages {', '.join(JS_PACKAGES)} cannot be installed "
                "(apt-get install npm)")
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        done = subprocess.run([npm, "install", "--prefix", str(work), "--no-audit", "--no-fund", "--silent",
                               *JS_PACKAGES], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PATH": _PATH})
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        return f"npm install {' '.join(JS_PACKAGES)} timed out"
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        return f"npm install {' '.join(JS_PACKAGES)} failed: " + " | ".join(done.stderr.strip().splitlines()[-2:])
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    os.rename(work / "node_modules", target / "node_modules")
    shutil.rmtree(work, ignore_errors=True)
    return None


_PREPARED: dict[tuple[str, Path], tuple[Path | None, str | None]] = {}


def prepare(language: str) -> tuple[Path | None, str | None]:
    """Build (once per machine, cached) what ``language``'s samples link against; returns the
    directory and, when it could not be built, the reason.  Languages without such a need
    return ``(None, None)``."""
    builds = {"rust": (_rust_deps_dir, "deps", _build_rust_deps), "go": (_go_cache_dir, "cache", _build_go_cache),
              "js": (_js_modules_dir, "node_modules", _build_js_modules)}
    if language not in builds or missing(language) is not None:
        return (None, None)  # not remembered: the tool may be installed (or a test's stand-in removed) later
    key = (language, toolchain_root())
    if key in _PREPARED:
        return _PREPARED[key]
    where, ready_name, build = builds[language]
    target = where()
    ready = target / ready_name
    result: tuple[Path | None, str | None] = (target, None)
    if not ready.is_dir():
        import fcntl

        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f"{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; the others wait and reuse
            reason = None if ready.is_dir() else build(target)
        result = (None, reason) if reason else (target, None)
    _PREPARED[key] = result
    return result


# ---------------------------------------------------------------------------- per-program commands


def compiled_tests(language: str, *, rust_test_harness: bool = True, java_main: str = "Main",
                   go_test: bool = True) -> CompiledTests:
    """How a program in ``language`` is built and run in the sandbox (passing = the run exits 0
    and, for JavaScript, whose ``console.assert`` only prints, writes nothing to stderr).

    ``rust_test_harness``: HumanEval-X's Rust tests are ``#[test]`` functions (``rustc --test``);
    MultiPL-E's are a ``main``.  ``java_main``: the class holding ``main``.  ``go_test``: the
    program is a ``_test.go`` file run by ``go test`` (both benchmarks)."""
    reason = missing(language)
    prepared, prepare_reason = prepare(language)
    if language != "js":  # JavaScript runs without its extra packages (only one task needs one)
        reason = reason or prepare_reason
    env: dict[str, str] = {}
    copies: tuple[tuple[str, str], ...] = ()
    if language == "cpp":
        source = "main.cpp"
        compile_ = (("g++", "-std=c++17", "-O0", "-w", "-o", "main", source, "-lcrypto", "-lssl"),)
        run: tuple[str, ...] = ("./main",)
    elif language == "go":
        source = "main_test.go" if go_test else "main.go"
        env = {**GO_ENV, "GOCACHE": "{work}/gocache"}
        if prepared is not None:
            copies = ((str(prepared / "cache"), "gocache"),)
        if go_test:
            compile_ = (("go", "test", "-c", "-o", "main", "."),)
            run = ("./main", "-test.v=false")
        else:
            compile_ = (("go", "build", "-o", "main", source),)
            run = ("./main",)
    elif language == "java":
        source = f"{java_main}.java"
        compile_ = (("javac", "-encoding", "UTF-8", "-nowarn", *(f"-J{f}" for f in JVM_FLAGS), "-J-Xmx512m",
                     source),)
        run = ("java", *JVM_FLAGS, "-Xmx{heap_mb}m", "-cp", ".", java_main)
    elif language == "js":
        source = "main.js"
        compile_ = (("node", "--check", source),)  # a syntax error is a compile error, as elsewhere
        if prepared is not None:
            env = {"NODE_PATH": str(prepared / "node_modules")}
        run = ("node", "--stack-size=4000", source)
    else:  # rust
        source = "main.rs"
        externs: list[str] = []
        if prepared is not None:
            deps = prepared / "deps"
            externs = ["-L", f"dependency={deps}"]
            for crate in RUST_CRATES:
                found = sorted(deps.glob(f"lib{crate}-*.rlib"))
                if found:
                    externs += ["--extern", f"{crate}={found[0]}"]
        compile_ = (("rustc", "--edition", "2021", "--cap-lints", "allow", "-C", "opt-level=0",
                     *(("--test",) if rust_test_harness else ()), *externs, "-o", "main", source),)
        run = ("./main", "--test-threads=1") if rust_test_harness else ("./main",)
    return CompiledTests(
        language=language, source_name=source, compile=compile_, run=run, env=tuple(sorted(env.items())),
        copies=copies, compile_cpu_s=COMPILE_CPU_S, compile_wall_s=COMPILE_WALL_S,
        compile_memory_mb=COMPILE_MEMORY_MB, fail_on_stderr=language == "js", unavailable=reason or "")


def visible_paths() -> list[str]:
    """Directories sandbox workers must bind back read-only (the prepared toolchain builds)."""
    root = toolchain_root()
    return [str(root.resolve())] if root.is_dir() else []
