"""The GPU path, where there is a GPU (``@pytest.mark.gpu``: skipped, saying why, elsewhere):
vLLM samples on CUDA, and a training step runs in bf16 on CUDA as TRL's trainers do there."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_vllm_samples_the_toy_model_on_the_gpu_with_seeds(toy_model_paths):
    from codealign.tasks.evaluation.pipeline import load_tokenizer
    from codealign.tasks.generation.prompts import PromptSpec, build_prompt
    from codealign.tasks.generation.sampling import EngineSettings, SamplingSettings, generate, get_engine
    from codealign.tasks.problems.registry import load_benchmark

    path = str(toy_model_paths["toy-base"])
    llm = get_engine(path, EngineSettings(max_model_len=512))
    tokenizer = load_tokenizer(path)
    prompts = [build_prompt(p, PromptSpec("flow"), tokenizer) for p in load_benchmark("toy")[:4]]
    settings = SamplingSettings(n=2, temperature=0.8, max_tokens=32, seed=7)
    first, again = generate(llm, prompts, settings), generate(llm, prompts, settings)
    assert [[g.text for g in row] for row in first] == [[g.text for g in row] for row in again]
    assert all(g.n_tokens > 0 for row in first for g in row)


def test_a_training_step_runs_in_bf16_on_the_gpu(toy_model_paths):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(toy_model_paths["toy-instruct"]), torch_dtype=torch.bfloat16)
    model = model.to("cuda")
    ids = torch.randint(0, model.config.vocab_size, (2, 16), device="cuda")
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert loss.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.device.type == "cuda" for p in model.parameters() if p.requires_grad)


def test_the_gpu_check_passes_on_the_gpu():
    """`make gpu-check`'s script on CUDA: LoRA, bf16 and gradient checkpointing steps of SFT, DPO
    and BoNBoN, the BoNBoN loss against the CPU's, greedy generation against the CPU's."""
    from codealign.tasks.training import gpu_check

    assert gpu_check.main(["--device", "cuda", "--steps", "4"]) == 0


def test_a_stage_trains_on_one_gpu_worker_over_nccl_and_its_checkpoint_is_evaluated(tmp_path, toy_model_paths):
    """The full stack (`make gpu-check-full`): Ray Train with one GPU worker (NCCL, bf16), then
    evaluate-checkpoints samples its final checkpoint with vLLM on the GPU."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from codealign.flows import registry
    from codealign.tasks.artifacts import runs
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.evaluation.units import CheckpointEvalConfig
    from codealign.tasks.training.config import StageConfig
    from codealign.tasks.training.gpu_check import toy_rows

    model = str(toy_model_paths["toy-instruct"])
    data = tmp_path / "sft.parquet"
    Dataset.from_list(toy_rows("sft", AutoTokenizer.from_pretrained(model), 32)).to_parquet(str(data))
    store = str(tmp_path / "store")
    stage = StageConfig(stage="sft", pathway="fta", model=model, dataset=str(data), store=store, use_gpu=True,
                        workers=1, per_device_train_batch_size=4, num_train_epochs=1, save_steps=4, warmup_steps=0,
                        max_length=384)
    registry.run("train", stage, "gpu-sft")
    [row] = runs.read_results(ArtifactStore(store), "gpu-sft")
    checkpoint = row["final_checkpoint"]
    evaluated = registry.run("evaluate-checkpoints", CheckpointEvalConfig(
        checkpoints=[checkpoint], store=store, benchmarks=["toy"], modes=["command"],
        sampling={"n": 2, "temperature": 0.8, "max_tokens": 64}, ks=[1], limit=8), "gpu-eval")
    assert evaluated["complete"] == 1
    assert runs.summarize(ArtifactStore(store), "gpu-eval").state == "completed"
