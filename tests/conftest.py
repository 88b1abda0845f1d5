"""Set-up every layer shares: the data directory, loopback-only Ray, the toy models, a GPU
marker.  Layers: ``unit/`` (no servers), ``integration/`` (S3, Prefect and Ray on loopback; their
fixtures in ``integration/conftest.py``), ``e2e/`` (the command line, the wheel, the browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import codealign.flows  # noqa: F401 - applies codealign's Prefect settings before any test imports Prefect

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("CODEALIGN_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
# Prefect builds its console log handler on its first full import, writing to the sys.stderr of
# that moment.  Imported here, that is the session's stream; first imported inside a test's
# CliRunner invocation (tests/e2e/test_cli.py), it would be the runner's stream, closed when the
# invocation ends, and every later in-process flow run would fail on its first log line.
import prefect.main  # noqa: E402, F401

# Warm samplers left on the session's Ray cluster shut their engines down soon after their last use.
os.environ.setdefault("CODEALIGN_SAMPLER_IDLE_S", "120")
# Ray rewrites 127.0.0.1 to the machine's routable address (its nodes are meant to be reached
# from other hosts).  Tests stay on loopback: a local Ray started by a test uses the loopback
# address (Ray's switch for single-host clusters), and the session cluster's nodes take other
# loopback addresses, which Ray leaves as they are (integration/conftest.py).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # a broken torch install is no GPU
        return False


# `make test` runs two pytest-xdist workers (`-n 2 --dist loadscope`), one per group: the
# integration layer (its session servers and Ray cluster, its module-scoped flow runs, in file
# order) on one, the unit and end-to-end layers on the other.  Most of the suite waits (servers,
# engines, subprocesses) rather than computes, so the two overlap on two cores; each group runs
# its tests in the order a single process would, so a session fixture still starts once.
# (pytest-xdist's own `loadgroup` ignores `xdist_group` marks under pytest 9: it runs every
# test anywhere, servers twice.)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """A scheduler whose scopes are the two groups above (pytest-xdist assigns each scope to one
    worker, its tests in collection order); other `--dist` modes keep pytest-xdist's own."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LayerScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "integration" if nodeid.startswith("tests/integration/") else "local"

    return LayerScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests run where a CUDA GPU is (``pytest -m gpu``), and are skipped,
    saying why, everywhere else."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_tests and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in gpu_tests:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def toy_model_paths():
    """toy-base and toy-instruct, built once (cached by content hash across runs)."""
    from codealign.tasks.toy.models import build_toy_models

    return build_toy_models()


@pytest.fixture(scope="session", autouse=True)
def _release_vllm_engines():
    """Shut the session's vLLM engines down while the streams are still open (at interpreter
    exit their shutdown logs into closed handlers)."""
    yield
    import sys

    if "codealign.tasks.generation.sampling" in sys.modules:
        sys.modules["codealign.tasks.generation.sampling"].release_engines()
