"""Responses: n sampled answers per instruction, executed against tests, analysed.

``sample_responses`` runs in a vLLM sampler's process (it needs the engine): the seed path's
SelfCodeAlign stages first (seed → concepts → instruction, greedy), then n responses per
instruction.  ``judge_responses`` runs in the sandbox and static analysis: tests passed / total,
status, CPU time, reward-hacking flags, degenerate reasons, non-functional scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from codealign.tasks.generation.postprocess import (
    end_of_function_body,
    extract_code_block,
    truncate,
)
from codealign.tasks.generation.prompts import (
    COMPLETION_STOPS,
    Mode,
    Shot,
    dialogue_prompt,
    dialogue_stops,
    fenced,
)
from codealign.tasks.generation.sampling import SamplingSettings, generate
from codealign.tasks.preferences import nonfunctional, quality
from codealign.tasks.preferences.selfalign import (
    StageShot,
    entry_point_of,
    parse_concepts,
    parse_instruction,
    split_self_tests,
    stage_prompt,
)
from codealign.tasks.preferences.sources import Instruction
from codealign.tasks.sandbox.limits import Limits
from codealign.tasks.sandbox.tested import TestedProgram, execute_tested


@dataclass
class Response:
    """One sampled response and everything measured about it (a row of ``responses.jsonl``)."""

    instruction_id: str
    source: str
    instruction: str
    tests_origin: str
    entry_point: str
    index: int
    prompt: str
    text: str  # what the model wrote
    code: str  # the program executed (self-written tests removed)
    tests: list[str]  # the statements it is judged by
    n_tokens: int
    sum_logprob: float | None
    finish_reason: str | None
    test_setup: str = ""
    concepts: str = ""  # seed path: the concepts the instruction was written from
    # execution
    status: str = ""
    detail: str = ""
    tests_passed: int = 0
    tests_total: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    verdict_flag: str = ""  # a hack the judge caught: "not_plain_data", "ended_early"
    judged_in_process: bool = False  # its tests ran in its own process (the judge could not proxy them)
    # static analysis
    degenerate: str | None = None
    hacks: list[str] = field(default_factory=list)
    nonfunctional: dict[str, float] = field(default_factory=dict)  # static analysis, 0-10
    judge: dict[str, float | None] = field(default_factory=dict)  # LLM judge, 1-10 (when one is configured)

    @property
    def mean_logprob(self) -> float | None:
        return self.sum_logprob / self.n_tokens if self.sum_logprob is not None and self.n_tokens else None

    @property
    def passed(self) -> bool:
        return self.status == "passed" and self.tests_total > 0

    @property
    def fraction_passed(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mean_logprob": self.mean_logprob}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Response:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def _stage_settings(sampling: SamplingSettings) -> SamplingSettings:
    """SelfCodeAlign's concept and instruction stages: one greedy answer each."""
    return sampling.model_copy(update={"n": 1, "temperature": 0.0})


def write_instructions(llm: Any, tokenizer: Any, items: list[Instruction], sampling: SamplingSettings,
                       shots: Sequence[StageShot] = ()) -> tuple[list[Instruction], dict[str, str]]:
    """The seed path's first two stages: each seed's concepts, then an instruction from them.
    Returns the instructions (seed items get theirs; those the model wrote none for are left
    out) and each seed item's concepts."""
    seeds = [i for i in items if not i.instruction and i.seed]
    if not seeds:
        return items, {}
    stops = [dialogue_stops(tokenizer)] * len(seeds)
    stage = _stage_settings(sampling)
    answers = generate(llm, [stage_prompt(tokenizer, "concepts", i.seed, list(shots)) for i in seeds], stage, stops)
    concepts = {i.id: parse_concepts(a[0].text) for i, a in zip(seeds, answers)}
    answers = generate(llm, [stage_prompt(tokenizer, "instruction", concepts[i.id], list(shots)) for i in seeds],
                       stage, stops)
    written = {i.id: parse_instruction(a[0].text) for i, a in zip(seeds, answers)}
    out = [i.with_instruction(written[i.id]) if i.id in written else i for i in items]
    return [i for i in out if i.instruction], concepts


def response_prompt(tokenizer: Any, item: Instruction, mode: Mode = "command", shots: Sequence[Shot] = (),
                    stage_shots: Sequence[StageShot] = ()) -> str:
    """Given tests: the instruction as a Command-mode prompt, or in Flow mode the code prompt a
    base model completes.  Self-written tests: SelfCodeAlign's "solve and test" response stage."""
    if mode == "flow":
        return item.prompt
    if item.tests_origin == "self":
        return stage_prompt(tokenizer, "response", item.instruction, list(stage_shots))
    return dialogue_prompt(tokenizer, [(s.instruction, fenced(s.code)) for s in shots], item.instruction)


def sample_responses(llm: Any, tokenizer: Any, items: list[Instruction], sampling: SamplingSettings,
                     mode: Mode = "command", shots: Sequence[Shot] = (),
                     stage_shots: Sequence[StageShot] = ()) -> list[Response]:
    """n responses per instruction (seed items get their instruction written first).  In Flow
    mode a response is the function body completed after the code prompt (what is trained on),
    cut at the end of the function."""
    items, concepts = write_instructions(llm, tokenizer, items, sampling, stage_shots)
    prompts = [response_prompt(tokenizer, i, mode, shots, stage_shots) for i in items]
    stops = list(COMPLETION_STOPS) if mode == "flow" else dialogue_stops(tokenizer)
    outputs = generate(llm, prompts, sampling, [stops] * len(prompts))
    responses = []
    for item, prompt, gens in zip(items, prompts, outputs):
        for index, g in enumerate(gens):
            text = g.text
            if mode == "flow":
                text = end_of_function_body(truncate(g.text, stops))
                code, tests, entry_point = item.prompt + text, list(item.tests), item.entry_point
            elif item.tests_origin == "self":
                code, tests = split_self_tests(g.text)
                entry_point = entry_point_of(code)
            else:
                code = extract_code_block(g.text, item.entry_point).strip("\n") + "\n"
                tests, entry_point = list(item.tests), item.entry_point
            responses.append(Response(item.id, item.source, item.instruction, item.tests_origin, entry_point, index,
                                      prompt, text, code, tests, g.n_tokens, g.cumulative_logprob,
                                      g.finish_reason, item.test_setup, concepts.get(item.id, "")))
    return responses


def tested_program(r: Response) -> TestedProgram:
    """The sandbox job of a response: its code under its tests (after the instruction's test
    setup).  Given tests are shared by an instruction's responses and judged by the judge; self
    tests are each response's own, written by the model, so they run sandboxed, never in the
    judge."""
    key = f"{r.instruction_id}#given" if r.tests_origin == "given" else f"{r.instruction_id}#{r.index}"
    return TestedProgram(r.instruction_id, r.index, r.code, tuple(r.tests), key, r.test_setup,
                         tests_trusted=r.tests_origin == "given")


def judge_responses(responses: list[Response], limits: Limits | None = None, workers: int | None = None,
                    test_cpu_s: float = 1.0) -> list[Response]:
    """Execute every response against its tests and analyse it statically (in place).

    The analysis runs in this process while the sandbox's worker processes execute (the pool
    only waits on pipes here), so it adds little wall time to the execution."""
    programs = [tested_program(r) for r in responses]
    with ThreadPoolExecutor(1, thread_name_prefix="codealign-execute") as executor:
        execution = executor.submit(execute_tested, programs, limits, workers, test_cpu_s)
        _analyse(responses)
        verdicts = execution.result()
    for r, v in zip(responses, verdicts):
        r.status, r.detail, r.cpu_s, r.wall_s = v.status, v.detail, v.cpu_s, v.wall_s
        r.tests_passed, r.tests_total = v.tests_passed or 0, v.tests_total or 0
        r.verdict_flag, r.judged_in_process = v.flag, v.judged_in_process
        if not r.tests:  # nothing to judge by: never counts as passing
            r.status, r.detail = "no tests", "the response has no tests" if r.tests_origin == "self" else r.detail
    return responses


def _analyse(responses: list[Response]) -> None:
    """Degenerate reasons, reward-hack flags and static non-functional scores (in place), once
    per distinct (code, entry point, tests): n responses to one instruction often repeat each
    other (low temperatures, small models)."""
    keys = [(r.code, r.entry_point, tuple(r.tests)) for r in responses]
    distinct = list(dict.fromkeys(keys))
    facts = dict(zip(distinct, nonfunctional.analyze([k[0] for k in distinct], [k[1] for k in distinct])))
    hacks = {k: quality.reward_hacks(k[0], k[2]) for k in distinct}
    for r, key in zip(responses, keys):
        r.degenerate = quality.degenerate_reason(r.code if r.text.strip() else "", r.finish_reason)
        if r.tests_origin == "self" and r.tests and not any(r.entry_point and r.entry_point in t for t in r.tests):
            r.degenerate = r.degenerate or "self-written tests do not call the function"  # e.g. `assert True`
        r.hacks = list(hacks[key])
        r.nonfunctional = nonfunctional.scores(facts[key], entry_point_known=bool(r.entry_point))
