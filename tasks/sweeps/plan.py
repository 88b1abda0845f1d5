"""A sweep config expanded into the work it names: data jobs, training stages, evaluations.

Everything here is plain data, computed before anything runs, so a preset can be checked (it
loads, it expands to the grid it should) without a model, a GPU or a cluster.  The flow
(flows/alignment_sweep.py) runs the plan; each piece is keyed by content in the store, so a
re-run with the same inputs reuses every artifact and a changed input redoes only what
depends on it.  Sub-run ids are the sweep's run id plus the piece's label, so a retried sweep
resumes each of its sub-runs.

    data job   (pair, pathway, seed)                    generate-preferences: sft/dpo/bon/... datasets
    sft        (pair, pathway, seed, rank)              from the starting model; shared by objectives
    dpo/bonbon (pair, pathway, seed, rank, objective)   from the SFT model (or the start without SFT)
    evaluation the starting models and every stage's checkpoints × benchmarks × modes
"""

from __future__ import annotations

from dataclasses import dataclass

from codealign.tasks.generation.prompts import Mode
from codealign.tasks.preferences.generate import GenerateConfig
from codealign.tasks.sweeps.config import SweepConfig
from codealign.tasks.sweeps.results import TrainedStage
from codealign.tasks.training.config import Pathway, Stage, StageConfig

# The dataset each technique trains on, per objective.
FUNCTIONAL_DATA = {"sft": "sft", "dpo": "dpo", "bonbon": "bon"}


def data_mode(pathway: Pathway) -> Mode:
    """PTA samples its data in Flow mode (a pretrained model completes code), FTA in Command mode."""
    return "flow" if pathway == "pta" else "command"


@dataclass(frozen=True)
class DataJob:
    pair: str
    pathway: Pathway
    seed: int
    model: str

    @property
    def label(self) -> str:
        return f"{self.pair}-{self.pathway}-s{self.seed}"


@dataclass(frozen=True)
class PlannedStage:
    """One training stage of the grid; ``after`` is the label of the stage it starts from
    (None: the pathway's starting model)."""

    label: str
    technique: Stage
    pair: str
    pathway: Pathway
    objective: str  # "functional" for SFT, which every objective of a branch shares
    seed: int
    lora_r: int
    data: DataJob
    dataset: str  # dataset name inside the data job's run (sft, dpo, bon, nonfunctional-<dim>)
    after: str | None


@dataclass(frozen=True)
class SweepPlan:
    data_jobs: list[DataJob]
    stages: list[PlannedStage]

    def stage(self, label: str) -> PlannedStage:
        return next(s for s in self.stages if s.label == label)

    def dependents(self, label: str) -> list[PlannedStage]:
        return [s for s in self.stages if s.after == label]


def dataset_for(technique: Stage, objective: str) -> str:
    return FUNCTIONAL_DATA[technique] if objective == "functional" else f"nonfunctional-{objective}"


def expand(config: SweepConfig) -> SweepPlan:
    """Every data job and stage of the grid, in the order they can run."""
    jobs: dict[str, DataJob] = {}
    stages: list[PlannedStage] = []
    preference = [t for t in config.techniques if t != "sft"]
    for pair in config.models:
        for pathway in config.pathways:
            for seed in config.seeds:
                job = DataJob(pair.name, pathway, seed, pair.start(pathway))
                if config.techniques and not config.data.sft_dataset:  # else nothing trains on generated data
                    jobs.setdefault(job.label, job)
                for rank in config.lora_ranks:
                    branch = f"{job.label}-r{rank}"
                    sft = None
                    if "sft" in config.techniques:
                        sft = f"{branch}-sft"
                        stages.append(PlannedStage(sft, "sft", pair.name, pathway, "functional", seed, rank, job,
                                                   "sft", None))
                    for objective in config.objectives if preference else []:
                        for technique in preference:
                            stages.append(PlannedStage(f"{branch}-{objective}-{technique}", technique, pair.name,
                                                       pathway, objective, seed, rank, job,
                                                       dataset_for(technique, objective), sft))
    return SweepPlan(list(jobs.values()), stages)


def data_config(config: SweepConfig, job: DataJob) -> GenerateConfig:
    d = config.data
    kinds = sorted({"sft" if s == "sft" else "dpo" if s == "dpo" else "bon" for s in config.techniques})
    if config.objectives != ["functional"]:
        kinds.append("nonfunctional")
    dimensions = [o for o in config.objectives if o != "functional"] or list(d.pairs.dimensions)
    return GenerateConfig(model=job.model, source=d.source, kinds=kinds, mode=data_mode(job.pathway),
                          sampling=d.sampling.model_copy(update={"seed": job.seed}), engine=d.engine,
                          pairs=d.pairs.model_copy(update={"dimensions": dimensions}), limit=d.limit,
                          shard_size=d.shard_size, store=config.store, ray_address=config.ray_address)


def stage_config(config: SweepConfig, stage: PlannedStage, model: str, dataset: str) -> StageConfig:
    """The stage's ``train`` config: the sweep's training settings, the technique's overrides,
    the branch's seed and rank, the starting model and dataset found at run time."""
    settings = {**config.training.model_dump(), **config.stage_overrides.get(stage.technique, {}),
                "seed": stage.seed, "lora_r": stage.lora_r}
    return StageConfig.model_validate({**settings, "stage": stage.technique, "pathway": stage.pathway,
                                       "model": model, "dataset": dataset, "store": config.store,
                                       "ray_address": config.ray_address})



def skip_reason(stage: PlannedStage, before: TrainedStage | None, data_ready: bool, early_stop: bool) -> str | None:
    """Why ``stage`` must not run (None: it runs).  ``before`` is the finished stage it starts
    from, if any.  The early-stop gate: paper 003 found an SFT stage that degrades the model
    predicts alignment failure, so its DPO/BoNBoN branches are skipped."""
    if stage.after and before is None:
        return f"{stage.after} did not complete"
    if early_stop and before is not None and before.degradation and before.degradation["degraded"]:
        d = before.degradation
        return (f"SFT degraded ({stage.after}: held-out pass@1 {d['start_score']:.3f} -> {d['sft_score']:.3f}, "
                f"threshold {d['threshold']})")
    if not data_ready:
        return f"data {stage.data.label} did not complete"
    return None
