"""``safemerge search SPEC.yaml --out DIR``: safety-aware merge-coefficient search."""

from __future__ import annotations

import os
from pathlib import Path

import typer


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
    ) -> None:
        """Search merge coefficients minimising L_safety + alpha * L_domain; writes OUT/best.yaml."""
        os.environ.setdefault("TQDM_DISABLE", "1")
        from safemerge.search.runner import prepare, run_search
        from safemerge.search.spec import load_spec

        loaded = load_spec(spec)
        if merge_best:
            loaded = loaded.model_copy(update={"output": loaded.output.model_copy(update={"merge_best": True})})
        if check:
            prep = prepare(loaded)
            typer.echo(f"ok: {len(prep.space.genes)} genes ({', '.join(prep.space.labels()[:6])}"
                       f"{', ...' if prep.space.dim > 6 else ''}), {len(prep.safety)} safety and "
                       f"{len(prep.domain)} domain examples, {prep.num_layers} layers")
            return
        result = run_search(loaded, out, resume=resume, workers=workers, show_progress=not quiet)
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
