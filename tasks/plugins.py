"""Extensions by entry point: the toy world (and any installed package) adds benchmarks, models
and preference sources to codealign's registries without the registries importing it.

Why entry points: the registries sit low in the import graph and the toy world high (it builds
on benchmarks, prompts and the self-alignment stages), so an import from below would be a cycle;
and a world that registered itself when imported would be missing from every process that never
imports it (a Ray worker, a Prefect run, a deployment).  Entry points are read from the installed
package's metadata, in whichever process looks a name up first.

Groups (``pyproject.toml``, ``[project.entry-points."codealign.<group>"]``):

* ``codealign.benchmarks``: name -> ``f(name) -> list[Problem]``;
* ``codealign.models``: name -> ``f(name) -> str`` (a local model directory);
* ``codealign.sources``: name -> ``f(name) -> Source`` (instructions for preference data).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any


@cache
def plugin_names(group: str) -> tuple[str, ...]:
    """The names registered in ``group`` (``codealign.`` prefixed), in a stable order."""
    return tuple(sorted(_entry_points(group)))


def load_plugin(group: str, name: str) -> Callable[..., Any]:
    """The object registered as ``name`` in ``group``, imported on first use."""
    return _entry_points(group)[name].load()


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=f"codealign.{group}")}
