"""The wheel is the product: built from the repository, installed into a fresh venv outside the
checkout, it must run the main job's commands under the one `codealign` import name, with its
presets, templates and manifests inside it (not read from a checkout that happens to be nearby)."""
import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: setuptools from this venv (a build must not reach the network).
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out), str(REPO)], capture_output=True, text=True, cwd=out)
    assert r.returncode == 0, r.stderr
    (built,) = out.glob("codealign-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; third-party packages come from the running venv's
    site-packages through a .pth (the .pth files inside them, the editable checkout's included, are not read)."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env_dir, with_pip=False)
    purelib = Path(subprocess.check_output([str(env_dir / "bin" / "python"), "-c",
                                            "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                           text=True).strip())
    borrowed = [p for p in sys.path if p.endswith("site-packages") and not Path(p).is_relative_to(REPO)]
    (purelib / "running-venv.pth").write_text("".join(p + "\n" for p in borrowed))
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--quiet",
                        "--no-deps", str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return env_dir


def test_the_wheel_carries_the_data_files_and_declares_its_imports(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "codealign/tasks/sweeps/presets/toy.yaml" in names
    assert any(n.startswith("codealign/tasks/preferences/templates/") for n in names)
    assert "codealign/infra/kuberay/raycluster.yaml" in names and "codealign/infra/kuberay/rayjob.yaml" in names
    assert "codealign/deployments/deploy.py" in names and "codealign/infra/__init__.py" in names
    assert not any(n.startswith(("tasks/", "flows/", "tests/")) for n in names)  # one import name only
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert any("pyyaml" in line.lower() for line in requires)
    entry_points = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert ("codealign = codealign.cli:app" in entry_points and "[codealign.sources]" in entry_points
            and "codealign.tasks.toy.sources:toy_source" in entry_points)


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CODEALIGN_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.run([str(installed / "bin" / "codealign"), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_the_installed_wheel_runs_outside_the_checkout(installed, tmp_path):
    where = subprocess.check_output([str(installed / "bin" / "python"), "-c",
                                     "import codealign; print(codealign.__file__)"], text=True, cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(installed), where

    plan = _run(installed, tmp_path, "sweep", "--preset", "toy", "--store", str(tmp_path / "store"), "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "sft" in plan.stdout.lower() and "dpo" in plan.stdout.lower()
    assert not (tmp_path / "store").exists()  # a plan starts nothing

    stack = _run(installed, tmp_path, "stack", "--help")
    assert stack.returncode == 0 and all(c in stack.stdout for c in ("up", "status", "down")), stack.stderr

    right = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": "HumanEval/0", "completion": c}) + "\n"
                               for c in (right, "    return True\n")))
    out = tmp_path / "verdicts.jsonl"
    r = _run(installed, tmp_path, "exec", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["passed"] for line in out.read_text().splitlines()] == [True, False]
