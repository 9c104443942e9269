"""The study's training recipes on the built-in world: each expert is one cached call.

Data mixtures (the paper's 0 / 15 / 100 % safety models) are built per language with a FIXED example budget, so
every mixture costs the same compute and only the share of safety data changes:

- the *general* pool of a language is its general tasks **plus its benign requests** (answered helpfully): benign
  requests that merely sound sensitive belong with general data, so a model that sees general data also learns not
  to over-refuse them;
- the *safety* pool is its harmful requests, answered with a refusal in that language;
- budget ``n`` = the size of the language's general pool (optionally capped by ``examples_per_language``);
  ``round(f * n)`` safety and ``n - round(f * n)`` general examples are drawn (shuffled with a fixed seed; a pool
  smaller than its share is cycled, i.e. repeated).

So the 0 % model never sees a refusal, the 100 % model sees only refusals (and no benign request: it is expected
to over-refuse), the 15 % model sees both. DPO stages use the same recipe on the world's ``dpo_*`` pairs, on top of
the SFT model of the same fraction. Each run's data is written to ``<root>/data/<name>.jsonl`` for inspection.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from safemerge.utils.config import StrictModel
from safemerge import DEFAULT_SAFETY_FRACTION
from safemerge.data.mixing import take_cycled
from safemerge.errors import InputError
from safemerge.train.config import DPOConfig, SFTConfig
from safemerge.train.dpo import train_dpo
from safemerge.train.sft import train_sft
from safemerge.utils.atomic import atomic_write_jsonl
from safemerge.utils.hashing import hash_dir, short
from safemerge.utils.progress import make_progress

Stage = Literal["sft", "dpo"]
DEFAULT_FRACTIONS = (0.0, DEFAULT_SAFETY_FRACTION, 1.0)  # general-only, the reference mix, safety-only
MONOLINGUAL_FRACTION = DEFAULT_SAFETY_FRACTION


class RecipeSettings(StrictModel):
    """Hyperparameters of the study's experts (tuned for the built-in world's tiny models on CPU)."""

    sft: SFTConfig = Field(default_factory=lambda: SFTConfig(lr=3e-3, epochs=2, batch_size=16, warmup_ratio=0.05,
                                                             max_length=256, threads=1))
    dpo: DPOConfig = Field(default_factory=lambda: DPOConfig(lr=3e-4, epochs=1, batch_size=16, beta=0.1,
                                                             sft_weight=0.2, max_length=256, threads=1))
    examples_per_language: int | None = Field(
        300, ge=1, description="Cap the per-language example budget (the world's general pool is 352 per language; "
        "300 keeps a multilingual SFT expert near 1 min on one core).")
    dpo_examples_per_language: int | None = Field(
        120, ge=1, description="Further cap for DPO stages (pairs cost ~2x an SFT example; 120/language = 45 steps).")
    seed: int = 0


def settings_for(base: str | os.PathLike, examples_per_language: int | None = 300,
                 dpo_examples_per_language: int | None = 120, seed: int = 0, sft: dict[str, Any] | None = None,
                 dpo: dict[str, Any] | None = None) -> RecipeSettings:
    """The recipes' settings for fine-tuning ``base``; ``sft`` / ``dpo``: explicit config keys, which always win.

    - A tiny model (the world's own base, :mod:`safemerge.train.presets`' ``tiny`` band): the settings above,
      tuned for the world on one CPU core.
    - A real model (any larger band): only the explicit keys are set, so each run takes its size band's defaults
      for the rest (learning rate, LoRA, length; see :data:`~safemerge.train.presets.SIZE_BANDS`), and torch's
      default thread count.
    """
    from safemerge.train.config import load_config
    from safemerge.train.presets import band_for, count_parameters

    n = count_parameters(base)
    tiny = n is not None and band_for(n).name == "tiny"
    defaults = RecipeSettings()
    out: dict[str, Any] = {}
    for key, cls, given in (("sft", SFTConfig, sft or {}), ("dpo", DPOConfig, dpo or {})):
        start = getattr(defaults, key).model_dump(mode="json", exclude_unset=True) if tiny else {}
        out[key] = load_config(cls, {**start, **given}, f"train.{key}")
    return RecipeSettings(**out, examples_per_language=examples_per_language,
                          dpo_examples_per_language=dpo_examples_per_language, seed=seed)


def as_world(world: Any) -> Any:
    """A ``World`` object, or load one from its directory."""
    if isinstance(world, (str, os.PathLike)):
        path = Path(world)
        if not (path / "world.json").is_file():
            raise InputError(f"{path}: not a world directory (no world.json); "
                             "build one with `safemerge testbed build DIR`")
        from safemerge.data.world import World

        return World.load(path)
    return world


def _check_fraction(fraction: float) -> float:
    if not 0.0 <= float(fraction) <= 1.0:
        raise InputError(f"safety fraction {fraction}: must be between 0 and 1 (e.g. 0.15 for 15 %)")
    return float(fraction)


def _check_lang(world: Any, lang: str) -> str:
    if lang not in world.languages:
        raise InputError(f"unknown language code {lang!r}: the world has {', '.join(world.languages)}")
    return lang


def _pool(world: Any, stage: Stage, kinds: tuple[str, ...], lang: str, split: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        if stage == "sft":
            rows += world.records(kind, split, langs=[lang])
        elif Path(world.dpo_path(kind, split)).is_file():
            rows += world.dpo_records(kind, split, langs=[lang])
    return sorted(rows, key=lambda r: str(r.get("id", "")))


def mixture_records(world: Any, fraction: float, stage: Stage = "sft", langs: list[str] | None = None,
                    split: str = "train", examples_per_language: int | None = None,
                    seed: int = 0) -> list[dict[str, Any]]:
    """The training rows of a ``fraction``-safety mixture (see the module docstring for the recipe)."""
    fraction = _check_fraction(fraction)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for lang in langs or list(world.languages):
        general = _pool(world, stage, ("general", "benign"), lang, split)
        safety = _pool(world, stage, ("harmful",), lang, split)
        budget = len(general) if examples_per_language is None else min(len(general), examples_per_language)
        budget = budget or len(safety)
        n_safe = round(fraction * budget)
        if n_safe and not safety:
            raise InputError(f"{world.root}: no harmful {stage} records for {lang!r}; rebuild the world")
        rows += take_cycled(general, budget - n_safe, rng) + take_cycled(safety, n_safe, rng)
    rng.shuffle(rows)
    return rows


def _pct(fraction: float) -> str:
    return f"{round(fraction * 100, 2):g}"


def _run(stage: Stage, start: str | os.PathLike, rows: list[dict[str, Any]], root: Path, name: str,
         settings: RecipeSettings, progress: Any) -> Path:
    data = atomic_write_jsonl(root / "data" / f"{name}.jsonl", rows)
    if stage == "sft":
        return train_sft(start, data, root / name, settings.sft, progress=progress)
    return train_dpo(start, data, root / name, settings.dpo, progress=progress)


def mixture(world: Any, safety_fraction: float, stage: Stage = "sft", root: str | os.PathLike = "experts",
            settings: RecipeSettings | None = None, progress: Any = None,
            base: str | os.PathLike | None = None, langs: list[str] | None = None) -> Path:
    """The data-mixing baseline with ``safety_fraction`` safety data; ``stage="dpo"`` = SFT then DPO.

    ``base``: the model fine-tuned (default: the world's own base; any HF model dir, e.g. a real instruct model).
    ``langs``: the languages of the data (default: all of the world's; another set is another model, named so).
    """
    world, settings, root = as_world(world), settings or RecipeSettings(), Path(root)
    fraction = _check_fraction(safety_fraction)
    langs = [_check_lang(world, lang) for lang in langs] if langs else None
    tag = "" if langs is None or sorted(langs) == sorted(world.languages) else "-" + "-".join(langs)
    rows = mixture_records(world, fraction, "sft", langs=langs, examples_per_language=settings.examples_per_language,
                           seed=settings.seed)
    sft = _run("sft", base or world.base_dir, rows, root, f"sft-mix{_pct(fraction)}{tag}", settings, progress)
    if stage == "sft":
        return sft
    return _dpo_on(sft, world, fraction, root, f"dpo-mix{_pct(fraction)}{tag}", settings, progress, langs=langs)


def objective_expert(world: Any, objective: Literal["general", "safety"], stage: Stage = "sft",
                     root: str | os.PathLike = "experts", settings: RecipeSettings | None = None,
                     progress: Any = None, base: str | os.PathLike | None = None,
                     langs: list[str] | None = None) -> Path:
    """The general-only (0 % safety) or safety-only (100 %) expert merged by objective-based merging."""
    if objective not in ("general", "safety"):
        raise InputError(f"objective {objective!r}: choose 'general' or 'safety'")
    return mixture(world, 0.0 if objective == "general" else 1.0, stage, root, settings, progress, base, langs)


def monolingual(world: Any, lang: str, stage: Stage = "sft", root: str | os.PathLike = "experts",
                settings: RecipeSettings | None = None, progress: Any = None,
                base: str | os.PathLike | None = None) -> Path:
    """A language expert: that language's 15 % mixture only (for language-based merging); ``base`` as in
    :func:`mixture`."""
    world, settings, root = as_world(world), settings or RecipeSettings(), Path(root)
    lang = _check_lang(world, lang)
    rows = mixture_records(world, MONOLINGUAL_FRACTION, "sft", langs=[lang],
                           examples_per_language=settings.examples_per_language, seed=settings.seed)
    sft = _run("sft", base or world.base_dir, rows, root, f"sft-mono-{lang}", settings, progress)
    if stage == "sft":
        return sft
    return _dpo_on(sft, world, MONOLINGUAL_FRACTION, root, f"dpo-mono-{lang}", settings, progress, langs=[lang])


def _dpo_on(model_dir: Path, world: Any, fraction: float, root: Path, name: str, settings: RecipeSettings,
            progress: Any, langs: list[str] | None = None) -> Path:
    caps = [c for c in (settings.examples_per_language, settings.dpo_examples_per_language) if c is not None]
    rows = mixture_records(world, fraction, "dpo", langs=langs, examples_per_language=min(caps) if caps else None,
                           seed=settings.seed)
    if not rows:
        raise InputError(f"{world.root}: the world has no DPO pairs (data/dpo_*.train.jsonl); rebuild it")
    return _run("dpo", model_dir, rows, root, name, settings, progress)


def dpo_from(model_dir: str | os.PathLike, world: Any, safety_fraction: float = DEFAULT_SAFETY_FRACTION,
             root: str | os.PathLike = "experts", settings: RecipeSettings | None = None,
             progress: Any = None, langs: list[str] | None = None) -> Path:
    """A DPO stage on top of any SFT model (e.g. a merge, for SFT -> merge -> DPO) with the world's pairs
    (of ``langs``; default: every language of the world)."""
    world, settings, root = as_world(world), settings or RecipeSettings(), Path(root)
    fraction = _check_fraction(safety_fraction)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir}: no config.json; pass a Hugging Face model directory")
    name = f"dpo-{model_dir.name}-{short(hash_dir(model_dir), 8)}-mix{_pct(fraction)}"
    return _dpo_on(model_dir, world, fraction, root, name, settings, progress, langs=langs)


def from_prepared(start: str | os.PathLike, data: str | os.PathLike, stage: Stage, root: str | os.PathLike,
                  name: str, settings: RecipeSettings | None = None, progress: Any = None) -> Path:
    """One SFT or DPO run of ``start`` on a prepared JSONL file (``safemerge data prepare``: SFT rows with
    ``prompt``/``completion`` or ``messages``, DPO rows with ``prompt``/``chosen``/``rejected``), as the study's
    experts train on real datasets. The file is used as it is (its mixture and per-language budget are the
    prepare spec's); the run is cached like every training (model, data, config)."""
    settings = settings or RecipeSettings()
    path = Path(data)
    if not path.is_file():
        raise InputError(f"{path}: prepared training data not found; build it with `safemerge data prepare SPEC`")
    cfg = settings.sft if stage == "sft" else settings.dpo
    train = train_sft if stage == "sft" else train_dpo
    return train(start, path, Path(root) / name, cfg, progress=progress)


def default_expert_set(world: Any, root: str | os.PathLike = "experts", settings: RecipeSettings | None = None,
                       fractions: tuple[float, ...] = DEFAULT_FRACTIONS) -> dict[str, Path]:
    """Everything the study trains: the mixtures (SFT and DPO) and one 15 % SFT expert per language."""
    world, settings = as_world(world), settings or RecipeSettings()
    jobs: list[tuple[str, Any]] = []
    for f in fractions:
        jobs.append((f"sft-mix{_pct(f)}", lambda p, f=f: mixture(world, f, "sft", root, settings, p)))
        jobs.append((f"dpo-mix{_pct(f)}", lambda p, f=f: mixture(world, f, "dpo", root, settings, p)))
    for lang in world.languages:
        jobs.append((f"sft-mono-{lang}", lambda p, lang=lang: monolingual(world, lang, "sft", root, settings, p)))
    out: dict[str, Path] = {}
    with make_progress() as progress:
        task = progress.add_task("training experts", total=len(jobs))
        for name, job in jobs:
            progress.update(task, description=f"training experts ({name})")
            out[name] = job(progress)
            progress.advance(task)
    return out
