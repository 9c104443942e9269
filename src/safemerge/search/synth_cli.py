"""``safemerge synth SPEC.yaml --out DIR``: synthetic safety / domain data written by the merge pool."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_cmd(
        spec: Path = typer.Argument(..., help="Synth spec YAML (pool, languages, judge, safety, domain, filters)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: safety.jsonl, domain.jsonl, datacard."),
        check: bool = typer.Option(False, "--check", help="Only check the spec and everything it references "
                                   "(models, example files, judge) and print the planned requests; loads no "
                                   "model."),
    ) -> None:
        """Generate synthetic safety data (pool refusals to generated harmful questions) and domain data."""
        os.environ.setdefault("TQDM_DISABLE", "1")
        from safemerge.data.synth import domain_requests, safety_requests
        from safemerge.search.synth import check_synth_spec, synthesize

        loaded = check_synth_spec(spec)  # everything a run reads, before any model loads
        if check:
            n_s = len(safety_requests(loaded)) if loaded.safety else 0
            n_d = len(domain_requests(loaded)) if loaded.domain else 0
            typer.echo(f"ok: {n_s} safety and {n_d} domain questions to write in {loaded.languages}")
            return
        res = synthesize(loaded, out, check=False)
        for kind in ("safety", "domain"):
            c = res.datacard.get(kind)
            if c is not None:
                dropped = ", ".join(f"{k} {v}" for k, v in c["dropped_total"].items()) or "none"
                typer.echo(f"{kind}: kept {c['kept_total']}/{c['requested']} "
                           f"(written {c['questions_written']}; dropped: {dropped})")
        typer.echo(f"wrote {out}/datacard.md")
