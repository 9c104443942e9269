"""The study recipes' settings for a given base: the world's tuned recipe for a tiny model, size-band defaults for
a real one, explicit `train:` keys on top (fast: only config files and safetensors headers are read)."""

from __future__ import annotations

import json

import pytest

from safemerge.errors import ConfigError
from safemerge.train.presets import apply_size_defaults, count_parameters
from safemerge.train.recipes import RecipeSettings, settings_for


@pytest.fixture(scope="module")
def real_sized(tmp_path_factory):
    """A model dir whose config is SmolLM2-135M's shape (no weights: its size comes from the config)."""
    from transformers import LlamaConfig

    d = tmp_path_factory.mktemp("smollm2_shape")
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    cfg.save_pretrained(d)
    return d


def test_tiny_base_keeps_the_world_recipe_bit_for_bit(tiny_models):
    got, want = settings_for(tiny_models["base"]), RecipeSettings()
    assert got.model_dump(mode="json") == want.model_dump(mode="json")  # same cache keys as before
    assert got.sft.model_fields_set == want.sft.model_fields_set
    assert got.dpo.model_fields_set == want.dpo.model_fields_set


def test_real_base_leaves_the_size_band_in_charge(real_sized):
    n = count_parameters(real_sized)
    assert 130e6 < n < 140e6
    s = settings_for(real_sized, examples_per_language=64, seed=3, sft={"max_steps": 30})
    assert s.sft.model_fields_set == {"max_steps"} and s.dpo.model_fields_set == set()
    assert (s.examples_per_language, s.seed) == (64, 3)
    sft, record = apply_size_defaults(s.sft, n)  # what train_sft does with them
    assert record["band"] == "small" and sft.lr == 1e-3 and sft.lora is not None and sft.lora.r == 16
    assert sft.max_steps == 30 and sft.threads is None  # the given key wins; torch's default threads
    dpo, _ = apply_size_defaults(s.dpo, n)
    assert dpo.lr == 5e-5


def test_explicit_keys_win_over_the_world_recipe(tiny_models):
    s = settings_for(tiny_models["base"], sft={"lr": 1e-2}, dpo={"beta": 0.3})
    assert s.sft.lr == 1e-2 and s.sft.epochs == RecipeSettings().sft.epochs
    assert s.dpo.beta == 0.3 and s.dpo.lr == RecipeSettings().dpo.lr


def test_bad_train_keys_name_the_key(tiny_models):
    with pytest.raises(ConfigError, match=r"train\.sft.*bogus"):
        settings_for(tiny_models["base"], sft={"bogus": 1})
    with pytest.raises(ConfigError, match=r"train\.dpo.*beta"):
        settings_for(tiny_models["base"], dpo={"beta": -1})


def test_study_spec_checks_train_keys_at_load_time(tmp_path):
    from safemerge.errors import InputError
    from safemerge.study.spec import load_spec

    p = tmp_path / "s.yaml"
    p.write_text(json.dumps({"train": {"sft": {"lr": -1}}}))
    with pytest.raises((InputError, ConfigError), match=r"train\.sft.*lr"):
        load_spec(p)


@pytest.mark.slow  # needs the default world (built once per machine) and trains one tiny expert
def test_mixture_trains_from_the_given_base_on_the_given_languages(world, tiny_models, tmp_path):
    from safemerge.train.recipes import mixture

    settings = settings_for(tiny_models["base"], examples_per_language=8)
    out = mixture(world, 0.5, root=tmp_path, settings=settings, base=tiny_models["base"], langs=["en", "fr"])
    assert out.name == "sft-mix50-en-fr"  # another language set is another model
    record = json.loads((out / "train_config.json").read_text())
    assert record["model"] == str(tiny_models["base"].resolve())
    assert record["n_examples"] == 16 and sorted(record["languages"]) == ["en", "fr"]
    rows = [json.loads(line) for line in (tmp_path / "data" / "sft-mix50-en-fr.jsonl").read_text().splitlines()]
    assert sorted({r["lang"] for r in rows}) == ["en", "fr"]
    assert sum(r["kind"] == "harmful" for r in rows) == 8  # half of each language's budget of 8
