"""Direct preference optimisation through TRL's DPOTrainer; the reference is the starting model (frozen)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from safemerge.train.cache import cached_train
from safemerge.train.config import DPOConfig
from safemerge.train.data import DataSource
from safemerge.train.presets import with_size_defaults


def build_trainer(config: DPOConfig, net: Any, tokenizer: Any, dataset: Any, trainer_dir: Path,
                  callbacks: list[Any]) -> Any:
    """A TRL DPOTrainer for ``net`` with this config's CPU-correct arguments (used by ``train_dpo``)."""
    import trl

    losses = [config.loss_type] + (["sft"] if config.sft_weight > 0 else [])
    weights = [1.0, config.sft_weight] if config.sft_weight > 0 else None
    args = trl.DPOConfig(output_dir=str(trainer_dir), beta=config.beta, loss_type=losses, loss_weights=weights,
                         precompute_ref_log_probs=True, precompute_ref_batch_size=max(config.batch_size, 16),
                         **config.trl_common())
    return trl.DPOTrainer(model=net, args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=callbacks)


def train_dpo(
    model: str | os.PathLike,
    train_data: DataSource,
    out_dir: str | os.PathLike,
    config: DPOConfig | None = None,
    progress: Any = None,
    force: bool = False,
) -> Path:
    """Prefer ``chosen`` over ``rejected`` answers, anchored to ``model`` itself as the reference.

    ``train_data``: JSONL file(s) or a HF dataset id with ``prompt``, ``chosen`` and ``rejected`` columns.
    The reference log-probabilities are computed once, before training, with the starting weights (for LoRA,
    with the adapter disabled), so no second model copy is kept in memory.
    """
    config, sized = with_size_defaults(model, config or DPOConfig())  # unset settings <- the model's size band
    return cached_train("dpo", model, train_data, out_dir, config, partial(build_trainer, config),
                        progress=progress, force=force, meta={"size_defaults": sized})
