"""The flow registry: one table names every flow, and one resume serves them all."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from codealign.flows import registry
from codealign.tasks.artifacts.runs import Manifest, write_manifest
from codealign.tasks.artifacts.store import ArtifactStore
from codealign.tasks.files import InputError
from codealign.tasks.preferences.generate import GenerateConfig
from codealign.tasks.rendering import print_scores


def test_every_entry_names_its_flow_and_its_flow_takes_its_config():
    for name, entry in registry.FLOWS.items():
        flow = entry.flow()
        assert flow.name == name
        assert set(flow.parameters.properties) == {"config", "run_id"}


def _record(store: ArtifactStore, run_id: str, flow: str, config: dict) -> None:
    write_manifest(store, Manifest(run_id, flow, config, []), (), {"flow": flow, "task": flow})


def test_resume_runs_the_recorded_flow_on_its_recorded_config(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path / "store"))
    started = GenerateConfig(model="toy-instruct", source="toy-train", store="file:///elsewhere", ray_address="auto")
    recorded = {**started.model_dump(mode="json"), "_model": {"uri": "m"}, "_source": {"uri": "s"}}
    _record(store, "g1", "generate-preferences", recorded)
    calls = []
    monkeypatch.setattr(registry, "run", lambda name, config, run_id: calls.append((name, config, run_id)))

    registry.resume(store.root, "g1", "ray://head:10001")
    ((name, config, run_id),) = calls
    assert (name, run_id) == ("generate-preferences", "g1") and isinstance(config, GenerateConfig)
    # the store it is resumed from and the address given win; the rest is what the run started with
    assert config.store == store.root and config.ray_address == "ray://head:10001"
    assert config.model_dump(exclude={"store", "ray_address"}) == started.model_dump(exclude={"store", "ray_address"})


def test_resume_of_a_run_from_an_unknown_flow_names_it(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    _record(store, "x1", "distill", {})
    with pytest.raises(InputError, match=r"run x1 was made by flow 'distill'.*evaluate-checkpoints"):
        registry.resume(store.root, "x1")


def test_rendering_needs_no_command_line():
    text = io.StringIO()
    scores = {"benchmarks": {"humaneval": {"tasks": 2, "samples": 4, "pass@1": 0.625}},
              "overall": {"tasks": 2, "samples": 4, "pass@1": 0.625}}
    print_scores(Console(file=text, width=100), scores, [1, 10])
    table = text.getvalue()
    assert "humaneval" in table and "62.5" in table and "overall" not in table  # one benchmark: no overall row
