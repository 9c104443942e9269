"""Supervised fine-tuning through TRL's SFTTrainer, loss on the assistant (completion) tokens only."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from safemerge.train.cache import cached_train
from safemerge.train.config import SFTConfig
from safemerge.train.data import DataSource


def build_trainer(config: SFTConfig, net: Any, tokenizer: Any, dataset: Any, trainer_dir: Path,
                  callbacks: list[Any]) -> Any:
    """A TRL SFTTrainer for ``net`` with this config's CPU-correct arguments (used by ``train_sft``)."""
    import trl

    args = trl.SFTConfig(output_dir=str(trainer_dir), completion_only_loss=True, packing=False,
                         **config.trl_common())
    return trl.SFTTrainer(model=net, args=args, train_dataset=dataset, processing_class=tokenizer,
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
    config = config or SFTConfig()
    return cached_train("sft", model, train_data, out_dir, config, partial(build_trainer, config),
                        progress=progress, force=force)
