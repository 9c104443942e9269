"""`safemerge testbed ...`: build and inspect the built-in multilingual world; `safemerge data prepare`: a study's
inputs from public datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer

testbed_app = typer.Typer(help="The built-in multilingual world (data, tokenizer, tiny base model).",
                          no_args_is_help=True)


@testbed_app.command("build")
def build_cmd(
    out_dir: Path = typer.Argument(..., help="Output directory (new or empty; a finished identical world is reused)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world (entities, splits, base model)."),
    preset: str = typer.Option("default", "--preset", help="default (the study's world) or tiny (for tests)."),
    langs: str = typer.Option("", "--langs", help="Comma-separated subset of en,fr,es,ru,hi,ar (default: all)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Build the world into OUT_DIR: data/*.jsonl, tokenizer/, base/, corpus/, datacard.md/json, world.json."""
    from safemerge.data.world import WorldConfig, build_world

    overrides: dict = {"seed": seed}
    if langs:
        overrides["languages"] = langs
    config = WorldConfig.preset_config(preset, **overrides)
    world = build_world(out_dir, config, show_progress=not quiet)
    _print_summary(world.root)


@testbed_app.command("info")
def info_cmd(
    world_dir: Path = typer.Argument(..., help="A built world directory."),
    as_json: bool = typer.Option(False, "--json", help="Print world.json instead of the summary."),
) -> None:
    """Show a built world's counts, sizes and build timings."""
    from safemerge.data.world import World

    world = World.load(world_dir)
    if as_json:
        typer.echo(json.dumps(world.info, indent=2, ensure_ascii=False))
    else:
        _print_summary(world.root)


def _print_summary(root: Path) -> None:
    from safemerge.data.world import World

    info = World.load(root).info
    cfg = info["config"]
    typer.echo(f"world {root} (preset {cfg['preset']}, seed {cfg['seed']}, key {info['key'][:16]})")
    typer.echo(f"languages: {', '.join(cfg['languages'])}")
    for kind, splits in info["counts"].items():
        typer.echo(f"  {kind:8s} " + "  ".join(f"{s}={c['total']}" for s, c in splits.items()))
    b, t = info["base"], info["timings"]
    typer.echo(f"tokenizer: {info['tokenizer']['vocab_size']} tokens; base: {b['params']:,} params, "
               f"final pretraining loss {b['final_loss']}")
    typer.echo(f"build time: {t['total_s']} s (data {t['data_s']}, tokenizer {t['tokenizer_s']}, "
               f"pretrain {t['pretrain_s']})")


data_app = typer.Typer(help="Datasets -> a study's inputs (SFT mixtures, DPO pairs, monolingual splits, eval sets).",
                       no_args_is_help=True)


@data_app.command("prepare")
def prepare_cmd(
    spec: Path = typer.Argument(..., help="Prepare spec YAML (languages, sources, outputs); see docs/data.md."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: the spec's out:, relative to "
                                    "the spec). Replaced as a whole; only a new, empty or earlier prepare folder."),
    check: bool = typer.Option(False, "--check", help="Only validate the spec and the source paths; read nothing."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Read each source dataset through its adapter and write the outputs and a datacard (bad rows counted)."""
    import os

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from safemerge.data.prepare.build import check_sources, prepare, summary_lines
    from safemerge.data.prepare.spec import load_prepare_spec, output_files

    if check:
        loaded, root = load_prepare_spec(spec)
        for line in check_sources(loaded, root):
            typer.echo(f"source {line}")
        for name, o in loaded.outputs.items():
            typer.echo(f"output {name} ({o.type}): " + ", ".join(f for f, _, _ in output_files(name, o,
                                                                                               loaded.languages)))
        typer.echo("ok: spec valid")
        return
    res = prepare(spec, out, show_progress=not quiet)
    for line in summary_lines(res):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(testbed_app, name="testbed")
    app.add_typer(data_app, name="data")
