"""The study's recipes: mixture composition (fast) and cached expert training (slow)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from safemerge.errors import InputError
from safemerge.train.config import DPOConfig, SFTConfig
from safemerge.train.recipes import (RecipeSettings, default_expert_set, dpo_from, mixture, mixture_records,
                                     monolingual, objective_expert)
from safemerge.utils.hashing import hash_dir


pytestmark = pytest.mark.slow  # every test needs the default world (built once per machine, minutes on 2 cores)


def _kinds(rows, lang=None):
    return Counter(r["kind"] for r in rows if lang is None or r["lang"] == lang)


@pytest.mark.parametrize("fraction", [0.0, 0.15, 0.5, 1.0])
def test_mixture_has_the_requested_safety_share_in_every_language(world, fraction):
    rows = mixture_records(world, fraction)
    for lang in world.languages:
        budget = len(world.records("general", "train", [lang])) + len(world.records("benign", "train", [lang]))
        kinds = _kinds(rows, lang)
        assert sum(kinds.values()) == budget  # same compute for every fraction
        assert kinds["harmful"] == round(fraction * budget)
        assert (kinds["benign"] > 0) == (fraction < 1.0)  # benign requests travel with the general data
    assert rows == mixture_records(world, fraction)  # deterministic


def test_safety_only_and_general_only_are_pure(world):
    assert set(_kinds(mixture_records(world, 1.0))) == {"harmful"}
    assert set(_kinds(mixture_records(world, 0.0))) == {"general", "benign"}
    refusals = {r["completion"] for r in mixture_records(world, 1.0, langs=["fr"])}
    assert refusals == {r["completion"] for r in world.records("harmful", "train", ["fr"])}


def test_dpo_mixture_and_language_subsets(world):
    rows = mixture_records(world, 0.15, "dpo", langs=["hi"], examples_per_language=40)
    assert len(rows) == 40 and {r["lang"] for r in rows} == {"hi"}
    assert all({"prompt", "chosen", "rejected"} <= r.keys() for r in rows)
    assert _kinds(rows)["harmful"] == 6


def test_recipe_input_errors(world, tmp_path):
    with pytest.raises(InputError, match="between 0 and 1"):
        mixture(world, 1.5, root=tmp_path)
    with pytest.raises(InputError, match="unknown language code 'de'"):
        monolingual(world, "de", root=tmp_path)
    with pytest.raises(InputError, match="objective"):
        objective_expert(world, "helpful", root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no config.json"):
        dpo_from(tmp_path, world, 0.15, tmp_path)
    with pytest.raises(InputError, match="not a world directory"):
        mixture(tmp_path, 0.15, root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


CHEAP = RecipeSettings(sft=SFTConfig(lr=3e-3, max_steps=2, batch_size=4, threads=1),
                       dpo=DPOConfig(lr=1e-4, max_steps=2, batch_size=4, threads=1), examples_per_language=8)


def test_expert_set_is_cached_and_dpo_runs_on_any_sft_model(world, tmp_path):
    experts = default_expert_set(world, tmp_path, CHEAP, fractions=(0.15,))  # the default adds 0 % and 100 %
    assert set(experts) == {"sft-mix15", "dpo-mix15", *(f"sft-mono-{lang}" for lang in world.languages)}
    for name, path in experts.items():
        meta = json.loads((path / "train_config.json").read_text())
        assert meta["kind"] == name.split("-")[0] and (tmp_path / "data" / f"{name}.jsonl").is_file()
    dpo15 = json.loads((experts["dpo-mix15"] / "train_config.json").read_text())
    assert dpo15["model_hash"] == hash_dir(experts["sft-mix15"])  # DPO starts from the SFT model of its fraction
    mono = json.loads((experts["sft-mono-ru"] / "train_config.json").read_text())
    assert mono["languages"] == ["ru"] and mono["n_examples"] == 8
    stamp = {p: (p / "model.safetensors").stat().st_mtime_ns for p in experts.values()}
    assert mixture(world, 0.15, "dpo", tmp_path, CHEAP) == experts["dpo-mix15"]
    assert default_expert_set(world, tmp_path, CHEAP, fractions=(0.15,)) == experts  # all cache hits
    assert {p: (p / "model.safetensors").stat().st_mtime_ns for p in experts.values()} == stamp
    out = dpo_from(experts["sft-mono-en"], world, 0.15, tmp_path, CHEAP)  # e.g. SFT -> merge -> DPO
    assert out.name.startswith("dpo-sft-mono-en-") and out.name.endswith("-mix15")
    assert json.loads((out / "train_config.json").read_text())["kind"] == "dpo"
