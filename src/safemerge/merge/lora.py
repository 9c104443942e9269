"""PEFT LoRA adapters applied in memory, tensor by tensor (mergekit's ``path+adapter_path`` syntax).

For each adapted weight ``W`` (``module.weight``) with factors ``A`` (r x in) and ``B`` (out x r)::

    W' = W + s * B @ A,   s = lora_alpha / r      (use_rslora: s = lora_alpha / sqrt(r))

(transposed for ``fan_in_fan_out`` layers; ``(B @ A)^T`` for embedding LoRA). ``alpha_pattern`` overrides alpha
per module like PEFT. Full replacement weights (``modules_to_save``) replace the base tensor; a saved base layer
(``<module>.base_layer.weight``, which PEFT writes for adapted embeddings) is the weight the delta is added to. No
disk cache: the delta is computed when the tensor is read and dropped afterwards. :meth:`LoraSource.factors` gives
the factors themselves (LoRA-to-LoRA merges, :mod:`safemerge.merge.lora_merge`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from safemerge.errors import InputError
from safemerge.merge.sources import CheckpointSource, TensorInfo, read_json

_PREFIX = "base_model.model."


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rule: a pattern key matches a module name exactly or as a dotted suffix regex."""
    for key, value in patterns.items():
        if key == module or re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class LoraSource:
    """A base checkpoint with a LoRA adapter folded in on read."""

    def __init__(self, base: CheckpointSource, adapter_dir: str | Path, label: str):
        self.base = base
        self.label = label
        self.adapter_dir = Path(adapter_dir)
        if not os.path.isdir(self.adapter_dir):  # os.path: pathlib's raises for a name too long
            raise InputError(f"{self.adapter_dir}: adapter directory not found; check 'path+adapter_path' in the config")
        cfg = read_json(self.adapter_dir / "adapter_config.json", "adapter_config.json")
        where = self.adapter_dir / "adapter_config.json"
        if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
            raise InputError(f"{where}: peft_type {cfg.get('peft_type')!r} is not supported; only LoRA adapters")
        if cfg.get("use_dora"):
            raise InputError(f"{where}: DoRA adapters are not supported; merge them with peft's merge_and_unload first")
        self.alpha = float(cfg.get("lora_alpha", cfg.get("r", 8)))
        self.rslora = bool(cfg.get("use_rslora", False))
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.alpha_pattern: dict[str, Any] = cfg.get("alpha_pattern") or {}
        self.adapter_config: dict[str, Any] = cfg
        self.adapter = CheckpointSource(self.adapter_dir)
        self._plan: dict[str, dict[str, str]] = {}  # base tensor -> {"A": key, "B": key} or {"full": key}
        self._map_keys()

    def _map_keys(self) -> None:
        base_infos = self.base.infos()
        for key, info in self.adapter.infos().items():
            name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            m = re.match(r"(.*)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.[^.]+)?\.weight$", name) \
                or re.match(r"(.*)\.(lora_embedding_A|lora_embedding_B)(\.[^.]+)?$", name)
            if m:
                target, part = m.group(1) + ".weight", m.group(2)
                slot = "A" if part.endswith("A") else "B"
                self._plan.setdefault(target, {})[slot] = key
                if part.startswith("lora_embedding"):
                    self._plan[target]["embedding"] = "1"
                continue
            if ".lora_" in name:
                raise InputError(f"{self.adapter_dir}: adapter tensor {key!r} is not supported (LoRA biases / "
                                 "magnitude vectors); merge it with peft's merge_and_unload first")
            full = name.replace(".modules_to_save.default", "").replace(".modules_to_save", "")
            slot = "full"
            if full.endswith(".base_layer.weight"):
                full, slot = full[: -len(".base_layer.weight")] + ".weight", "base_layer"
            if full in base_infos and tuple(info.shape) == base_infos[full].shape:
                self._plan.setdefault(full, {})[slot] = key
            else:
                raise InputError(f"{self.adapter_dir}: adapter tensor {key!r} matches no base tensor of "
                                 f"{self.base.path}; is the adapter for this base model?")
        for target, parts in self._plan.items():
            if "full" in parts or ("A" not in parts and "B" not in parts):
                continue
            if target not in base_infos or "A" not in parts or "B" not in parts:
                raise InputError(f"{self.adapter_dir}: LoRA factors for {target!r} do not match the base model "
                                 f"{self.base.path}; is the adapter for this base model?")
            a, b = self.adapter.infos()[parts["A"]], self.adapter.infos()[parts["B"]]
            if "embedding" in parts:
                shape = (a.shape[1], b.shape[0])
            else:
                shape = (b.shape[0], a.shape[1]) if not self.fan_in_fan_out else (a.shape[1], b.shape[0])
            if shape != base_infos[target].shape:
                raise InputError(f"{self.adapter_dir}: LoRA delta for {target!r} has shape {shape} but the base "
                                 f"tensor is {base_infos[target].shape}; is the adapter for this base model?")

    def infos(self) -> dict[str, TensorInfo]:
        return self.base.infos()

    @property
    def config(self) -> dict[str, Any]:
        return self.base.config

    @property
    def path(self) -> Path:
        return self.base.path

    def scale(self, target: str, rank: int) -> float:
        module = target[: -len(".weight")]
        alpha = float(_pattern_value(self.alpha_pattern, module, self.alpha))
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank

    def adapted(self) -> dict[str, str]:
        """Every base tensor the adapter changes: ``lora`` (factors), ``full`` (a replacement, modules_to_save) or
        ``base_layer`` (a saved base weight and no factors)."""
        out = {}
        for target, parts in self._plan.items():
            out[target] = "full" if "full" in parts else "lora" if "A" in parts else "base_layer"
        return out

    def transposed(self, name: str) -> bool:
        """Whether the weight is ``(B @ A)^T`` (embedding LoRA, ``fan_in_fan_out``) rather than ``B @ A``."""
        return self.is_embedding(name) or self.fan_in_fan_out

    def is_embedding(self, name: str) -> bool:
        return "embedding" in self._plan.get(name, {})

    def has_base_layer(self, name: str) -> bool:
        """Whether the adapter saved its own copy of the base weight (``<module>.base_layer.weight``)."""
        return "base_layer" in self._plan.get(name, {})

    def factors(self, name: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
        """``(A, B, transposed)`` of tensor ``name`` with the scale folded into ``B`` (``B`` is ``s * B``), so the
        delta is ``B @ A``, or its transpose when ``transposed`` (embedding LoRA, ``fan_in_fan_out``); None when the
        adapter has no factors for it."""
        raw = self._raw_factors(name, dtype)
        if raw is None:
            return None
        a, b, scale, transposed = raw
        return a, b * scale, transposed

    def _raw_factors(self, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, float, bool] | None:
        parts = self._plan.get(name)
        if parts is None or "A" not in parts:
            return None
        a = self.adapter.get(parts["A"]).to(dtype)
        b = self.adapter.get(parts["B"]).to(dtype)
        return a, b, self.scale(name, a.shape[0]), "embedding" in parts or self.fan_in_fan_out

    def weight(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor before the LoRA delta: a ``modules_to_save`` replacement, a saved base layer, else the base's."""
        parts = self._plan.get(name, {})
        key = parts.get("full") or parts.get("base_layer")
        w = self.adapter.get(key) if key else self.base.get(name)
        return w if dtype is None else w.to(dtype)

    def get_exact(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """``W + s B A`` computed and returned in ``dtype`` (no rounding to the stored dtype)."""
        w = self.weight(name, dtype)
        raw = self._raw_factors(name, dtype)
        if raw is None or "full" in self._plan.get(name, {}):
            return w
        a, b, scale, transposed = raw
        delta = (b @ a).mul_(scale)  # PEFT's order: (B @ A) * scaling
        return w + (delta.T if transposed else delta)

    def get(self, name: str) -> torch.Tensor:
        dtype = self.base.infos()[name].dtype
        if name not in self._plan:
            return self.base.get(name)
        if not dtype.is_floating_point:
            return self.weight(name)
        return self.get_exact(name, torch.float32).to(dtype)

