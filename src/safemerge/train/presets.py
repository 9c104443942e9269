"""Training defaults by model size: a real instruct model needs other settings than the world's tiny models.

:data:`SIZE_BANDS` is the one table of these defaults, keyed by parameter count. A run takes a band's value for
every setting the caller left unset: a config key / CLI flag that is given always wins, field by field (also inside
``lora``: ``--lora-r 8`` keeps the band's alpha and targets; ``lora: null`` / ``--no-lora`` is a full fine-tune).
The chosen values and where they came from are written to ``train_config.json`` (``size_defaults``) and printed by
the CLI.

The ``tiny`` band (the built-in world's 1.26M-parameter models and the test checkpoints) sets nothing: those runs
keep the :class:`~safemerge.train.config.TrainConfig` defaults and the world recipes' explicit settings bit for bit
(same config, same cache key, same weights).

Whatever the band, the chat format and the end of turn are the model's own: the tokenizer's chat template formats
every row, the loss covers the assistant reply only (its tokens plus the template's end-of-turn text, so a
fine-tuned model stops), and the saved generation config stops at that end-of-turn token.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from safemerge.train.config import DPOConfig, TrainConfig, load_config
from safemerge.train.data import _HUB_ID, _looks_like_path

C = TypeVar("C", bound=TrainConfig)

# LoRA of the real-model bands: rank 16, alpha 32 (scale 2), every linear layer of the blocks (attention + MLP;
# not the embeddings / LM head), no dropout (runs are short and deterministic).
_REAL_LORA = MappingProxyType({"r": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": "all-linear"})


@dataclass(frozen=True)
class SizeBand:
    """Defaults for models with fewer than ``below`` parameters (None: no upper bound)."""

    name: str
    below: int | None
    sft: Mapping[str, Any]
    dpo: Mapping[str, Any]
    full_lr: Mapping[str, float]  # {"sft": .., "dpo": ..}: the learning rate when LoRA is explicitly switched off
    why: str

    def defaults(self, config: TrainConfig) -> dict[str, Any]:
        """This band's defaults for ``config``'s kind (SFT or DPO), as plain (JSON-able) values.

        A config that switches LoRA off explicitly (``lora: None``) gets the band's full fine-tuning learning rate
        instead of its LoRA one (a LoRA learning rate would wreck a full fine-tune).
        """
        kind = "dpo" if isinstance(config, DPOConfig) else "sft"
        raw = self.dpo if kind == "dpo" else self.sft
        out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
        if "lora" in out and "lora" in config.model_fields_set and config.lora is None:
            del out["lora"]
            out["lr"] = self.full_lr[kind]
        return out


SIZE_BANDS: tuple[SizeBand, ...] = (
    SizeBand(
        "tiny", 10_000_000,
        sft=MappingProxyType({}),  # the TrainConfig defaults, unchanged (world recipes set their own values)
        dpo=MappingProxyType({}),
        full_lr=MappingProxyType({}),
        why="the world's tiny models: nothing changes (the study's runs stay bit for bit the same)",
    ),
    SizeBand(
        "small", 1_000_000_000,
        sft=MappingProxyType({
            "lr": 1e-3,  # LoRA on a ~135M model: 2e-5 (TRL's full-FT default) moved nothing in 8 steps
            "epochs": 1.0,  # the world's train files are 1-2k rows: one pass = 125-250 steps of 8
            "warmup_ratio": 0.05,  # 5 % linear warmup
            "max_length": 192,  # world rows are ~50-70 tokens with a chat template's system prompt
            "lora": _REAL_LORA,
        }),
        dpo=MappingProxyType({
            "lr": 5e-5,  # LoRA DPO: 1e-6 (TRL's full-FT default) barely moves the margins in 100 steps
            "epochs": 1.0,
            "warmup_ratio": 0.05,
            "max_length": 192,
            "lora": _REAL_LORA,
        }),
        full_lr=MappingProxyType({"sft": 5e-5, "dpo": 5e-6}),  # full fine-tune (not measured here)
        why="measured on SmolLM2-135M-Instruct (docs/training.md)",
    ),
    SizeBand(
        "medium", 10_000_000_000,
        sft=MappingProxyType({
            "lr": 2e-4,  # the usual LoRA learning rate for 1-10B instruct models (not measured here)
            "epochs": 1.0,
            "warmup_ratio": 0.05,
            "max_length": 512,  # room for real multi-sentence replies
            "lora": _REAL_LORA,
        }),
        dpo=MappingProxyType({
            "lr": 1e-5,  # LoRA DPO at 1-10B (not measured here)
            "epochs": 1.0,
            "warmup_ratio": 0.05,
            "max_length": 512,
            "lora": _REAL_LORA,
        }),
        full_lr=MappingProxyType({"sft": 2e-5, "dpo": 1e-6}),  # TRL's full-FT defaults
        why="common practice, not measured in this repo",
    ),
    SizeBand(
        "large", None,
        sft=MappingProxyType({
            "lr": 1e-4,  # larger models need smaller LoRA steps (not measured here)
            "epochs": 1.0,
            "warmup_ratio": 0.05,
            "max_length": 512,
            "lora": _REAL_LORA,
        }),
        dpo=MappingProxyType({
            "lr": 5e-6,  # (not measured here)
            "epochs": 1.0,
            "warmup_ratio": 0.05,
            "max_length": 512,
            "lora": _REAL_LORA,
        }),
        full_lr=MappingProxyType({"sft": 1e-5, "dpo": 5e-7}),  # (not measured here)
        why="common practice, not measured in this repo",
    ),
)


def band_for(parameters: int) -> SizeBand:
    """The size band of a model with ``parameters`` parameters."""
    for band in SIZE_BANDS:
        if band.below is None or parameters < band.below:
            return band
    raise AssertionError("the last size band has no upper bound")  # pragma: no cover


def _safetensors_numel(path: Path) -> int:
    """Number of tensor elements in one safetensors file, from its JSON header only (no weights are read)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            n = 1
            for d in entry.get("shape", []):
                n *= int(d)
            total += n
    return total


def count_parameters(model: str | os.PathLike) -> int | None:
    """Parameter count of a model dir (from its safetensors headers, else its config) or hub id; None if unknown.

    Only headers / config.json are read, so this is cheap enough to run before any weights are loaded.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if files:
            try:
                return sum(_safetensors_numel(f) for f in files)
            except (OSError, ValueError, struct.error):
                pass  # unreadable header: count from the config instead
    elif path.exists() or _looks_like_path(os.fspath(model)) or not _HUB_ID.match(os.fspath(model)):
        return None  # not a model dir nor a hub id: the run's input checks report it
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(os.fspath(model))
        with torch.device("meta"):
            net = AutoModelForCausalLM.from_config(cfg)
        return sum(p.numel() for p in net.parameters())
    except Exception:  # noqa: BLE001 - offline hub id, unknown architecture: the size is simply unknown
        return None


def _matches(final: Any, default: Any) -> bool:
    if isinstance(default, dict):
        return isinstance(final, dict) and all(final.get(k) == v for k, v in default.items())
    return bool(final == default)


def apply_size_defaults(config: C, parameters: int | None) -> tuple[C, dict[str, Any]]:
    """``config`` with its band's value for every setting the caller left unset, and a record of the choice.

    The record (``train_config.json``'s ``size_defaults``): ``band``, ``parameters``, ``band_defaults``,
    ``from_band`` (settings whose final value is the band's) and ``overridden`` (settings given explicitly with
    another value). It is computed from the final values, so applying twice changes and reports nothing new.
    With an unknown size (None) or the tiny band the config is returned unchanged (the same object).
    """
    if parameters is None:
        return config, {"band": "unknown", "parameters": None, "band_defaults": {}, "from_band": [],
                        "overridden": {}}
    band = band_for(parameters)
    defaults = band.defaults(config)
    record: dict[str, Any] = {"band": band.name, "parameters": int(parameters), "band_defaults": defaults}
    explicit = config.model_fields_set
    data = config.model_dump(mode="json", exclude_unset=True)
    changed = False
    for key, value in defaults.items():
        if key == "lora":
            if "lora" not in explicit:
                data["lora"], changed = dict(value), True
            elif config.lora is not None:  # explicit LoRA keys win, the band fills the rest
                missing = {k: v for k, v in value.items() if k not in config.lora.model_fields_set}
                if missing:
                    data["lora"], changed = missing | data["lora"], True
            # an explicit ``lora: None`` is a full fine-tune: kept
        elif key not in explicit:
            data[key], changed = value, True
    resolved = load_config(type(config), data, f"size band {band.name!r}") if changed else config
    final = resolved.model_dump(mode="json")
    record["from_band"] = sorted(k for k, v in defaults.items() if _matches(final.get(k), v))
    record["overridden"] = {k: final.get(k) for k in defaults if k not in record["from_band"]}
    return resolved, record


def with_size_defaults(model: str | os.PathLike, config: C) -> tuple[C, dict[str, Any]]:
    """:func:`apply_size_defaults` for the model at ``model`` (a local dir or hub id)."""
    return apply_size_defaults(config, count_parameters(model))


def describe(record: dict[str, Any], config: TrainConfig) -> str:
    """One line for the CLI: the band, the model size and the values this run uses."""
    n = record.get("parameters")
    size = f"{n / 1e6:.1f}M parameters" if n else "size unknown"
    lora = config.lora
    if lora is None:
        lora_s = "full fine-tune"
    else:
        targets = lora.target_modules if isinstance(lora.target_modules, str) else ",".join(lora.target_modules)
        lora_s = f"LoRA r={lora.r} alpha={lora.alpha:g} targets={targets}"
    steps = f"max_steps={config.max_steps}" if config.max_steps is not None else f"epochs={config.epochs:g}"
    over = ", ".join(sorted(record.get("overridden", {}))) or "none"
    return (f"size band {record['band']} ({size}): lr={config.lr:g} {steps} batch={config.batch_size} "
            f"max_length={config.max_length} warmup={config.warmup_ratio:g} {lora_s}; "
            f"band defaults overridden: {over}")
