"""``safemerge study [SPEC.yaml] --out runs/NAME``: the mix-vs-merge study and its report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from safemerge.errors import ConfigError, InputError


def register(app: typer.Typer) -> None:
    @app.command("study")
    def study(
        spec: Optional[Path] = typer.Argument(
            None, help="Study spec YAML (see docs/study.md, examples/study_aya.yaml); default: the built-in study."),
        out: Optional[Path] = typer.Option(
            None, "--out", "-o", help="Output folder (cached and resumable); default: runs/<spec name>."),
        preset: str = typer.Option(
            "default", "--preset", help="Built-in study when no SPEC is given: 'default' (the papers' study on the "
                                        "built-in world) or 'smoke' (tiny world, 2 languages, for tests)."),
        report_only: bool = typer.Option(
            False, "--report-only", help="Only re-render report.md/report.html from OUT/results.json."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        check: bool = typer.Option(
            False, "--check", help="Validate the spec and everything it references (model folders, data and suite "
                                   "files, the judge, search options) without training anything; exit 0 if it "
                                   "would start."),
    ) -> None:
        """Run (or resume) the study: train -> merge -> search -> evaluate every model vs the base -> report.

        Everything is cached under OUT: interrupt it any time and run the same command again to continue.
        """
        from safemerge.study.spec import PRESETS, load_spec, preflight

        if report_only:
            if out is None or not (out / "results.json").is_file():
                raise InputError(f"{out}/results.json not found; run the study into --out first")
            from safemerge.study.report import rebuild_report

            paths = rebuild_report(out)
            typer.echo(f"report: {paths['markdown']} and {paths['html']}")
            return
        if spec is not None:
            study_spec, source = load_spec(spec), str(spec)
        else:
            if preset not in PRESETS:
                raise ConfigError(f"--preset {preset!r}: unknown preset; choose one of {', '.join(PRESETS)}")
            study_spec, source = PRESETS[preset](), f"preset {preset}"
        preflight(study_spec, source)
        if check:
            from safemerge.study.runner import plan_summary

            typer.echo(f"{source}: ok: {plan_summary(study_spec)}")
            return
        out = out or Path("runs") / study_spec.name

        from transformers.utils import logging as hf_logging

        from safemerge.study.runner import run_study

        hf_logging.disable_progress_bar()  # the study shows its own progress; no per-checkpoint bars

        run_study(study_spec, out, quiet=quiet, command=["safemerge", *sys.argv[1:]])
        typer.echo(f"report: {out / 'report.md'} and {out / 'report.html'}")
