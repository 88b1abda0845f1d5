"""A trained stage, published: its model card and, on request, an upload to the Hugging Face Hub.

Why: a stage's checkpoints live in the store, named by content hashes; a person who shares the
result needs a model card (what it was trained from, on what, how, and how it scored) and the
artifact others load: the LoRA adapter (MBs) where there is one, else the merged model.  The card
is a new artifact of its own (``units/<stage>/README.md``): stored artifacts are never modified.
``push_to_hub`` is checked before training starts (offline, not logged in: an error then, not
after hours of training).
"""

from __future__ import annotations

import json
import os
from typing import Any

from codealign.tasks.errors import CodealignError
from codealign.tasks.generation.hub import hub_offline, hub_timeout
from codealign.tasks.training.stages import StageRecord, StageSpec

MODEL_CARD = "README.md"


class PushError(CodealignError, ValueError):
    """The hub cannot take the upload; the message says why and what to do."""


def model_card(spec: StageSpec, record: StageRecord, published: str) -> str:
    """The stage's model card: YAML metadata the hub reads, then base, data, settings, scores."""
    c = spec.config
    lora = c.adapter == "lora"
    front = {"base_model": c.model, "library_name": "peft" if lora else "transformers",
             "tags": ["codealign", "trl", c.stage, c.pathway], "pipeline_tag": "text-generation"}
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---", "",
             f"# {c.stage.upper()} ({c.pathway.upper()}) from {c.model}", "",
             f"Trained by [codealign](https://github.com/) with TRL: stage `{spec.key}`, "
             f"{'a LoRA adapter' if lora else 'a fully fine-tuned model'} ({published}).", "",
             "## Base model", "", f"- `{c.model}` (sha256 `{spec.model.sha256}`)", "",
             "## Data", "", f"- `{spec.data.uri}` (identity `{spec.data.sha256}`), {spec.data.rows} rows"
             + (f", best-of-{spec.data.n}" if spec.data.n else "")
             + (", conversational" if spec.data.conversational else ""), "",
             "## Settings", "", "```json", json.dumps(c.result_settings(), indent=1, sort_keys=True), "```", "",
             "## Training", "", f"- checkpoints: {len(record.checkpoints)}, final `{record.final_checkpoint}`",
             f"- examples seen: {record.metrics.get('examples_seen')}, last loss: {record.metrics.get('loss')}"]
    if record.degradation:
        d = record.degradation
        lines += ["", "## Scores", "",
                  f"- held-out pass@1 ({', '.join(d['benchmarks'])}, {d['mode']} mode, greedy): "
                  f"starting model {d['start_score']:.3f}, this model {d['sft_score']:.3f}"
                  + (" (degraded)" if d["degraded"] else "")]
    return "\n".join(lines) + "\n"


def check_push_target(repo: str) -> None:
    """Before training: the hub is reachable within seconds and this login may write ``repo``."""
    from huggingface_hub import HfApi, constants

    if hub_offline():
        raise PushError(f"--push-to-hub {repo}: HF_HUB_OFFLINE is set; push later, or drop --push-to-hub")
    try:
        with hub_timeout():
            user = HfApi().whoami()
    except Exception as exc:  # noqa: BLE001 - not logged in, unreachable: one line each
        raise PushError(f"--push-to-hub {repo}: the Hugging Face Hub ({constants.ENDPOINT}) cannot confirm a "
                        f"login ({type(exc).__name__}); log in with `hf auth login` or set HF_TOKEN, "
                        "or drop --push-to-hub") from None
    owner = repo.split("/", 1)[0] if "/" in repo else user.get("name")
    allowed = {user.get("name"), *(org.get("name") for org in user.get("orgs", []))}
    if owner not in allowed:
        raise PushError(f"--push-to-hub {repo}: this login ({user.get('name')}) cannot write to {owner!r}")


def push(repo: str, folder_uri: str, card: str) -> str:
    """Upload the folder (a store URI) and the card to ``repo`` (created if need be); the
    commit's URL."""
    import shutil
    import tempfile

    import fsspec
    from huggingface_hub import HfApi

    from codealign.tasks.artifacts.store import local_path, storage_options

    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="codealign-push-") as tmp:
        if (here := local_path(folder_uri)) is not None:
            shutil.copytree(here, tmp, dirs_exist_ok=True)
        else:  # in object storage: fetched for the upload
            fs, path = fsspec.core.url_to_fs(folder_uri, **storage_options(folder_uri))
            fs.get(path.rstrip("/") + "/", tmp + "/", recursive=True)
        with open(os.path.join(tmp, MODEL_CARD), "w", encoding="utf-8") as f:
            f.write(card)
        api.create_repo(repo, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=tmp, commit_message="codealign: trained stage")
    return str(getattr(commit, "commit_url", commit))


def published_folder(store: Any, spec: StageSpec, record: StageRecord) -> str:
    """What a share of the stage is: the final adapter (LoRA), else the final merged model."""
    step = record.checkpoints[-1]["step"]
    adapter = spec.adapter_key(step)
    if spec.config.adapter == "lora" and store.exists(adapter):  # (stages trained before adapters were kept: none)
        return store.uri(adapter)
    return record.final_checkpoint
