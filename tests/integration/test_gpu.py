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
