"""A resident model that candidate merges are written into, in memory (no disk round trip).

The pool (and base) checkpoints are read once into state dicts. For every candidate, the engine's
:func:`safemerge.merge.merge_state_dicts` merges them with the candidate's mergekit-style configuration and the
merged tensors are copied into the parameters of ONE model instance that stays loaded, which is then scored.
"""

from __future__ import annotations

from typing import Any

from safemerge.errors import InputError


def load_state_dict(location: str) -> dict[str, Any]:
    """Every tensor of a local HF checkpoint (safetensors, sharded or .bin), in its stored dtype."""
    from safemerge.merge.io import open_source

    src = open_source(location)
    return {name: src.get(name).contiguous() for name in src.infos()}


class ResidentModel:
    """Pool state dicts + one loaded model whose weights are overwritten by each candidate merge."""

    def __init__(self, paths: dict[str, str], model_from: str | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.paths = dict(paths)
        self.state_dicts = {key: load_state_dict(loc) for key, loc in paths.items()}
        first = model_from or next(iter(paths.values()))
        self.model = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32).to(device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(first)
        self._params = dict(self.model.named_parameters())
        ref = self.state_dicts[next(iter(paths))]
        missing = [n for n in self._params if n not in ref]
        if missing:
            raise InputError(f"{first}: checkpoint has no tensor {missing[0]!r} that the model needs; "
                             "re-save the model with save_pretrained")

    def write(self, tensors: dict[str, Any]) -> None:
        """Copy tensors into the resident model's parameters (tied weights are written once)."""
        import torch

        with torch.no_grad():
            for name, p in self._params.items():
                p.copy_(tensors[name])

    def load_merge(self, config: dict[str, Any], seed: int = 0) -> None:
        """Merge the pool with ``config`` (model names = state-dict keys) into the resident model."""
        from safemerge.merge import merge_state_dicts

        needed = {n: self.state_dicts[n] for n in _referenced(config)}
        merged = merge_state_dicts(config, needed, seed=seed)
        missing = [n for n in self._params if n not in merged]
        if missing:
            raise InputError(f"merge produced no tensor {missing[0]!r}; check that the pool checkpoints are complete")
        self.write(merged)

    def load_pool_model(self, key: str) -> None:
        self.write(self.state_dicts[key])


def _referenced(config: dict[str, Any]) -> list[str]:
    names = [m["model"] for m in config.get("models", [])]
    if config.get("base_model") is not None:
        names.append(config["base_model"])
    return list(dict.fromkeys(names))
