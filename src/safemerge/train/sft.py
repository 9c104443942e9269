"""Supervised fine-tuning through TRL's SFTTrainer, loss on the assistant (completion) tokens only."""

from __future__ import annotations

import os
from functools import cache, partial
from pathlib import Path
from typing import Any

from safemerge.train.cache import cached_train
from safemerge.train.config import SFTConfig
from safemerge.train.data import DataSource
from safemerge.train.presets import with_size_defaults


@cache
def _plain_loss_trainer() -> Any:
    """TRL's SFTTrainer with the model's own causal-LM loss instead of TRL's chunked log-prob LM head.

    TRL computes per-token log-probs, entropy and top-1 accuracy tile by tile to save GPU memory; on a CPU with the
    world's tiny models that head was 43 % of a training step (py-spy). The labels TRL's collator builds already
    mask everything but the assistant reply, so the model's mean cross-entropy over them is the same loss
    (measured: final loss 3.432202 vs 3.432204 after 48 steps) at 20-26 % less CPU time.
    """
    import trl

    class PlainLossSFTTrainer(trl.SFTTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                        labels=inputs["labels"])
            return (out.loss, out) if return_outputs else out.loss

    return PlainLossSFTTrainer


def build_trainer(config: SFTConfig, net: Any, tokenizer: Any, dataset: Any, trainer_dir: Path,
                  callbacks: list[Any]) -> Any:
    """A TRL SFTTrainer for ``net`` with this config's CPU-correct arguments (used by ``train_sft``)."""
    import trl

    args = trl.SFTConfig(output_dir=str(trainer_dir), completion_only_loss=True, packing=False,
                         **config.trl_common())
    return _plain_loss_trainer()(model=net, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 callbacks=callbacks)


def train_sft(
    model: str | os.PathLike,
    train_data: DataSource,
    out_dir: str | os.PathLike,
    config: SFTConfig | None = None,
    progress: Any = None,
    force: bool = False,
) -> Path:
    """Fine-tune ``model`` (local HF dir or hub id) on ``train_data`` and write a HF model dir to ``out_dir``.

    ``train_data``: JSONL file(s) or a HF dataset id with ``messages`` or ``prompt``/``completion`` columns.
    Each record is formatted with the tokenizer's chat template; only the assistant reply is trained on.
    A finished run with the same model, data and config is returned without training (``force`` retrains).
    ``progress``: an open rich Progress to add this run's bar to (default: its own bar).
    """
    config, sized = with_size_defaults(model, config or SFTConfig())  # unset settings <- the model's size band
    return cached_train("sft", model, train_data, out_dir, config, partial(build_trainer, config),
                        progress=progress, force=force, meta={"size_defaults": sized})
