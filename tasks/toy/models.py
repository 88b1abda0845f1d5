"""Build the two tiny local models of the toy world, offline, on a CPU, in a few minutes.

* **toy-base** stands in for a pretrained code model: a byte-level BPE tokenizer trained with
  ``tokenizers`` on the toy corpus plus Python source, and a tiny Llama trained by TRL's
  ``SFTTrainer`` on toy solutions in completion format, with fill-in-the-middle examples
  (StarCoder sentinels) and a few plain-template instruction examples, as pre-training mixes do.
* **toy-instruct** stands in for its instruction-tuned sibling: toy-base fine-tuned on
  Command-mode (chat template) instruction → fenced code pairs, and on SelfCodeAlign's three
  stages (seed → concepts → instruction → "solve and test": the function followed by asserts),
  so preference data's self-test path runs with a real model.

Both are saved in Hugging Face format (loadable by transformers and vLLM) under a directory
named by the content hash of everything that determines them, so a rebuild is skipped when
nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from codealign.tasks.files import atomic_directory, cache_dir
from codealign.tasks.generation.prompts import (
    TokenizerLike,
    chat_instruction_prompt,
    fenced,
    fim_format,
    plain_instruction_prompt,
)
from codealign.tasks.preferences.selfalign import TEMPLATE_DIR, stage_prompt
from codealign.tasks.toy.families import TOY_MODEL_TRAIN_PER_FAMILY, ToyTask, to_problem, toy_tasks

EOS = "<|endoftext|>"
FIM = fim_format("starcoder")  # the toy models speak StarCoder's fill-in-the-middle
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [EOS, FIM.prefix, FIM.suffix, FIM.middle, USER, ASSISTANT, "<|pad|>"]
# The assistant's turns are marked ({% generation %}): TRL's conversational SFT with the loss on
# them only (assistant_only_loss) needs the marks; they change nothing in the rendered text.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + '<|endoftext|>' }}{% endgeneration %}"
    "{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ToyModelConfig:
    """Everything that determines the toy models (part of the cache key)."""

    train_per_family: int = TOY_MODEL_TRAIN_PER_FAMILY
    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 256
    base_epochs: float = 2.5
    instruct_epochs: float = 1.5
    learning_rate: float = 2e-3
    batch_size: int = 32
    seed: int = 0
    # Torch's CPU kernels split reductions by thread count, so the weights depend on it: a fixed
    # count (not the machine's cores) makes every machine build the same bytes.
    threads: int = 2


def _python_corpus(limit_bytes: int = 400_000) -> list[str]:
    """Python source from the standard library, for the tokenizer's code vocabulary."""
    import json as json_module  # any stdlib package: its directory is the stdlib root

    root = Path(json_module.__file__).resolve().parent.parent
    texts, total = [], 0
    for name in sorted(["textwrap.py", "string.py", "heapq.py", "bisect.py", "fractions.py", "statistics.py",
                        "functools.py", "copy.py", "operator.py", "random.py", "calendar.py", "difflib.py"]):
        path = root / name
        if path.is_file() and total < limit_bytes:
            text = path.read_text(encoding="utf-8", errors="replace")
            texts.append(text)
            total += len(text)
    return texts


# Training examples are built by the same functions that build the evaluator's prompts
# (tasks/generation/prompts.py), so what the toy models learn is byte for byte what they are asked.


def fim_example(task: ToyTask) -> tuple[str, str]:
    problem = to_problem(task, "toy-infill")
    return FIM.build(problem.prompt, problem.suffix), problem.canonical_completion


def plain_instruction_example(task: ToyTask) -> tuple[str, str]:
    return plain_instruction_prompt(task.instruction, []), fenced(task.source)


def base_corpus(tasks: list[ToyTask], seed: int) -> tuple[list[str], list[str]]:
    """Pre-training mix as (prompt, completion) pairs: completion format for every task, FIM
    for half, plain instructions for a tenth (so the base model is weak, not hopeless, in
    Command mode).

    Prompt and completion are tokenized separately, as they are at inference: tokenizing the
    whole text would merge the prompt's final newline with the body's indentation into one
    BPE token that never occurs at a prompt boundary, and the model would learn nothing about
    how to continue a prompt that ends in a newline.  The trainer appends end-of-text."""
    rng = random.Random(seed)
    pairs = []
    for t in tasks:
        pairs.append((t.prompt, t.body))
        if rng.random() < 0.5:
            pairs.append(fim_example(t))
        if rng.random() < 0.1:
            pairs.append(plain_instruction_example(t))
    rng.shuffle(pairs)
    return [p for p, _ in pairs], [c for _, c in pairs]


def instruct_pairs(tasks: list[ToyTask], seed: int, tokenizer: TokenizerLike) -> tuple[list[str], list[str]]:
    """Command-mode instruction tuning data: chat-formatted prompt (``tokenizer``'s template),
    fenced code completion."""
    rng = random.Random(seed + 1)
    order = list(tasks)
    rng.shuffle(order)
    prompts = [chat_instruction_prompt(tokenizer, t.instruction, []) for t in order]
    completions = [fenced(t.source) for t in order]
    return prompts, completions


def self_align_pairs(tasks: list[ToyTask], seed: int, tokenizer: TokenizerLike) -> tuple[list[str], list[str]]:
    """SelfCodeAlign's three stages (tasks/preferences/selfalign.py), so the toy instruct model
    can run the self-test path end to end: every task as instruction → "solve and test" answer
    (the function + three asserts), and half each as seed source → concepts and concepts →
    instruction."""
    rng = random.Random(seed + 2)
    prompts, completions = [], []
    for t in tasks:
        first = rng.choice(("concepts", "instruction"))
        for stage, given, answer in (
            ("response", t.instruction, fenced(t.source + "\n" + "\n".join(t.asserts()[:3]))),
            (first, *((t.source, t.concepts) if first == "concepts" else (t.concepts, t.instruction))),
        ):
            prompts.append(stage_prompt(tokenizer, stage, given))
            completions.append(answer)
    return prompts, completions


def cache_key(config: ToyModelConfig) -> str:
    """Hash of the config, the code that builds the models and the library versions."""
    import tokenizers
    import torch
    import transformers
    import trl

    here = Path(__file__).resolve().parent
    h = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    sources = [here / "families.py", here / "models.py", here.parent / "generation" / "prompts.py",
               here.parent / "preferences" / "selfalign.py", *sorted(TEMPLATE_DIR.glob("*.txt"))]
    for path in sources:
        h.update(path.read_bytes())
    for mod in (torch, transformers, trl, tokenizers):
        h.update(f"{mod.__name__}={mod.__version__}".encode())
    return h.hexdigest()[:16]


def default_root() -> Path:
    return cache_dir() / "toy-models"


def train_tokenizer(texts: list[str], config: ToyModelConfig, out: Path):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Newlines are tokens of their own: a Flow-mode prompt ends with "\n", and a BPE merge of
    # "\n" with the next line's indentation would make that boundary a token sequence the model
    # never saw in training (it then just stops).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=None,
                                   pad_token="<|pad|>")
    fast.save_pretrained(out)
    return fast


def _sft(model, tokenizer, dataset, config: ToyModelConfig, epochs: float, out: Path, what: str) -> None:
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LossLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            if logs and "loss" in logs:
                _log(f"{what}: step {state.global_step}/{state.max_steps}, loss {logs['loss']:.3f}")

    args = SFTConfig(
        output_dir=str(out / "_trainer"),
        num_train_epochs=epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # a fraction: transformers 5 reads values < 1 as a ratio
        weight_decay=0.0,
        max_length=config.max_length,
        logging_steps=25,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        bf16=False,  # TRL defaults to bf16, which CPUs without bf16 units emulate slowly
        fp16=False,
        gradient_checkpointing=False,  # TRL defaults it on; on a CPU with a tiny model it only costs time
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    # Transformers prints raw log dicts ({'loss': ...}) to stdout; readable lines on stderr instead,
    # where the other libraries' output goes (the run's log, under a quiet `codealign` command).
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LossLines())
    trainer.train()
    shutil.rmtree(out / "_trainer", ignore_errors=True)


def toy_model(name: str) -> str:
    """The directory of toy model ``name`` (built on first use; a ``codealign.models`` entry point)."""
    return str(build_toy_models()[name])


def build_toy_models(root: Path | None = None, config: ToyModelConfig | None = None,
                     force: bool = False) -> dict[str, Path]:
    """Build (or reuse) toy-base and toy-instruct; returns their directories."""
    from filelock import FileLock

    config = config or ToyModelConfig()
    root = Path(root or default_root()) / cache_key(config)
    paths = {"toy-base": root / "toy-base", "toy-instruct": root / "toy-instruct"}
    root.parent.mkdir(parents=True, exist_ok=True)
    # Processes that ask at once (test workers, a sweep's Ray tasks) wait for one build.
    with FileLock(str(root) + ".lock"):
        if not force and all((p / "config.json").is_file() for p in paths.values()) and (root / "DONE").is_file():
            return paths
        started = time.monotonic()
        with atomic_directory(root) as work:
            _build(work, config, started)
    _log(f"toy models built in {time.monotonic() - started:.0f}s: {root}")
    return paths


def _build(work: Path, config: ToyModelConfig, started: float) -> None:
    """Train both models into ``work`` (DONE is written last)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)

    tasks = toy_tasks("train", config.train_per_family)
    prompts, completions = base_corpus(tasks, config.seed)
    texts = [p + c for p, c in zip(prompts, completions)]
    tokenizer = train_tokenizer(texts + _python_corpus(), config, work / "toy-base")
    tokenizer.chat_template = None

    llama = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=config.max_length * 2,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    model = LlamaForCausalLM(llama)
    _log(f"toy-base: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
         f"{len(prompts)} training examples")
    _sft(model, tokenizer, Dataset.from_dict({"prompt": prompts, "completion": completions}), config,
         config.base_epochs, work, "toy-base")
    model.save_pretrained(work / "toy-base")
    tokenizer.save_pretrained(work / "toy-base")

    tokenizer.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(work / "toy-base")
    prompts, completions = instruct_pairs(tasks, config.seed, tokenizer)
    self_prompts, self_completions = self_align_pairs(tasks, config.seed, tokenizer)
    order = list(range(len(prompts) + len(self_prompts)))
    random.Random(config.seed + 3).shuffle(order)
    pairs = [(prompts + self_prompts)[i] for i in order], [(completions + self_completions)[i] for i in order]
    prompts, completions = pairs
    _log(f"toy-instruct: {len(prompts)} instruction pairs (with {len(self_prompts)} self-align stage examples)")
    _sft(model, tokenizer, Dataset.from_dict({"prompt": prompts, "completion": completions}), config,
         config.instruct_epochs, work, "toy-instruct")
    model.save_pretrained(work / "toy-instruct")
    tokenizer.save_pretrained(work / "toy-instruct")

    (work / "DONE").write_text(json.dumps({"config": asdict(config), "seconds": time.monotonic() - started}))


def _log(message: str) -> None:
    print(f"codealign: {message}", file=sys.stderr, flush=True)
