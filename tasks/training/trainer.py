"""TRL trainers for a stage, plain Python: the Ray Train worker (flows/train.py) and the plain-TRL
baseline (benchmarks/train_overhead.py) build them here the same way.

Around TRL's SFTTrainer / DPOTrainer / BoNBoNTrainer this adds what a resumable, auditable
stage needs: each optimizer step's example ids (``examples_seen.json`` in every checkpoint,
so a resumed run can be checked for skipped or repeated examples), a checkpoint at the last
step, progress lines (step, loss, ETA), and the export of every checkpoint as a merged model
into the store with its lineage.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from codealign.tasks.artifacts.checkpoints import combined_digest, file_digests, fingerprint
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.training import tracking
from codealign.tasks.training.data import COLUMNS, MESSAGES, example_ids, read_rows
from codealign.tasks.training.stages import StageSpec

SEEN_FILE = "examples_seen.json"
INDEX = "example_index"  # a row's position in the dataset, carried through the collator to the step


def training_args(spec: StageSpec, output_dir: str) -> Any:
    """TRL's config for the stage; precision and gradient checkpointing set explicitly (TRL
    defaults both on): bf16 + checkpointing on GPU, fp32 without on CPU.  The stage's ``sft:`` /
    ``dpo:`` section sets any other field (checked against TRL's dataclass by the config)."""
    from trl import DPOConfig, SFTConfig

    c = spec.config
    common = dict(
        output_dir=output_dir, num_train_epochs=c.num_train_epochs, max_steps=c.max_steps,
        per_device_train_batch_size=c.per_device_train_batch_size,
        gradient_accumulation_steps=c.gradient_accumulation_steps,
        learning_rate=c.resolved_learning_rate, lr_scheduler_type=c.lr_scheduler_type, warmup_steps=c.warmup_steps,
        weight_decay=c.weight_decay, max_length=c.max_length, logging_steps=1, save_strategy="steps",
        save_steps=c.save_steps, save_total_limit=2, report_to=tracking.report_to(c.report_to),
        run_name=f"{c.stage} {c.pathway} {spec.key[:12]}", seed=c.seed, data_seed=c.seed,
        bf16=c.use_gpu, fp16=False, gradient_checkpointing=c.use_gpu, use_cpu=not c.use_gpu,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        ddp_find_unused_parameters=False, save_only_model=False,
    )
    if c.stage == "sft":
        if spec.data.columns == (MESSAGES,):  # the loss on the assistant turns (generation markers)
            return SFTConfig(**common, assistant_only_loss=True, **c.sft)
        return SFTConfig(**common, completion_only_loss=True, **c.sft)
    beta = spec.bonbon_beta if c.stage == "bonbon" else c.beta
    return DPOConfig(**common, beta=beta, loss_type=[c.loss_type], **c.dpo)


def lora_config(spec: StageSpec) -> Any:
    from peft import LoraConfig

    c = spec.config
    return LoraConfig(r=c.lora_r, lora_alpha=c.resolved_lora_alpha, lora_dropout=c.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def load_model(path: str, use_gpu: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if use_gpu else torch.float32)


def train_dataset(spec: StageSpec) -> tuple[Any, list[str]]:
    """The stage's rows as a ``datasets.Dataset`` of TRL's columns plus each row's index, and
    the instruction id of each index."""
    from datasets import Dataset

    rows = read_rows(spec.data.uri, spec.data.sha256)
    columns = spec.data.columns or COLUMNS[spec.config.stage]
    data = Dataset.from_list([{INDEX: i, **{c: r[c] for c in columns}} for i, r in enumerate(rows)])
    return data, example_ids(rows)


class _IndexedCollator:
    """TRL's collator, with the rows' indices passed along as one more tensor."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.inner([{k: v for k, v in e.items() if k != INDEX} for e in examples])
        batch[INDEX] = torch.tensor([e[INDEX] for e in examples])
        return batch


def _with_example_log(base: type) -> type:
    """``base`` (a TRL trainer class) recording the example ids of every step it trains and
    writing the running list into each checkpoint (gathered from every worker)."""
    import torch.distributed as dist

    class ExampleLoggingTrainer(base):  # type: ignore[misc, valid-type]
        seen_before: list[str] = []
        ids: list[str] = []

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            indices = inputs.pop(INDEX).tolist()
            self._seen_now = [*getattr(self, "_seen_now", []), *(self.ids[i] for i in indices)]
            return super().training_step(model, inputs, *args, **kwargs)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            mine = getattr(self, "_seen_now", [])
            parts = [mine]
            if dist.is_available() and dist.is_initialized():
                parts = [[] for _ in range(dist.get_world_size())]
                dist.all_gather_object(parts, mine)
            if self.args.process_index == 0:
                folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
                seen = [*self.seen_before, *(i for part in parts for i in part)]
                with open(os.path.join(folder, SEEN_FILE), "w") as f:
                    json.dump({"examples": seen, "dataset_rows": len(self.ids)}, f)

    ExampleLoggingTrainer.__name__ = f"ExampleLogging{base.__name__}"
    return ExampleLoggingTrainer


def _callbacks(spec: StageSpec, store: ArtifactStore | None, start_path: str, producer: dict[str, Any],
               progress: Callable[[str], None], ids: Any) -> list[Any]:
    from transformers import TrainerCallback

    class SaveAtEnd(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= state.max_steps:
                control.should_save = True

    class Progress(TrainerCallback):
        started = time.monotonic()
        first_step: int | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs and "train_runtime" in logs:  # the end, from every worker: its time and peak memory
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                progress(f"{spec.config.stage} done on worker {args.process_index}: {logs['train_runtime']:.2f}s "
                         f"training, {logs['train_samples_per_second']:.2f} examples/s, peak RSS {peak:.0f} MiB")
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            self.first_step = self.first_step if self.first_step is not None else state.global_step - 1
            done = state.global_step - self.first_step
            eta = (time.monotonic() - self.started) / max(1, done) * (state.max_steps - state.global_step)
            extra = "".join(f" {k.split('/')[-1]} {logs[k]:.3f}" for k in ("rewards/margins", "rewards/accuracies")
                            if k in logs)
            progress(f"{spec.config.stage} step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f}"
                     f"{extra} ETA {eta:.0f}s")

    class Export(TrainerCallback):
        """Every checkpoint, merged (LoRA) into a full model vLLM loads, into the store."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if store is None or not state.is_world_process_zero:
                return
            key = spec.checkpoint_key(state.global_step)
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            adapter_key = spec.adapter_key(state.global_step)
            if spec.config.adapter == "lora" and not store.exists(adapter_key):
                with tempfile.TemporaryDirectory(prefix="codealign-adapter-") as tmp:
                    export_adapter(folder, spec.config.model, tmp)
                    store.put_directory(adapter_key, tmp, combined_digest(file_digests(tmp)),
                                        spec.checkpoint_meta(state.global_step, producer, ids.ids, kind="adapter"))
            if store.exists(key):  # made before a kill, by the same deterministic steps
                return
            with tempfile.TemporaryDirectory(prefix="codealign-export-") as tmp:
                export_model(folder, start_path, spec.config.adapter, kwargs["processing_class"], tmp)
                store.put_directory(key, tmp, fingerprint(tmp).sha256,
                                    spec.checkpoint_meta(state.global_step, producer, ids.ids))
            progress(f"{spec.config.stage} checkpoint-{state.global_step} -> {store.uri(key)}")

    return [ids, SaveAtEnd(), Progress(), Export()]


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_adapter(checkpoint_dir: str, base: str, out_dir: str) -> None:
    """The checkpoint's LoRA adapter alone, as PEFT saved it, its ``base_model_name_or_path``
    naming the stage's starting model as the user gave it (a hub id, a toy model, a directory),
    not this worker's copy of it."""
    for name in ADAPTER_FILES:
        shutil.copyfile(os.path.join(checkpoint_dir, name), os.path.join(out_dir, name))
    config_path = os.path.join(out_dir, "adapter_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["base_model_name_or_path"] = base
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def export_model(checkpoint_dir: str, start_path: str, adapter: str, tokenizer: Any, out_dir: str) -> None:
    """A full Hugging Face model in ``out_dir``: LoRA adapters merged into the starting model's
    weights, or the fully fine-tuned weights; with the tokenizer.  No optimizer state."""
    from transformers import AutoModelForCausalLM

    if adapter == "lora":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(start_path, dtype="auto")
        model = PeftModel.from_pretrained(base, checkpoint_dir).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype="auto")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def truncated_rows(dataset: Any, max_length: int, eos_token_id: int | None) -> int:
    """Rows that TRL cuts to ``max_length`` keeping their start (``truncation_mode="keep_start"``),
    counted on TRL's own tokenized rows: preference rows before the collator cuts them (prompt
    plus the longer of chosen and rejected), SFT rows after their preparation cut them (full
    length, and not ending with EOS)."""
    columns = set(dataset.column_names)
    if {"prompt_ids", "chosen_ids", "rejected_ids"} <= columns:
        return sum(len(p) + max(len(c), len(r)) > max_length
                   for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]))
    return sum(len(ids) >= max_length and ids[-1] != eos_token_id for ids in dataset["input_ids"])


def _log_once(values: dict[str, Any]) -> Any:
    """A callback that puts ``values`` into the trainer's log history when training starts, so
    they reach Ray Train's reported metrics (which merge the whole history)."""
    from transformers import TrainerCallback

    class LogOnce(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            state.log_history.append(dict(values))

    return LogOnce()


def build_trainer(spec: StageSpec, start_path: str, output_dir: str, store: ArtifactStore | None,
                  producer: dict[str, Any], progress: Callable[[str], None] = print) -> Any:
    """The stage's TRL trainer on this process's share of the work (``store=None``: no export)."""
    from transformers import AutoTokenizer, PrinterCallback
    from trl import DPOTrainer, SFTTrainer

    from codealign.tasks.training.bonbon import BoNBoNTrainer

    c = spec.config
    args = training_args(spec, output_dir)
    data, ids = train_dataset(spec)
    tokenizer = AutoTokenizer.from_pretrained(start_path)
    model = load_model(start_path, c.use_gpu)
    peft = lora_config(spec) if c.adapter == "lora" else None
    tracker_ids = tracking.ids_callback()
    callbacks = _callbacks(spec, store, start_path, producer, progress, tracker_ids)
    common: dict[str, Any] = dict(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                  peft_config=peft, callbacks=callbacks)
    if c.stage == "sft":
        trainer = _with_example_log(SFTTrainer)(**common)
    else:
        ref = None if peft else load_model(start_path, c.use_gpu)  # full: a frozen copy of the start
        if c.stage == "dpo":
            trainer = _with_example_log(DPOTrainer)(ref_model=ref, **common)
        else:
            trainer = _with_example_log(BoNBoNTrainer)(ref_model=ref, bonbon_alpha=c.bonbon_alpha,
                                                       bonbon_beta=spec.bonbon_beta, **common)
    trainer.ids = ids
    trainer.tracker_ids, tracker_ids.trainer = tracker_ids, trainer
    trainer.remove_callback(PrinterCallback)  # raw log dicts; Progress prints readable lines
    truncated = truncated_rows(trainer.train_dataset, c.max_length, tokenizer.eos_token_id)
    if truncated:
        progress(f"{c.stage}: {truncated} of {len(trainer.train_dataset)} rows are longer than max_length "
                 f"{c.max_length}; TRL keeps their start, so their completion loses its end (EOS included) and "
                 "teaches the model not to stop: raise --max-length")
    trainer.add_callback(_log_once({"truncated_rows": truncated}))  # into the stage record's metrics
    trainer.data_collator = _IndexedCollator(trainer.data_collator)
    return trainer


def train(trainer: Any, resume_from: str | None = None) -> Any:
    """Train, continuing from ``resume_from`` (a Hugging Face checkpoint directory) if given:
    optimizer, scheduler, RNG and data position come back with it, and the examples it had seen."""
    if resume_from and os.path.exists(os.path.join(resume_from, SEEN_FILE)):
        with open(os.path.join(resume_from, SEEN_FILE)) as f:
            trainer.seen_before = json.load(f)["examples"]
    return trainer.train(resume_from_checkpoint=resume_from)
