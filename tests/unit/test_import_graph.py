"""The import graph is a DAG, layered: low layers know nothing above them.

Why a test: each new flow or command used to copy an import from wherever it was handy, and the
packages grew cycles (benchmarks <-> sandbox, benchmarks <-> toy, ...).  Every import counts,
including the ones inside functions (a lazy import is still a dependency), read from the
source with ``ast`` so nothing is executed.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("tasks", "flows", "deployments", "infra")  # the folders codealign/ links to
_BARE_STRING = re.compile(r"""["'](?:-m\s+)?((?:""" + "|".join(TOP) + r""")\.[A-Za-z_][\w.]*(?::\w+)?)""")
# Lowest first.  A module may import its own layer's modules (without a cycle) and lower ones.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("codealign.tasks.errors", "codealign.tasks.plugins", "codealign.tasks.plots"),
    ("codealign.tasks.files",),
    ("codealign.tasks.artifacts",),
    ("codealign.tasks.sandbox",),
    ("codealign.tasks.problems",),  # benchmark problems and their tests (the datasets, not benchmarks/)
    ("codealign.tasks.generation",),
    ("codealign.tasks.evaluation", "codealign.tasks.training"),
    ("codealign.tasks.preferences",),
    ("codealign.tasks.toy",),
    ("codealign.tasks.sweeps", "codealign.tasks.training.gpu_check"),  # both compose training with the toy world
    ("codealign.tasks.rendering",),  # what the command line prints, from any of the above
    ("codealign.infra",),
    ("codealign.flows",),
    ("codealign.deployments",),
    ("codealign",),  # the package itself (and its command line) may import everything
)
# Orchestration libraries stay out of tasks/ (plain Python, callable without them).
ORCHESTRATION = ("prefect", "prefect_ray", "ray")


def _modules() -> dict[str, Path]:
    """Every module of the package, by its one import name (``codealign.tasks.files``)."""
    mods = {"codealign": ROOT / "codealign" / "__init__.py"}
    for path in (ROOT / "codealign").glob("*.py"):
        mods[f"codealign.{path.stem}"] = path
    for top in TOP:
        for path in (ROOT / top).rglob("*.py"):
            parts = ["codealign", *path.relative_to(ROOT).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _ours(name: str) -> str | None:
    """The module of ours that ``name`` (an imported dotted name) lives in, if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every absolute import in a file, as dotted names (``from a import b`` gives ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name in _imports(path):
            target = _ours(name)
            if target and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    return edges


def _package(module: str) -> str:
    """``codealign.tasks.sandbox.pool`` -> ``codealign.tasks.sandbox`` (a module directly in
    tasks/ counts as its own package); ``codealign.flows.cli`` -> ``codealign.flows``;
    ``codealign.cli`` -> ``codealign``."""
    parts = module.split(".")
    if parts[1:2] == ["tasks"]:
        return ".".join(parts[:3])
    if parts[1:2] and parts[1] in TOP:
        return ".".join(parts[:2])
    return "codealign"


def _layer(module: str) -> int:
    """The rank of the longest layer name that ``module`` is, or is inside."""
    matches = [(len(name), rank) for rank, layer in enumerate(LAYERS) for name in layer
               if module == name or module.startswith(name + ".")]
    if matches:
        return max(matches)[1]
    raise AssertionError(f"{module}: in no layer; add its package to LAYERS in {__file__}")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_checker_finds_cycles_and_layers():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _package("codealign.tasks.sandbox.pool") == "codealign.tasks.sandbox"
    assert (_package("codealign.flows.cli") == "codealign.flows"
            and _package("codealign.tasks.files") == "codealign.tasks.files")
    assert (_layer("codealign.tasks.sandbox.pool") < _layer("codealign.tasks.problems.registry")
            < _layer("codealign.flows.cli"))
    assert _layer("codealign.flows.cli") < _layer("codealign.deployments.deploy") < _layer("codealign")
    assert _ours("codealign.tasks.sandbox.records.Job") == "codealign.tasks.sandbox.records"
    assert _ours("tasks.sandbox.records") is None  # the bare folder name is not a name of ours


def test_no_cycle_between_modules():
    assert _cycles(_edges()) == []


def test_no_cycle_between_packages():
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in _edges().items():
        for target in targets:
            if _package(source) != _package(target):
                packages[_package(source)].add(_package(target))
    assert _cycles(packages) == []


def test_no_import_reaches_a_higher_layer():
    upward = sorted(f"{source} -> {target}" for source, targets in _edges().items() for target in targets
                    if _layer(target) > _layer(source))
    assert upward == []


def test_tasks_are_plain_python():
    """tasks/ is callable and testable without Prefect or Ray (flows/ composes them)."""
    used = sorted(f"{module}: {name}" for module, path in MODULES.items() if module.startswith("codealign.tasks.")
                  for name in _imports(path) if name.split(".")[0] in ORCHESTRATION)
    assert used == []


def test_nothing_imports_the_folders_by_their_bare_names():
    """``tasks.x`` and ``codealign.tasks.x`` would be two modules (two ``Job`` classes, two
    registries): the package, its tests and the benchmark scripts use ``codealign.`` only."""
    bare = []
    for folder in (*TOP, "codealign", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            bare += [f"{path.relative_to(ROOT)}: {name}" for name in _imports(path) if name.split(".")[0] in TOP]
            if path != Path(__file__):  # module names in strings too: ["-m", "tasks.sandbox.worker"], entry points
                bare += [f"{path.relative_to(ROOT)}: {m.group(1)!r}" for m in _BARE_STRING.finditer(path.read_text())]
    for path in (ROOT / "pyproject.toml", ROOT / "Makefile", *ROOT.glob("deployments/*.yaml")):
        bare += [f"{path.relative_to(ROOT)}: {m.group(1)!r}" for m in _BARE_STRING.finditer(path.read_text())]
    assert bare == []
