"""`--model` takes a PEFT adapter directory: merged into its base (named in adapter_config.json)
once, into codealign's cache, with a record of both; the merged model is what vLLM loads."""

from __future__ import annotations

import json

import pytest

from codealign.tasks.generation.models import ADAPTER_RECORD, ModelNotFound, resolve_model


def make_adapter(base: str, out) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(out)


def test_an_adapter_directory_resolves_to_its_merged_model(tmp_path, toy_model_paths, monkeypatch):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = str(toy_model_paths["toy-instruct"])
    make_adapter(base, tmp_path / "adapter")
    monkeypatch.setenv("CODEALIGN_CACHE_DIR", str(tmp_path / "cache"))
    merged = resolve_model(str(tmp_path / "adapter"))
    assert merged.startswith(str(tmp_path / "cache" / "merged-adapters"))
    assert resolve_model(str(tmp_path / "adapter")) == merged  # built once
    record = json.loads((tmp_path / "cache" / "merged-adapters" / merged.rsplit("/", 1)[1] / ADAPTER_RECORD)
                        .read_text())
    assert record["base"] == base and len(record["adapter_sha256"]) == 64 and len(record["base_sha256"]) == 64
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(tmp_path / "adapter"))
    expected = expected.merge_and_unload().state_dict()
    weights = load_file(f"{merged}/model.safetensors")
    assert all(k in expected and (weights[k] == expected[k]).all() for k in weights)
    assert (tmp_path / "cache" / "merged-adapters").is_dir() and "tokenizer.json" in {
        p.name for p in (tmp_path / "cache" / "merged-adapters" / merged.rsplit("/", 1)[1]).iterdir()}


def test_an_adapter_without_a_base_is_named(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelNotFound, match="adapter_config.json: no base_model_name_or_path"):
        resolve_model(str(tmp_path))
    (tmp_path / "adapter_config.json").unlink()
    with pytest.raises(ModelNotFound, match=r"not a model directory \(no config.json\) nor a PEFT adapter"):
        resolve_model(str(tmp_path))


def test_push_to_hub_offline_is_an_error_before_training_starts(tmp_path):
    """Offline (or not logged in), --push-to-hub fails at once, naming the repo, not after the
    stage has trained."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "Write f.", "completion": "def f():\n    return 1\n"}) + "\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "codealign", "train", "--stage", "sft", "--pathway", "fta",
                           "--model", "toy-instruct", "--dataset", str(data), "--store", str(tmp_path / "store"),
                           "--push-to-hub", "someone/toy-sft"], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert "--push-to-hub someone/toy-sft: HF_HUB_OFFLINE is set" in done.stderr
    assert not (tmp_path / "store" / "units").exists() and time.monotonic() - started < 120
