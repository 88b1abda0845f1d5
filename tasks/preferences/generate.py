"""``generate-preferences`` as resumable shards and plain-Python stages.

A shard is a slice of the source's instructions for one model; its key hashes the model's
content, the source's content, its instruction ids and every setting that changes responses,
so a rerun (``codealign resume``, a Prefect "Retry", a new run over the same inputs) redoes
only shards whose ``responses.jsonl`` is missing.  Stages, each writing one store artifact
with lineage:

    sample-shard   (on a vLLM sampler)   units/<key>/samples.jsonl    ← model + source
    judge-shard    (sandbox, analysis)   units/<key>/responses.jsonl  ← samples
    build-datasets (whole run)           runs/<id>/datasets/*.parquet, stats.json, report.{md,png}

The flow (flows/generate_preferences.py) composes them with Prefect on Ray.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from codealign.tasks.artifacts import layout, runs
from codealign.tasks.artifacts.checkpoint_cache import local_copy
from codealign.tasks.artifacts.checkpoints import Checkpoint
from codealign.tasks.artifacts.lineage import ArtifactMeta, InputRef
from codealign.tasks.artifacts.placement import RunPlacement
from codealign.tasks.artifacts.runs import Manifest, RunItem
from codealign.tasks.artifacts.store import ArtifactRef, ArtifactStore
from codealign.tasks.files import InputError, file_sha256
from codealign.tasks.generation.prompts import Mode, load_shots
from codealign.tasks.generation.sampling import EngineSettings, SamplingSettings
from codealign.tasks.preferences.pairs import (
    KINDS,
    Kind,
    PairSettings,
    Provenance,
    build_datasets,
    dataset_names,
)
from codealign.tasks.preferences.sources import (
    Instruction,
    Source,
    check_mode,
    load_source,
    source_names,
)
from codealign.tasks.sandbox.limits import Limits


def _selfcodealign_sampling() -> SamplingSettings:
    return SamplingSettings(n=10, temperature=0.7, top_p=0.95, max_tokens=512)


class GenerateConfig(RunPlacement):
    """What `codealign generate` runs (also the Prefect UI form of the flow)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model: local directory, toy-base / toy-instruct, or a Hugging Face id")
    source: str = Field("toy-train", description="instructions: a named source (toy-train, toy-seeds, mbpp-train, "
                                                 "code-alpaca, new-codealpaca) or a JSONL file")
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), description="datasets to build")
    mode: Mode = Field("command", description="command: instruction → code (chat or plain template); flow: a base "
                       "model completes each instruction's code prompt (signature + docstring)")
    sampling: SamplingSettings = Field(default_factory=_selfcodealign_sampling,
                                       description="n = 10, T = 0.7, top-p 0.95 as in SelfCodeAlign")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    pairs: PairSettings = Field(default_factory=PairSettings)
    limit: int | None = Field(None, ge=1, description="first N instructions of the source (quick runs)")
    shard_size: int = Field(64, ge=1, description="instructions per shard (the unit of resumption)")
    shots: int = Field(0, ge=0, description="Command-mode demonstrations for instructions with given tests")
    shots_file: str | None = Field(None, description="JSONL of {instruction, code}")
    self_align_shots: str | None = Field(None, description="JSONL of {stage, given, answer} for SelfCodeAlign's stages")
    judge_model: str | None = Field(None, description="optional LLM judge for the non-functional dimensions (1-10 "
                                    "rubrics in tasks/preferences/templates/judge); default: static analysis only")
    test_cpu_s: float = Field(1.0, gt=0, description="CPU seconds each test statement may take")
    limits: Limits = Field(default_factory=Limits)
    workers: int | None = Field(None, ge=1, description="sandbox workers per shard (default: the node's cores)")
    save_to_disk: bool = Field(False, description="also write each dataset as a datasets save_to_disk directory "
                                                  "(runs/<id>/datasets/<name>/), beside its parquet file")

    @field_validator("source", "shots_file", "self_align_shots")
    @classmethod
    def _absolute_files(cls, value: str | None) -> str | None:
        """Files are read by Ray workers in other directories: make them absolute."""
        if value is None or value in source_names() or "://" in value:
            return value
        return str(Path(value).expanduser().resolve())

    @field_validator("kinds")
    @classmethod
    def _unique_kinds(cls, value: list[Kind]) -> list[Kind]:
        if not value:
            raise ValueError("at least one kind")
        return list(dict.fromkeys(value))

    def shard_settings(self) -> dict[str, Any]:
        """Everything that changes a shard's responses (part of its key)."""
        shot_files = {name: file_sha256(path) if path else None
                      for name, path in (("shots_file", self.shots_file), ("self_align_shots", self.self_align_shots))}
        return {"sampling": self.sampling.model_dump(), "mode": self.mode, "shots": self.shots, **shot_files,
                "test_cpu_s": self.test_cpu_s, "limits": self.limits.model_dump()}


@dataclass(frozen=True)
class SourceRef:
    """A source as shards carry it: where it is and what it hashed to when the run began."""

    name: str
    ref: str
    uri: str
    sha256: str


@dataclass(frozen=True)
class Shard:
    key: str
    index: int
    instruction_ids: tuple[str, ...]

    def artifact(self, name: str) -> str:
        return layout.unit_artifact(self.key, name)

    def as_item(self) -> RunItem:
        return RunItem(self.key, f"shard {self.index} ({len(self.instruction_ids)} instructions)",
                       self.artifact("responses.jsonl"), {"index": self.index, "ids": list(self.instruction_ids)})

    @classmethod
    def from_item(cls, item: RunItem) -> Shard:
        return cls(item.key, item.data["index"], tuple(item.data["ids"]))


def load_checked_source(config: GenerateConfig) -> Source:
    """The config's source, checked against its mode (bad input fails before anything starts)."""
    source = load_source(config.source, config.limit)
    check_mode(source, config.mode)
    return source


def make_shards(config: GenerateConfig, model: Checkpoint, source: Source, judge: Checkpoint | None = None
                ) -> list[Shard]:
    settings = json.dumps({**config.shard_settings(), "judge": judge.sha256 if judge else None}, sort_keys=True)
    ids = [i.id for i in source.instructions]
    shards = []
    for n, start in enumerate(range(0, len(ids), config.shard_size)):
        chunk = tuple(ids[start:start + config.shard_size])
        ident = json.dumps([model.sha256, source.sha256, chunk, settings])
        shards.append(Shard(hashlib.sha256(ident.encode()).hexdigest()[:24], n, chunk))
    return shards


def source_ref(config: GenerateConfig, source: Source) -> SourceRef:
    return SourceRef(source.name, config.source, source.uri, source.sha256)


@dataclass(frozen=True)
class RunInputs:
    """What a run was started with: its config, the model (and judge) by content, the source."""

    config: GenerateConfig
    model: Checkpoint
    source: SourceRef
    shards: list[Shard]
    judge: Checkpoint | None = None


def write_manifest(store: ArtifactStore, run_id: str, inputs: RunInputs, producer: dict[str, Any]) -> ArtifactRef:
    data = {**inputs.config.model_dump(mode="json"), "_model": asdict(inputs.model), "_source": asdict(inputs.source),
            "_judge": asdict(inputs.judge) if inputs.judge else None}
    manifest = Manifest(run_id, producer["flow"], data, [s.as_item() for s in inputs.shards])
    refs = [InputRef(inputs.model.uri, inputs.model.sha256), InputRef(inputs.source.uri, inputs.source.sha256)]
    if inputs.judge:
        refs.append(InputRef(inputs.judge.uri, inputs.judge.sha256))
    return runs.write_manifest(store, manifest, tuple(refs), producer)


def run_inputs(store: ArtifactStore, run_id: str, flow: str | None = None) -> RunInputs:
    """What run ``run_id`` was started with (its config validated again); with ``flow``, the run
    must have been made by that flow."""
    manifest = runs.read_manifest(store, run_id)
    if flow is not None and manifest.flow != flow:
        raise ValueError(f"run {run_id} is a {manifest.flow} run, not {flow}")
    data = dict(manifest.config)
    model, source, judge = data.pop("_model"), data.pop("_source"), data.pop("_judge", None)
    return RunInputs(GenerateConfig.model_validate(data), Checkpoint(**model), SourceRef(**source),
                     [Shard.from_item(i) for i in manifest.items], Checkpoint(**judge) if judge else None)


def is_complete(store: ArtifactStore, shard: Shard) -> bool:
    return runs.is_complete(store, shard.as_item())


def shard_instructions(source: SourceRef, shard: Shard, limit: int | None) -> list[Instruction]:
    """The shard's instructions, read again from the source (which must not have changed)."""
    loaded = load_source(source.ref, limit)
    if loaded.sha256 != source.sha256:
        raise InputError(f"{source.uri}: changed since the run began (sha256 {loaded.sha256[:12]}, "
                         f"was {source.sha256[:12]}); start a new run")
    wanted = set(shard.instruction_ids)
    return [i for i in loaded.instructions if i.id in wanted]


def sample_shard(shard: Shard, config: GenerateConfig, model: Checkpoint, source: SourceRef,
                 judge: Checkpoint | None, producer: dict[str, Any]) -> ArtifactRef:
    """Stage 1 (in a sampler's process): n responses per instruction of the shard, rated by the
    judge model when there is one."""
    from codealign.tasks.evaluation.pipeline import load_tokenizer
    from codealign.tasks.generation.sampling import get_engine, release_engines
    from codealign.tasks.preferences.responses import sample_responses
    from codealign.tasks.preferences.selfalign import load_stage_shots

    store = ArtifactStore(config.store)
    if ref := store.ref_if_exists(shard.artifact("samples.jsonl")):
        return ref
    items = shard_instructions(source, shard, config.limit)
    path = local_copy(model)
    judge_path = local_copy(judge) if judge else None
    release_engines(keep=(path, judge_path) if judge_path else path)
    shots = load_shots(config.shots_file)[: config.shots] if config.shots_file else []
    stage_shots = load_stage_shots(config.self_align_shots) if config.self_align_shots else []
    started = time.monotonic()
    responses = sample_responses(get_engine(path, config.engine), load_tokenizer(path), items, config.sampling,
                                 config.mode, shots, stage_shots)
    inputs = [InputRef(model.uri, model.sha256), InputRef(source.uri, source.sha256)]
    if judge_path and judge:
        from codealign.tasks.preferences.judge import rate_responses

        rate_responses(get_engine(judge_path, config.engine), load_tokenizer(judge_path), responses,
                       config.pairs.dimensions, config.sampling.seed)
        inputs.append(InputRef(judge.uri, judge.sha256))
    meta = ArtifactMeta("preference-samples", producer, tuple(inputs),
                        {"shard": shard.key, "index": shard.index, "model": model.uri, **config.shard_settings(),
                         "seconds": round(time.monotonic() - started, 3)})
    return store.put_jsonl(shard.artifact("samples.jsonl"), [r.to_json() for r in responses], meta)


def judge_shard(shard: Shard, config: GenerateConfig, samples: ArtifactRef, producer: dict[str, Any]) -> ArtifactRef:
    """Stage 2: execute every response against its tests, analyse it; completes the shard."""
    from codealign.tasks.preferences.responses import Response, judge_responses

    store = ArtifactStore(config.store)
    if ref := store.ref_if_exists(shard.artifact("responses.jsonl")):
        return ref
    responses = [Response.from_json(row) for row in store.get_jsonl(samples.uri)]
    started = time.monotonic()
    judge_responses(responses, config.limits, config.workers, config.test_cpu_s)
    seconds = time.monotonic() - started
    meta = ArtifactMeta("preference-responses", producer, (InputRef(samples.uri, samples.sha256),),
                        {"shard": shard.key, "index": shard.index, "responses": len(responses),
                         "seconds": round(seconds, 3)})
    return store.put_jsonl(shard.artifact("responses.jsonl"), [r.to_json() for r in responses], meta)


def build_run_datasets(store: ArtifactStore, run_id: str, config: GenerateConfig, model: Checkpoint,
                       source: SourceRef, shards: list[Shard], producer: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage 3: gates, datasets (parquet), stats and report for the whole run; returns the
    results rows (one per dataset)."""
    from codealign.tasks.preferences import report
    from codealign.tasks.preferences.quality import ContaminationIndex
    from codealign.tasks.preferences.responses import Response

    responses, inputs = [], []
    for shard in shards:
        key = shard.artifact("responses.jsonl")
        meta = store.meta(key)
        responses += [Response.from_json(row) for row in store.get_jsonl(key)]
        inputs.append(InputRef(meta.uri, meta.sha256))
    ids = [i for s in shards for i in s.instruction_ids]
    provenance = Provenance(source.name, source.sha256, model.uri, model.sha256,
                            config.sampling.model_dump_json(), config.sampling.seed)
    index = ContaminationIndex(config.pairs.ngram, config.pairs.decontaminate_against) \
        if config.pairs.decontaminate_against else None
    datasets, stats = build_datasets(responses, ids, config.kinds, config.pairs, provenance, index)
    params = {"run_id": run_id, "model": model.uri, "source": source.uri, "kinds": list(config.kinds),
              "pairs": config.pairs.model_dump()}
    rows = []
    for name in dataset_names(config.kinds, config.pairs.dimensions):
        ref = store.put(layout.run_dataset(run_id, f"{name}.parquet"), to_parquet(datasets[name]),
                        ArtifactMeta("preference-dataset", producer, tuple(inputs), {**params, "dataset": name}))
        rows.append({"dataset": name, "rows": len(datasets[name]), "uri": ref.uri, "sha256": ref.sha256,
                     "dropped": stats.datasets[name]["dropped"]})
        if config.save_to_disk:  # what `datasets.load_from_disk` and TRL scripts open as they are
            rows[-1]["disk_uri"] = put_disk_dataset(store, layout.run_dataset(run_id, name), datasets[name],
                                                    ArtifactMeta("preference-dataset", producer, tuple(inputs),
                                                                 {**params, "dataset": name, "format": "save_to_disk"}))
    stats_json = stats.to_json()
    meta = ArtifactMeta("preference-stats", producer, tuple(inputs), params)
    store.put_json(layout.run_dataset(run_id, "stats.json"), stats_json, meta)
    header = {"model": f"{model.uri} (sha256 {model.sha256[:12]})", "source": f"{source.uri} (sha256 "
              f"{source.sha256[:12]})", "sampling": config.sampling.model_dump_json()}
    store.put(layout.run_dataset(run_id, "report.md"), report.markdown(stats_json, run_id, header).encode(), meta)
    store.put(layout.run_dataset(run_id, "report.png"), report.png(stats_json, run_id), meta)
    return rows


def put_disk_dataset(store: ArtifactStore, key: str, rows: list[dict[str, Any]], meta: ArtifactMeta) -> str:
    """The rows as a ``datasets`` ``save_to_disk`` directory in the store; its URI."""
    import tempfile

    from datasets import Dataset

    from codealign.tasks.artifacts.checkpoints import combined_digest, file_digests

    with tempfile.TemporaryDirectory(prefix="codealign-dataset-") as tmp:
        (Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": []})).save_to_disk(tmp)
        return store.put_directory(key, tmp, combined_digest(file_digests(tmp)), meta).uri


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    """A Hugging Face ``datasets`` parquet file of the rows."""
    from datasets import Dataset

    buffer = io.BytesIO()
    (Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": []})).to_parquet(buffer)
    return buffer.getvalue()


def read_dataset(store: ArtifactStore, run_id: str, name: str) -> list[dict[str, Any]]:
    """A dataset of a run as rows."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(store.get(layout.run_dataset(run_id, f"{name}.parquet")))).to_pylist()
