"""safemerge.merge: a mergekit-compatible merge engine (pure methods + streaming executor).

- :func:`merge` (config, out_dir, **options) -> Path: stream a merge to a loadable Hugging Face model directory;
- :func:`merge_state_dicts` (config, state_dicts, seed=0) -> dict: the same merge in memory (for search);
- :class:`MergeConfig` / :func:`load_config`: mergekit YAML, validated.

Heavy work is imported lazily so ``import safemerge.merge`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from safemerge.merge.config import MergeConfig, load_config

__all__ = ["MergeConfig", "load_config", "merge", "merge_state_dicts", "plan_merge"]


def merge(config: Any, out_dir: Any, **options: Any) -> Any:
    """Merge to disk; see :func:`safemerge.merge.engine.merge` for the options. A recipe with ``output: lora``
    writes a PEFT adapter instead (:func:`safemerge.merge.lora_merge.merge_to_lora`, same options)."""
    if load_config(config).output == "lora":
        from safemerge.merge.lora_merge import merge_to_lora

        return merge_to_lora(config, out_dir, **options)
    from safemerge.merge.engine import merge as _merge

    return _merge(config, out_dir, **options)


def merge_state_dicts(config: Any, state_dicts: dict[str, Any], seed: int = 0, **options: Any) -> dict[str, Any]:
    """Merge in memory; see :func:`safemerge.merge.engine.merge_state_dicts`."""
    from safemerge.merge.engine import merge_state_dicts as _msd

    return _msd(config, state_dicts, seed, **options)


def plan_merge(config: Any) -> Any:
    """Validate a config against the models' headers and return the per-tensor plan (reads no tensor data)."""
    from safemerge.merge.engine import open_plan

    return open_plan(config)[1]
