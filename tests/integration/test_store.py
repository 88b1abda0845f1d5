"""Artifact store (local and S3 on a loopback S3 server) and lineage records."""

from __future__ import annotations

import json

import pytest

from codealign.tasks.artifacts.lineage import (
    ArtifactMeta,
    InputRef,
    lineage_tree,
    render_tree,
)
from codealign.tasks.artifacts.store import (
    META_SUFFIX,
    ArtifactStore,
    IntegrityError,
    MissingArtifact,
)


def test_put_get_roundtrip_with_lineage(store):
    ref = store.put_json("runs/r1/scores.json", {"pass@1": 0.5},
                         ArtifactMeta("scores", producer={"flow": "f", "task": "score"}, params={"k": [1]}))
    assert ref.uri == store.uri("runs/r1/scores.json") and len(ref.sha256) == 64
    assert store.exists("runs/r1/scores.json")
    assert store.get_json("runs/r1/scores.json") == {"pass@1": 0.5}
    meta = store.meta("runs/r1/scores.json")
    assert meta.sha256 == ref.sha256 and meta.kind == "scores" and meta.params == {"k": [1]}
    assert "commit" in meta.code and "dirty" in meta.code
    assert meta.packages.get("numpy")
    assert store.list("runs/r1") == ["runs/r1/scores.json"]


def test_content_without_sidecar_is_not_an_artifact(store):
    path = store.path("half/written.jsonl")
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, b"partial")  # as if the writer died before its sidecar
    assert not store.exists("half/written.jsonl")
    with pytest.raises(MissingArtifact):
        store.get("half/written.jsonl")


def test_modified_artifact_fails_with_its_name(store):
    store.put_jsonl("a/verdicts.jsonl", [{"passed": True}], ArtifactMeta("verdicts"))
    store.fs.pipe_file(store.path("a/verdicts.jsonl"), b'{"passed": false}\n')
    with pytest.raises(IntegrityError, match=r"a/verdicts\.jsonl: content sha256 .* does not match"):
        store.get("a/verdicts.jsonl")


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put("x/y.bin", b"data", ArtifactMeta("blob"))
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.bin", "y.bin" + META_SUFFIX]


def test_lineage_tree_from_score_back_to_checkpoint(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ckpt = InputRef("file:///models/checkpoint-100", "c" * 64)
    samples = store.put_jsonl("r/samples.jsonl", [{"x": 1}], ArtifactMeta("samples", {"task": "sample"}, (ckpt,)))
    verdicts = store.put_jsonl("r/verdicts.jsonl", [{"passed": True}],
                               ArtifactMeta("verdicts", {"task": "execute"}, (InputRef(samples.uri, samples.sha256),)))
    scores = store.put_json("r/scores.json", {"pass@1": 1.0},
                            ArtifactMeta("scores", {"task": "score"}, (InputRef(verdicts.uri, verdicts.sha256),)))
    tree = lineage_tree(store, scores.uri)
    assert [tree.kind, tree.inputs[0].kind, tree.inputs[0].inputs[0].kind] == ["scores", "verdicts", "samples"]
    leaf = tree.inputs[0].inputs[0].inputs[0]
    assert leaf.external and leaf.uri == ckpt.uri and leaf.sha256 == ckpt.sha256
    text = render_tree(tree)
    assert text.splitlines()[0].startswith("scores") and "checkpoint-100" in text.splitlines()[-1]
    assert json.loads(json.dumps(tree.to_json()))["inputs"][0]["kind"] == "verdicts"
