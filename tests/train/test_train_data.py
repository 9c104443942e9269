"""Data loading, column checks and model-dir checks (no training)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safemerge.errors import InputError, SafemergeError
from safemerge.train.data import dpo_row, load_train_data, read_jsonl, resolve_model, sft_row

from train_helpers import sft_records, write_jsonl


def test_messages_and_prompt_completion_normalise_to_the_same_row():
    rec = sft_records(1)[0]
    via_messages = sft_row(rec, "r")
    via_columns = sft_row({"prompt": rec["prompt"], "completion": rec["completion"]}, "r")
    assert via_messages == via_columns == {
        "prompt": [{"role": "user", "content": rec["prompt"]}],
        "completion": [{"role": "assistant", "content": rec["completion"]}],
    }


@given(st.lists(st.text(min_size=1), min_size=1, max_size=5), st.text(min_size=1))
def test_multi_turn_messages_train_on_the_last_assistant_turn(turns, answer):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    row = sft_row({"messages": msgs + [{"role": "assistant", "content": answer}]}, "r")
    assert row["prompt"] == msgs
    assert row["completion"] == [{"role": "assistant", "content": answer}]


@pytest.mark.parametrize("rec, missing", [
    ({"prompt": "hi"}, "'messages' or 'prompt' and 'completion'"),
    ({"text": "hi"}, "'messages' or 'prompt' and 'completion'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "must end with an assistant message"),
])
def test_sft_missing_columns_is_one_line_error(rec, missing):
    with pytest.raises(InputError, match=missing) as err:
        sft_row(rec, "f.jsonl record 1")
    assert "\n" not in str(err.value) and "f.jsonl record 1" in str(err.value)


def test_dpo_names_the_missing_columns():
    with pytest.raises(InputError, match="'chosen', 'rejected'"):
        dpo_row({"prompt": "p"}, "r")
    assert dpo_row({"prompt": "p", "chosen": "a", "rejected": "b"}, "r")["rejected"] == [
        {"role": "assistant", "content": "b"}]


def test_load_filters_languages_and_hashes_content(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", sft_records(10))
    data = load_train_data([f], "sft", languages=["fr"])
    assert len(data.rows) == 5 and data.languages == ["fr"]
    assert load_train_data(f, "sft").digest == load_train_data(str(f), "sft").digest
    g = write_jsonl(tmp_path / "b.jsonl", sft_records(10)[::-1])
    assert load_train_data(g, "sft").digest != load_train_data(f, "sft").digest  # order is content
    with pytest.raises(InputError, match="unknown language code 'de': the data has en, fr"):
        load_train_data(f, "sft", languages=["de"])
    with pytest.raises(InputError, match="missing column"):
        load_train_data(f, "dpo")  # SFT records lack chosen/rejected


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{oops\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(bad)
    with pytest.raises(InputError, match="file not found"):
        load_train_data(tmp_path / "nope.jsonl", "sft")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        load_train_data(tmp_path / "empty.jsonl", "sft")


def test_offline_dataset_id_is_a_user_error():
    with pytest.raises(SafemergeError, match="cannot load this dataset id"):
        load_train_data("someone/not-a-dataset", "sft")


def test_model_dir_needs_config_json(tmp_path, tiny_models):
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(InputError, match="model directory not found"):
        resolve_model(tmp_path / "missing" / "dir")
    ref = resolve_model(tiny_models["base"])
    assert ref.local and ref.digest == resolve_model(str(tiny_models["base"])).digest
    assert resolve_model(tiny_models["a"]).digest != ref.digest
    hub = resolve_model("org/model")
    assert not hub.local and hub.name == "org/model"
    json.dumps(ref.__dict__)  # serialisable into train_config.json
