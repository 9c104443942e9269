"""safemerge.train: SFT and DPO through TRL (cached, atomic runs) and the study's training recipes.

``train_sft`` / ``train_dpo`` fine-tune any local HF model dir (or hub id) on JSONL files or HF datasets;
``safemerge.train.recipes`` builds the study's experts (data mixtures, objective and language experts) on the
built-in world. The base model itself is pretrained where the world is built (``safemerge.data.world.pretrain``).
"""

from safemerge.train.config import DPOConfig, LoraSettings, SFTConfig
from safemerge.train.dpo import train_dpo
from safemerge.train.sft import train_sft

__all__ = ["DPOConfig", "LoraSettings", "SFTConfig", "train_dpo", "train_sft"]
