"""``safemerge search SPEC.yaml --out DIR``: safety-aware merge-coefficient search."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from safemerge.utils.device import DEVICE_HELP


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search_cmd(
        spec: Path = typer.Argument(..., help="Search spec YAML (pool, method, space, objective, optimizer)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (candidates, state, best.yaml)."),
        workers: int = typer.Option(None, "--workers", "-w", min=0,
                                    help="Evaluate candidates on N Ray workers (default: the spec's, 0 = here)."),
        resume: bool = typer.Option(False, "--resume", help="Continue a search stored in --out."),
        merge_best: bool = typer.Option(False, "--merge-best", help="Also merge the best config to OUT/merged."),
        check: bool = typer.Option(False, "--check", help="Only validate the spec, pool and datasets, then exit."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP + " With --workers, each Ray worker takes "
                                   "GPUs / workers of the cluster's GPUs."),
        dtype: str = typer.Option("float32", "--dtype", help="Scoring dtype: float32 (default: exact; a GPU's "
                                  "losses match the CPU's to ~1e-5), bfloat16, float16, tf32 or auto (bfloat16 on "
                                  "a bf16 GPU). Anything but float32 is faster on a GPU and NOT bit-identical to "
                                  "fp32; result.json records it."),
    ) -> None:
        """Search merge coefficients minimising L_safety + alpha * L_domain; writes OUT/best.yaml."""
        os.environ.setdefault("TQDM_DISABLE", "1")
        from safemerge.search.runner import prepare, run_search
        from safemerge.search.spec import load_spec
        from safemerge.utils.device import check_device_name, check_dtype_name, resolve

        device, dtype = check_device_name(device), check_dtype_name(dtype)
        loaded = load_spec(spec)
        if not (workers if workers is not None else loaded.workers):
            resolve(device, dtype)  # in this process: CUDA asked for without one is a one-line error now
        if merge_best:
            loaded = loaded.model_copy(update={"output": loaded.output.model_copy(update={"merge_best": True})})
        if check:
            prep = prepare(loaded)
            typer.echo(f"ok: {len(prep.space.genes)} genes ({', '.join(prep.space.labels()[:6])}"
                       f"{', ...' if prep.space.dim > 6 else ''}), {len(prep.safety)} safety and "
                       f"{len(prep.domain)} domain examples, {prep.num_layers} layers")
            return
        result = run_search(loaded, out, resume=resume, workers=workers, show_progress=not quiet, device=device,
                            dtype=dtype)
        _print_summary(result)


def _print_summary(result) -> None:  # noqa: ANN001 - SearchResult, imported lazily
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"merge search: {result.out_dir}")
    for col in ("model", "objective", "safety loss", "domain loss", "feasible"):
        table.add_column(col)
    for name, s in result.pool.items():
        table.add_row(f"pool: {name}", f"{s['objective']:.4f}", f"{s['safety']:.4f}", f"{s['domain']:.4f}", "-")
    b = result.best
    table.add_row(f"best #{b['index']}", f"{b['objective']:.4f}", f"{b['safety']:.4f}", f"{b['domain']:.4f}",
                  "yes" if b["feasible"] else "no")
    console = Console()
    console.print(table)
    if result.pareto:
        console.print(f"Pareto front (safety, domain): {len(result.pareto)} candidates in result.json")
    console.print(f"best config: {result.best_yaml}" + (f"; merged: {result.merged}" if result.merged else ""))
    scoring = json.loads((result.out_dir / "result.json").read_text()).get("scoring") if (
        result.out_dir / "result.json").is_file() else None
    if scoring:
        note = "" if scoring.get("fp32") else " (not bit-identical to fp32 scoring)"
        console.print(f"scored on {scoring['device']} in {scoring['dtype']}{note}")
