"""``safemerge train``: SFT / DPO on any model and data, and the study's expert recipes on the world."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from safemerge import DEFAULT_SAFETY_FRACTION
from safemerge.errors import InputError
from safemerge.utils.device import DEVICE_HELP, DTYPE_HELP

_STAGE_HELP = "Training stage: sft, or dpo (= SFT then DPO on the same mixture)."


def _quiet() -> None:
    """Our rich bars replace the libraries' tqdm bars on the command line."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _config_file(path: Path | None) -> dict[str, Any]:
    from safemerge.utils.config import read_yaml_mapping

    return {} if path is None else read_yaml_mapping(path, "training config", "training settings such as lr, epochs")


def _build_config(kind: str, file: Path | None, flags: dict[str, Any], lora: dict[str, Any]) -> Any:
    from safemerge.train.config import DPOConfig, SFTConfig, load_config

    data = _config_file(file) | {k: v for k, v in flags.items() if v is not None and v != []}
    full = lora.pop("full", None)
    lora = {k: v for k, v in lora.items() if v is not None}
    if full:
        if lora:
            raise InputError(f"--no-lora with {', '.join('--lora-' + k for k in lora)}: choose LoRA or a full "
                             "fine-tune")
        data["lora"] = None  # explicit: a full fine-tune even where the model's size band defaults to LoRA
    elif lora or "lora" in data:
        data["lora"] = (data.get("lora") or {}) | lora
    return load_config(SFTConfig if kind == "sft" else DPOConfig, data, file or "command line")


def _print_run(out: Path) -> None:
    meta = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    typer.echo(f"{out}  ({meta['kind']}, {meta['n_examples']} examples, {meta['steps']} steps, "
               f"loss {meta['first_loss']} -> {meta['final_loss']})")


def register(app: typer.Typer) -> None:
    train = typer.Typer(help="Fine-tune models with SFT or DPO (TRL), and train the study's experts.",
                        no_args_is_help=True)
    recipe = typer.Typer(help="Train the study's experts on the built-in world (cached under --out).",
                         no_args_is_help=True)
    train.add_typer(recipe, name="recipe")
    app.add_typer(train, name="train")

    def _run(kind: str, model: str, data: list[str], out: Path, config: Path | None, force: bool,
             flags: dict[str, Any], lora: dict[str, Any]) -> None:
        _quiet()
        cfg = _build_config(kind, config, flags, lora)
        placement = cfg.placement()  # CUDA asked for without one: one line, before the model is read
        from safemerge.train import train_dpo, train_sft
        from safemerge.utils.gguf import resolve_model

        model = resolve_model(model)  # a .gguf file -> its converted (cached) dir; quantization_config dirs refused
        if (Path(model) / "config.json").is_file():  # the settings this run uses (bad inputs: the run reports them)
            from safemerge.train.presets import describe, with_size_defaults

            sized_cfg, record = with_size_defaults(model, cfg)
            typer.echo(describe(record, sized_cfg))
        typer.echo(f"device: {placement.device}, dtype: {placement.dtype}")

        fn = train_sft if kind == "sft" else train_dpo
        _print_run(fn(model, data, out, cfg, force=force))

    common: dict[str, Any] = dict(
        model=typer.Option(..., "--model", "-m", help="Starting model: a local HF model dir, a hub id or a .gguf "
                           "file (dequantized once into a cached HF dir)."),
        data=typer.Option(..., "--data", "-d", help="Training data: a JSONL file or HF dataset id (repeatable)."),
        out=typer.Option(..., "--out", "-o", help="Output model directory (written atomically)."),
        config=typer.Option(None, "--config", "-c", help="YAML/JSON file of settings; flags override it."),
        epochs=typer.Option(None, "--epochs", help="Passes over the data."),
        max_steps=typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
        lr=typer.Option(None, "--lr", help="Peak learning rate."),
        batch_size=typer.Option(None, "--batch-size", help="Examples per optimizer step."),
        grad_accum=typer.Option(None, "--grad-accum", help="Gradient accumulation steps."),
        max_length=typer.Option(None, "--max-length", help="Truncate examples to this many tokens."),
        seed=typer.Option(None, "--seed", help="Random seed."),
        lang=typer.Option(None, "--lang", help="Keep only records of this language code (repeatable)."),
        max_examples=typer.Option(None, "--max-examples", help="Use only the first N records."),
        lora_r=typer.Option(None, "--lora-r", help="Train a LoRA adapter of this rank (merged into the output)."),
        lora_alpha=typer.Option(None, "--lora-alpha", help="LoRA alpha (default 16)."),
        lora_targets=typer.Option(None, "--lora-targets", help="Comma-separated module names, or all-linear."),
        no_lora=typer.Option(None, "--no-lora", help="Full fine-tune, also where the model's size band "
                             "defaults to LoRA (models of 10M+ parameters)."),
        save_adapter=typer.Option(None, "--save-adapter/--no-save-adapter", help="Also write the LoRA adapter."),
        threads=typer.Option(None, "--threads", help="torch CPU threads (1 is fastest for tiny models on a busy CPU)."),
        device=typer.Option(None, "--device", help=DEVICE_HELP + " Default: auto (CUDA: bf16, activation "
                            "checkpointing; CPU: fp32)."),
        dtype=typer.Option(None, "--dtype", help=DTYPE_HELP),
        force=typer.Option(False, "--force", help="Retrain even if a finished identical run exists."),
    )

    def _flags(epochs: float | None, max_steps: int | None, lr: float | None, batch_size: int | None,
               grad_accum: int | None, max_length: int | None, seed: int | None, lang: list[str] | None,
               max_examples: int | None, threads: int | None, device: str | None = None,
               dtype: str | None = None) -> dict[str, Any]:
        return dict(epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                    max_length=max_length, seed=seed, languages=lang or None, max_examples=max_examples,
                    threads=threads, device=device, dtype=dtype)

    def _lora(r: int | None, alpha: float | None, targets: str | None, save: bool | None,
              full: bool | None = None) -> dict[str, Any]:
        tm: Any = None if targets is None else (targets if targets == "all-linear" else targets.split(","))
        return dict(r=r, alpha=alpha, target_modules=tm, save_adapter=save, full=full)

    @train.command("sft")
    def sft_cmd(
        model: str = common["model"], data: list[str] = common["data"], out: Path = common["out"],
        config: Path | None = common["config"], epochs: float | None = common["epochs"],
        max_steps: int | None = common["max_steps"], lr: float | None = common["lr"],
        batch_size: int | None = common["batch_size"], grad_accum: int | None = common["grad_accum"],
        max_length: int | None = common["max_length"], seed: int | None = common["seed"],
        lang: list[str] | None = common["lang"], max_examples: int | None = common["max_examples"],
        lora_r: int | None = common["lora_r"], lora_alpha: float | None = common["lora_alpha"],
        lora_targets: str | None = common["lora_targets"], save_adapter: bool | None = common["save_adapter"],
        no_lora: bool | None = common["no_lora"],
        threads: int | None = common["threads"], device: str | None = common["device"],
        dtype: str | None = common["dtype"], force: bool = common["force"],
    ) -> None:
        """Supervised fine-tuning (loss on the assistant reply only, chat template from the tokenizer)."""
        _run("sft", model, data, out, config, force,
             _flags(epochs, max_steps, lr, batch_size, grad_accum, max_length, seed, lang, max_examples, threads,
                    device, dtype),
             _lora(lora_r, lora_alpha, lora_targets, save_adapter, no_lora))

    @train.command("dpo")
    def dpo_cmd(
        model: str = common["model"], data: list[str] = common["data"], out: Path = common["out"],
        config: Path | None = common["config"], epochs: float | None = common["epochs"],
        max_steps: int | None = common["max_steps"], lr: float | None = common["lr"],
        batch_size: int | None = common["batch_size"], grad_accum: int | None = common["grad_accum"],
        max_length: int | None = common["max_length"], seed: int | None = common["seed"],
        lang: list[str] | None = common["lang"], max_examples: int | None = common["max_examples"],
        lora_r: int | None = common["lora_r"], lora_alpha: float | None = common["lora_alpha"],
        lora_targets: str | None = common["lora_targets"], save_adapter: bool | None = common["save_adapter"],
        no_lora: bool | None = common["no_lora"],
        beta: float | None = typer.Option(None, "--beta", help="DPO beta (KL strength to the reference)."),
        threads: int | None = common["threads"], device: str | None = common["device"],
        dtype: str | None = common["dtype"], force: bool = common["force"],
    ) -> None:
        """Direct preference optimisation (prompt/chosen/rejected); the reference is the starting model."""
        flags = _flags(epochs, max_steps, lr, batch_size, grad_accum, max_length, seed, lang, max_examples, threads,
                       device, dtype)
        _run("dpo", model, data, out, config, force, flags | {"beta": beta},
             _lora(lora_r, lora_alpha, lora_targets, save_adapter, no_lora))

    world_opt = typer.Option(None, "--world", "-w", help="World directory (default: the built-in default world).")
    root_opt = typer.Option(Path("experts"), "--out", "-o", help="Root directory of the cached experts.")
    stage_opt = typer.Option("sft", "--stage", help=_STAGE_HELP)
    device_opt = typer.Option(None, "--device", help=DEVICE_HELP + " Default: auto.")
    dtype_opt = typer.Option(None, "--dtype", help=DTYPE_HELP)

    def _settings(device: str | None, dtype: str | None) -> Any:
        """The recipes' settings with ``--device`` / ``--dtype`` on both stages (None: the defaults, device auto)."""
        if device is None and dtype is None:
            return None
        from safemerge.train.config import DPOConfig, SFTConfig, load_config
        from safemerge.train.recipes import RecipeSettings

        base = RecipeSettings()
        given = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        sft = load_config(SFTConfig, base.sft.model_dump(mode="json", exclude_unset=True) | given, "command line")
        dpo = load_config(DPOConfig, base.dpo.model_dump(mode="json", exclude_unset=True) | given, "command line")
        sft.placement()  # CUDA asked for without one: one line, before anything is trained
        return base.model_copy(update={"sft": sft, "dpo": dpo})

    def _world(path: Path | None) -> Any:
        _quiet()
        from safemerge.train.recipes import as_world

        if path is not None:
            return as_world(path)
        from safemerge.data.world import default_world

        return default_world()

    def _stage(stage: str) -> Any:
        if stage not in ("sft", "dpo"):
            raise InputError(f"--stage {stage!r}: choose sft or dpo")
        return stage

    @recipe.command("mixture")
    def mixture_cmd(
        world: Path | None = world_opt, out: Path = root_opt, stage: str = stage_opt,
        fraction: float = typer.Option(DEFAULT_SAFETY_FRACTION, "--fraction", "-f", help="Share of safety examples, in [0, 1]."),
        device: str | None = device_opt, dtype: str | None = dtype_opt,
    ) -> None:
        """A data-mixing baseline: general + benign data with FRACTION safety (refusal) data."""
        from safemerge.train.recipes import mixture

        settings = _settings(device, dtype)
        _print_run(mixture(_world(world), fraction, _stage(stage), out, settings))

    @recipe.command("expert")
    def expert_cmd(
        world: Path | None = world_opt, out: Path = root_opt, stage: str = stage_opt,
        objective: str = typer.Option(..., "--objective", help="general (0 % safety) or safety (100 %)."),
        device: str | None = device_opt, dtype: str | None = dtype_opt,
    ) -> None:
        """An objective expert for objective-based merging: general-only or safety-only."""
        from safemerge.train.recipes import objective_expert

        settings = _settings(device, dtype)
        _print_run(objective_expert(_world(world), objective, _stage(stage), out, settings))  # type: ignore[arg-type]

    @recipe.command("monolingual")
    def mono_cmd(
        world: Path | None = world_opt, out: Path = root_opt, stage: str = stage_opt,
        lang: str = typer.Option(..., "--lang", help="Language code of the expert (e.g. fr)."),
        device: str | None = device_opt, dtype: str | None = dtype_opt,
    ) -> None:
        """A language expert: that language's 15 % safety mixture only."""
        from safemerge.train.recipes import monolingual

        settings = _settings(device, dtype)
        _print_run(monolingual(_world(world), lang, _stage(stage), out, settings))

    @recipe.command("dpo-from")
    def dpo_from_cmd(
        model: Path = typer.Option(..., "--model", "-m", help="SFT model dir (or .gguf file) to continue from "
                                   "(e.g. a merge)."),
        world: Path | None = world_opt, out: Path = root_opt,
        fraction: float = typer.Option(DEFAULT_SAFETY_FRACTION, "--fraction", "-f", help="Share of safety pairs, in [0, 1]."),
        device: str | None = device_opt, dtype: str | None = dtype_opt,
    ) -> None:
        """A DPO stage on top of any SFT model with the world's preference pairs (SFT -> merge -> DPO)."""
        from safemerge.train.recipes import dpo_from
        from safemerge.utils.gguf import resolve_model

        settings = _settings(device, dtype)
        _print_run(dpo_from(resolve_model(model), _world(world), fraction, out, settings))

    @recipe.command("all")
    def all_cmd(world: Path | None = world_opt, out: Path = root_opt, device: str | None = device_opt,
                dtype: str | None = dtype_opt) -> None:
        """Every expert the study needs: 0/15/100 % mixtures (SFT and DPO) and six monolingual experts."""
        from safemerge.train.recipes import default_expert_set

        settings = _settings(device, dtype)
        for name, path in default_expert_set(_world(world), out, settings).items():
            typer.echo(f"{name}\t{path}")
