"""Validated training configurations (pydantic v2), checked before any model is loaded.

The defaults are conservative for real models (TRL's learning rates) and deterministic (no reporting, no dataloader
workers, fixed seeds). ``device`` / ``dtype`` (``--device`` / ``--dtype``, :mod:`safemerge.utils.device`) choose
where a run trains: on the CPU (``use_cpu``, fp32, no gradient checkpointing: the CPU facts of docs/ARCHITECTURE.md)
or on CUDA (bf16 where the GPU supports it, activation checkpointing on); :func:`trl_device_args` builds those
TrainingArguments fields. The built-in world's tiny models need larger learning rates:
:mod:`safemerge.train.recipes` sets its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from safemerge.errors import config_error_from_validation
from safemerge.utils.config import StrictModel
from safemerge.utils.device import DEVICE_HELP, DTYPE_HELP, DeviceName, DtypeName, Placement, resolve

_LANG_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


class LoraSettings(StrictModel):
    """LoRA through PEFT. The merged weights are saved by default; ``save_adapter`` also keeps the adapter."""

    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names to adapt, or 'all-linear'.",
    )
    save_adapter: bool = Field(False, description="Also write the adapter to <out>/adapter/.")


class TrainConfig(StrictModel):
    """Settings shared by SFT and DPO."""

    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step (per device).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_length: int = Field(512, ge=8, description="Truncate tokenized examples to this many tokens.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(0, description="Seed for initialisation, data order and dropout.")
    languages: list[str] | None = Field(
        None, description="Keep only records whose 'lang' is one of these codes (records need a 'lang' field)."
    )
    max_examples: int | None = Field(None, ge=1, description="Keep only the first N records (after filtering).")
    lora: LoraSettings | None = Field(None, description="LoRA settings; None = full fine-tune.")
    logging_steps: int = Field(1, ge=1)
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads while training (None = torch's default). 1 is much faster for "
        "tiny models on a busy machine: spinning OpenMP threads stall when cores are oversubscribed.")
    device: DeviceName = Field("auto", description=DEVICE_HELP)
    dtype: DtypeName = Field("auto", description=DTYPE_HELP)

    @field_validator("languages")
    @classmethod
    def _check_langs(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            bad = [code for code in v if not _LANG_CODE.match(code)]
            if bad:
                raise ValueError(f"unknown language code {bad[0]!r}; use ISO 639-1 codes such as en, fr, hi")
            if not v:
                raise ValueError("empty language list; omit it to keep every language")
        return v

    def placement(self) -> Placement:
        """The resolved device and dtype (a one-line ConfigError for CUDA without a CUDA device)."""
        return resolve(self.device, self.dtype)

    def trl_common(self, placement: Placement | None = None) -> dict[str, Any]:
        """The TrainingArguments fields this config fixes (deterministic, no reporting) on ``placement`` (default:
        :meth:`placement`): see :func:`trl_device_args`."""
        placement = placement or self.placement()
        return _known_to_transformers(dict(
            num_train_epochs=self.epochs,
            max_steps=self.max_steps if self.max_steps is not None else -1,
            learning_rate=self.lr,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            max_length=self.max_length,
            lr_scheduler_type=self.scheduler,
            warmup_steps=self.warmup_ratio,  # a float < 1 is a ratio of the total steps
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            seed=self.seed,
            data_seed=self.seed,
            logging_steps=self.logging_steps,
            **trl_device_args(placement),
            report_to="none",
            dataloader_num_workers=0,
            save_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            dataset_num_proc=None,
            remove_unused_columns=True,
        ))


def trl_device_args(placement: Placement) -> dict[str, Any]:
    """The device-dependent TrainingArguments fields.

    - CPU: ``use_cpu``, fp32 (``bf16`` only for an explicit ``--dtype bfloat16``), no activation (gradient)
      checkpointing: on the CPU it only costs time.
    - CUDA: ``bf16`` (``--dtype auto`` on Ampere+ or ``bfloat16``; the weights are loaded in bf16 too, see
      :func:`load_dtype`), ``fp16`` mixed precision over fp32 weights for ``float16``, ``tf32`` matrix products for
      ``tf32``, and activation checkpointing on (non-reentrant, so LoRA needs no input gradients): the memory of a
      7-8B full fine-tune's activations is what limits the batch on one GPU.
    """
    d = placement.dtype
    if not placement.cuda:
        return dict(use_cpu=True, bf16=d == "bfloat16", fp16=False, gradient_checkpointing=False,
                    activation_checkpointing=False)
    out: dict[str, Any] = dict(use_cpu=False, bf16=d == "bfloat16", fp16=d == "float16",
                               gradient_checkpointing=True, activation_checkpointing=True,
                               activation_checkpointing_kwargs={"use_reentrant": False})
    if d == "tf32":
        out["tf32"] = True
    return out


def _known_to_transformers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for the installed transformers: ``activation_checkpointing*`` (transformers 5.2x) become
    ``gradient_checkpointing*`` where TrainingArguments does not know the new names yet (e.g. a GPU image's older
    transformers)."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    out = dict(kwargs)
    for new, old in (("activation_checkpointing", "gradient_checkpointing"),
                     ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")):
        if new in out and new not in fields:
            out[old] = out.pop(new)
    return out


def load_dtype(placement: Placement) -> Any:
    """The dtype a training run loads the model in: bf16 for bf16 runs (half the memory of weights, gradients and
    optimizer state; what lets an 8B full fine-tune fit one 80 GB GPU), else fp32 (fp16 runs are mixed precision:
    the Trainer's gradient scaler needs fp32 master weights)."""
    import torch

    return torch.bfloat16 if placement.dtype == "bfloat16" else torch.float32


class SFTConfig(TrainConfig):
    """Supervised fine-tuning: next-token loss on the assistant (completion) tokens only."""

    kind: Literal["sft"] = "sft"


class DPOConfig(TrainConfig):
    """Direct preference optimisation against a frozen copy of the starting model."""

    kind: Literal["dpo"] = "dpo"
    lr: float = Field(1e-6, gt=0, description="Peak learning rate.")
    beta: float = Field(0.1, gt=0, description="DPO temperature (strength of the KL anchor to the reference).")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero"] = "sigmoid"
    sft_weight: float = Field(0.0, ge=0, description="Add this times the SFT loss on 'chosen' (RPO-style).")


def load_config(cls: type[TrainConfig], data: dict[str, Any] | None = None, source: str | Path | None = None) -> Any:
    """Validate ``data`` into ``cls``; a ConfigError naming the key on failure."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as exc:
        raise config_error_from_validation(exc, source or cls.__name__) from None
