"""Sampling overhead: codealign's sampler vs raw ``vllm.LLM.generate``, same engine, same run.

Both paths sample the same prompts with the same parameters on one engine instance, in
alternating rounds (so warm-up and machine noise hit both alike); the script prints each
path's generated-token throughput and the ratio codealign / raw (target >= 0.95).

    python benchmarks/sampling_overhead.py                      # toy-base on the toy benchmark
    python benchmarks/sampling_overhead.py --model PATH --benchmark humaneval --n 10
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy-base")
    parser.add_argument("--benchmark", default="toy")
    parser.add_argument("--mode", default="flow", choices=["flow", "command"])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-model-len", type=int, default=512)
    args = parser.parse_args()

    from vllm import SamplingParams

    from codealign.tasks.evaluation.pipeline import load_tokenizer
    from codealign.tasks.generation.models import resolve_model
    from codealign.tasks.generation.prompts import PromptSpec, build_prompt
    from codealign.tasks.generation.sampling import (
        EngineSettings,
        SamplingSettings,
        generate,
        get_engine,
    )
    from codealign.tasks.problems.registry import load_benchmark

    model = resolve_model(args.model)
    tokenizer = load_tokenizer(model)
    problems = load_benchmark(args.benchmark)
    prompts = [build_prompt(p, PromptSpec(args.mode), tokenizer, model) for p in problems]
    settings = SamplingSettings(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens, seed=0)
    llm = get_engine(model, EngineSettings(max_model_len=args.max_model_len))

    def raw() -> int:
        params = [SamplingParams(n=args.n, temperature=args.temperature, top_p=settings.top_p,
                                 max_tokens=args.max_tokens, seed=i, logprobs=0) for i in range(len(prompts))]
        # (codealign derives each prompt's seed from its text; the seed value costs nothing)
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs)

    def ours() -> int:
        return sum(g.n_tokens for gens in generate(llm, prompts, settings) for g in gens)

    raw()  # warm-up
    rates: dict[str, list[float]] = {"raw vLLM": [], "codealign": []}
    for _ in range(args.rounds):
        for name, fn in (("raw vLLM", raw), ("codealign", ours)):
            start = time.perf_counter()
            tokens = fn()
            rates[name].append(tokens / (time.perf_counter() - start))
    print(f"{len(prompts)} prompts x n={args.n}, max_tokens={args.max_tokens}, {args.rounds} rounds, model {model}")
    for name, values in rates.items():
        print(f"  {name:10s} {statistics.median(values):10.1f} tokens/s (median; {[f'{v:.0f}' for v in values]})")
    ratio = statistics.median(rates["codealign"]) / statistics.median(rates["raw vLLM"])
    print(f"  ratio codealign / raw vLLM: {ratio:.3f}")


if __name__ == "__main__":  # vLLM's CPU engine spawns a process that re-imports this module
    main()
