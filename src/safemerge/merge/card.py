"""The README.md model card of a merged model (Hugging Face front matter + recipe)."""

from __future__ import annotations

from safemerge.merge.config import MergeConfig, ModelRef
from safemerge.merge.methods import get_method


def _yaml_list(items: list[str]) -> str:
    return "".join(f"- {i}\n" for i in items)


def model_card(config: MergeConfig, recipe_yaml: str, name: str, num_tensors: int, bytes_written: int) -> str:
    models = config.referenced_models()
    bases = sorted({ModelRef.parse(m).path for m in models})
    method = config.merge_method
    spec = get_method(method)
    cited = f"[{spec.label}]({spec.reference_url})" if spec.reference_url else spec.label
    lines = [
        "---",
        "base_model:",
        _yaml_list(bases).rstrip("\n"),
        "library_name: transformers",
        "tags:",
        "- safemerge",
        "- mergekit",
        "- merge",
        "---",
        f"# {name}",
        "",
        f"This model was merged with [safemerge](https://github.com/) using {spec.summary} "
        f"(`merge_method: {method}`), with a mergekit-compatible recipe.",
        "",
        f"- method: {cited}",
        f"- base model: `{config.base_model}`" if config.base_model else "- base model: none",
        f"- {num_tensors} tensors, {bytes_written / 1e6:.1f} MB written",
        "",
        "## Models merged",
        "",
        *[f"- `{m}`" for m in models],
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe_yaml.rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)
