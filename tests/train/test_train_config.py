"""Config validation happens before any heavy work and reports one line naming the key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safemerge.errors import ConfigError
from safemerge.train.config import DPOConfig, SFTConfig, load_config


def test_cpu_correct_defaults():
    args = SFTConfig(device="cpu").trl_common()  # the default, device auto, is the CPU where torch sees no GPU
    assert args["use_cpu"] and not args["bf16"] and not args["fp16"] and not args["gradient_checkpointing"]
    assert args["report_to"] == "none" and args["dataloader_num_workers"] == 0 and args["save_strategy"] == "no"
    assert args["seed"] == args["data_seed"] == 0
    assert DPOConfig().lr < SFTConfig().lr


@pytest.mark.parametrize("data, key", [
    ({"lr": -1}, "lr"), ({"languages": ["english"]}, "unknown language code"), ({"batch_size": 0}, "batch_size"),
    ({"lora": {"r": 0}}, "lora.r"), ({"epochs": 1, "typo": 3}, "typo"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key) as err:
        load_config(SFTConfig, data, "cfg.yaml")
    assert str(err.value).startswith("cfg.yaml: ") and "\n" not in str(err.value)


@given(st.from_regex(r"[a-z]{2}", fullmatch=True), st.floats(1e-7, 1.0), st.integers(1, 64))
def test_valid_configs_round_trip(lang, lr, bs):
    cfg = load_config(DPOConfig, {"languages": [lang], "lr": lr, "batch_size": bs, "lora": {"r": 4}})
    assert load_config(DPOConfig, cfg.model_dump(mode="json")) == cfg
