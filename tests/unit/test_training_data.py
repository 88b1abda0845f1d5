"""Training data in every form TRL users have it: parquet or JSONL files, a `save_to_disk`
directory, a hub id; standard and conversational formats; with or without instruction ids."""

from __future__ import annotations

import json

import pytest

from codealign.tasks.training.data import DERIVED_IDS, DatasetError, check_dataset, example_ids, read_rows

SFT = [{"prompt": "Write f.", "completion": "def f():\n    return 1\n"},
       {"prompt": "Write g.", "completion": "def g():\n    return 2\n"}]
MESSAGES = [{"messages": [{"role": "user", "content": "Write f."},
                          {"role": "assistant", "content": "def f():\n    return 1\n"}]},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write g."},
                          {"role": "assistant", "content": "def g():\n    return 2\n"}]}]
# two pairs share a prompt: ids derived from prompts must tell them apart
PAIRS = [{"prompt": [{"role": "user", "content": "Write f."}],
          "chosen": [{"role": "assistant", "content": "def f():\n    return 1\n"}],
          "rejected": [{"role": "assistant", "content": "def f():\n    return 0\n"}]},
         {"prompt": [{"role": "user", "content": "Write f."}],
          "chosen": [{"role": "assistant", "content": "def f():\n    return 1\n"}],
          "rejected": [{"role": "assistant", "content": "def f(:\n"}]}]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_standard_jsonl_and_parquet_read_alike(tmp_path):
    from datasets import Dataset

    Dataset.from_list(SFT).to_parquet(str(tmp_path / "sft.parquet"))
    a = check_dataset(jsonl(tmp_path / "sft.jsonl", SFT), "sft")
    b = check_dataset(str(tmp_path / "sft.parquet"), "sft")
    assert a.rows == b.rows == 2 and a.columns == b.columns == ("prompt", "completion") and not a.conversational
    assert a.ids == DERIVED_IDS and a.sha256 != b.sha256  # each identified by its own bytes
    assert read_rows(a.uri) == read_rows(b.uri) == SFT


def test_conversational_sft_and_preference_data(tmp_path):
    sft = check_dataset(jsonl(tmp_path / "chat.jsonl", MESSAGES), "sft")
    assert sft.columns == ("messages",) and sft.conversational
    dpo = check_dataset(jsonl(tmp_path / "pairs.jsonl", PAIRS), "dpo")
    assert dpo.conversational and dpo.columns == ("prompt", "chosen", "rejected")
    ids = example_ids(read_rows(dpo.uri))
    assert len(set(ids)) == 2 and ids[0].rsplit("#", 1)[0] == ids[1].rsplit("#", 1)[0]  # same prompt, two pairs
    assert check_dataset(jsonl(tmp_path / "bon.jsonl", PAIRS), "bonbon", bonbon_n=8).n == 8


def test_a_save_to_disk_directory_is_identified_by_its_arrow_files(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(SFT).save_to_disk(str(tmp_path / "ds"))
    DatasetDict({"train": Dataset.from_list(SFT)}).save_to_disk(str(tmp_path / "dd"))
    one, two = check_dataset(str(tmp_path / "ds"), "sft"), check_dataset(str(tmp_path / "dd"), "sft")
    assert one.rows == two.rows == 2 and one.sha256 == check_dataset(str(tmp_path / "ds"), "sft").sha256
    Dataset.from_list(SFT[:1]).save_to_disk(str(tmp_path / "ds2"))
    assert check_dataset(str(tmp_path / "ds2"), "sft").sha256 != one.sha256


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "p", "completion": [{"role": "assistant", "content": "c"}]}], "mixes plain text and message lists"),
    ([{"messages": [{"role": "user", "content": "only a question"}]}], "do not end with an assistant turn"),
    ([{"prompt": "p", "completion": ""}], r"row 0 \(prompt:[0-9a-f]{16}#0\): empty or non-text 'completion'"),
    ([{"question": "p"}], r"a sft dataset needs column\(s\) prompt, completion \(or messages\)"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    with pytest.raises(DatasetError, match=message):
        check_dataset(jsonl(tmp_path / "bad.jsonl", rows), "sft")


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(SFT[0]) + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl: line 2: not valid JSON"):
        check_dataset(str(path), "sft")


def test_a_hub_dataset_offline_is_one_clear_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError, match="org/pairs@v1: a hub dataset, and HF_HUB_OFFLINE is set"):
        check_dataset("org/pairs@v1", "dpo")


def test_generate_preferences_save_to_disk_output_trains_as_it_is(tmp_path):
    """`generate-preferences --save-to-disk` writes each dataset as a save_to_disk directory in
    the store (the same writer): `train --dataset` and `datasets.load_from_disk` open it."""
    from datasets import load_from_disk

    from codealign.tasks.artifacts.lineage import ArtifactMeta
    from codealign.tasks.artifacts.store import ArtifactStore
    from codealign.tasks.preferences.generate import GenerateConfig, put_disk_dataset

    assert GenerateConfig(model="toy-instruct", save_to_disk=True).save_to_disk
    store = ArtifactStore(str(tmp_path / "store"))
    rows = [{**r, "instruction_id": f"i{n}"} for n, r in enumerate(SFT)]
    uri = put_disk_dataset(store, "runs/r/datasets/sft", rows, ArtifactMeta("preference-dataset"))
    assert load_from_disk(store.path(uri)).to_list() == rows
    checked = check_dataset(uri, "sft")
    assert checked.rows == 2 and checked.ids == "instruction_id" and store.meta(uri).sha256
