"""CLI options derived from the pydantic configs, `--config FILE.yaml`, and model references
resolved in one place: every mistake is one line naming the option, file or model, exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from codealign.flows.options import ConfigError, build_config, config_options
from codealign.tasks.evaluation.units import CheckpointEvalConfig
from codealign.tasks.generation.models import ModelNotFound, resolve_model

REPO = Path(__file__).resolve().parents[2]


def codealign(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codealign", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def test_every_config_field_is_an_option_including_new_ones():
    class Inner(BaseModel):
        depth: int = Field(2, description="how deep")

    class Config(BaseModel):
        name: str = "x"
        tags: list[str] = []
        inner: Inner = Inner()
        ks: list[int] = [1]

    options = {o.flag: o for o in config_options(Config)}
    assert set(options) == {"--name", "--tags", "--depth", "--k"}
    assert options["--depth"].path == ("inner", "depth") and options["--depth"].help == "how deep"
    assert options["--tags"].many and options["--k"].kind is int
    flags = {o.flag for o in config_options(CheckpointEvalConfig)}
    assert {"--checkpoints", "--benchmarks", "--modes", "--n", "--temperature", "--top-p", "--max-model-len",
            "--enforce-eager", "--k", "--cpu-s", "--store", "--ray-address"} <= flags


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    options = config_options(CheckpointEvalConfig)
    path = tmp_path / "eval.yaml"
    path.write_text("checkpoints: [ckpts]\nbenchmarks: [toy]\nsampling:\n  n: 3\n  temperature: 0.5\n")
    config = build_config(CheckpointEvalConfig, options, {"temperature": 0.9, "modes": ["command,flow"]}, path)
    assert (config.sampling.n, config.sampling.temperature, config.modes) == (3, 0.9, ["command", "flow"])
    assert config.benchmarks == ["toy"] and config.sampling.top_p == 0.95


@pytest.mark.parametrize("text, message", [
    ("sampling:\n  n: [1\n", r"eval\.yaml:\d+: not valid YAML"),
    ("- a\n- b\n", r"eval\.yaml: a config file holds a mapping"),
    ("checkpoints: [c]\nsampling:\n  temprature: 0.5\n", r"eval\.yaml: sampling\.temprature: Extra inputs"),
    ("checkpoints: [c]\nsampling:\n  n: 0\n", r"eval\.yaml: sampling\.n: Input should be greater than"),
])
def test_config_file_errors_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "eval.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_config(CheckpointEvalConfig, config_options(CheckpointEvalConfig), {}, path)


def test_cli_errors_name_the_option(tmp_path):
    r = codealign("evaluate-checkpoints", "--checkpoints", str(tmp_path), "--temperature", "-1")
    assert r.returncode == 2 and "--temperature: Input should be greater than or equal to 0" in r.stderr
    r = codealign("evaluate-checkpoints", "--benchmarks", "toy")
    assert r.returncode == 2 and "--checkpoints: Field required" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("modes: [sideways]\n")
    r = codealign("evaluate-checkpoints", "--checkpoints", str(tmp_path), "--config", str(bad))
    assert r.returncode == 2 and "bad.yaml: modes.0: Input should be 'command' or 'flow'" in r.stderr
    r = codealign("evaluate-checkpoints", "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "none.yaml: cannot read config file" in r.stderr


@pytest.fixture()
def closed_port():
    """A loopback port that refuses connections: bound (so no one else can take it) but not
    listening, for as long as the test runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("model, env, message", [
    ("/nonexistent/model", {}, "/nonexistent/model: no such local model directory"),
    ("Qwen/Qwen2.5-Coder-1.5B", {}, "Qwen/Qwen2.5-Coder-1.5B: the Hugging Face Hub (http://127.0.0.1:"),
    ("Qwen/Qwen2.5-Coder-1.5B", {"HF_HUB_OFFLINE": "1"}, "not in the local Hugging Face cache and HF_HUB_OFFLINE"),
    ("not a model!", {}, "neither a local model directory"),
])
def test_bad_model_references_are_one_line_and_exit_2(tmp_path, closed_port, model, env, message):
    """Before any engine starts: a missing directory, an unreachable hub (here a closed loopback
    port stands in for it), an offline cache miss, a malformed id."""
    import os

    hub = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port}", "HF_HOME": str(tmp_path / "hf")}
    r = codealign("evaluate", "--model", model, "--benchmarks", "toy", env={**os.environ, **hub, **env})
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    if "Hub (" in message:
        assert "HF_HUB_OFFLINE=1" in r.stderr


def test_model_references_resolve_to_local_directories(tmp_path, toy_model_paths, monkeypatch):
    model = tmp_path / "my-model"
    model.mkdir()
    with pytest.raises(ModelNotFound, match="not a model directory"):
        resolve_model(str(model))
    (model / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./my-model") == str(model)
    assert resolve_model("toy-base") == str(toy_model_paths["toy-base"])


def test_list_options_take_commas_and_repeats_and_convert(tmp_path):
    """Through the real command line: `--k 1,10` and `--k 1 --k 5` are lists of ints."""
    import typer
    from typer.testing import CliRunner

    from codealign.flows.options import with_config_options

    seen = []
    app = typer.Typer()

    @app.command()
    @with_config_options(CheckpointEvalConfig, on_error=lambda message: seen.append(message))
    def run(config: CheckpointEvalConfig) -> None:
        seen.append(config)

    runner = CliRunner()
    assert runner.invoke(app, ["--checkpoints", "c", "--k", "1,10", "--k", "5", "--modes", "flow"]).exit_code == 0
    assert seen[-1].ks == [1, 5, 10] and seen[-1].modes == ["flow"]
    runner.invoke(app, ["--checkpoints", "c", "--k", "one"])
    assert seen[-1].startswith("--k: Input should be a valid integer")
