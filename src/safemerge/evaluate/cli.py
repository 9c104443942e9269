"""``safemerge eval`` (evaluate a model per language) and ``safemerge serve`` (OpenAI-compatible server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from safemerge.errors import InputError


def _quiet() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: Path = typer.Argument(..., help="Model to evaluate: a local Hugging Face model directory."),
        suite: str = typer.Option("world", "--suite", "-s", help="'world' (built-in world test split), a world "
                                  "directory, or a suite YAML (JSONL / HF datasets with column mapping)."),
        judge: str = typer.Option("world", "--judge", "-j", help="Judge: world, openai or llamaguard."),
        judge_model: str = typer.Option(None, "--judge-model", help="openai: model name on the endpoint "
                                        "(default: the first it serves); llamaguard: the guard model directory."),
        judge_url: str = typer.Option(None, "--judge-url", help="openai: base URL of an OpenAI-compatible "
                                      "endpoint, e.g. http://127.0.0.1:8000/v1 (default: the OpenAI API)."),
        judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="openai: name of the "
                                          "environment variable holding the API key (never logged)."),
        reference: str = typer.Option(None, "--reference", "-r", help="Reference model dir (or a results.json "
                                      "/ eval output dir) for harm_change and win_rate."),
        out: Path = typer.Option(None, "--out", "-o", help="Write results.json, summary.md, summary.csv here."),
        langs: str = typer.Option(None, "--langs", help="Comma-separated languages to evaluate, e.g. en,fr."),
        limit: int = typer.Option(None, "--limit", min=1, help="At most N prompts per set and language."),
        max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="Answer length cap (default: "
                                           "the suite's)."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Generation / scoring batch size."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap (and sampling) seed."),
        n_boot: int = typer.Option(1000, "--n-boot", min=10, help="Bootstrap resamples for the 95 % CIs."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Regenerate answers instead of using the cache."),
    ) -> None:
        """Evaluate MODEL: harm rate, alignment, over-refusal, accuracy, win rate, wrong language, per language."""
        _quiet()
        from safemerge.evaluate.harness import EvalReport, evaluate_model
        from safemerge.evaluate.tables import print_table

        judge_options: dict[str, Any] = {}
        if judge == "openai":
            judge_options = {"model": judge_model, "base_url": judge_url, "api_key_env": judge_key_env}
        elif judge == "llamaguard":
            judge_options = {"model": judge_model}
        ref: Any = None
        if reference:
            rp = Path(reference)
            if rp.is_file() or (rp / "results.json").is_file():
                ref = EvalReport.load(rp)
            elif (rp / "config.json").is_file():
                ref = rp
            else:
                raise InputError(f"{rp}: --reference is neither a model directory nor eval results; fix the path")
        report = evaluate_model(
            model, suite=suite, judge=judge, reference=ref, judge_options=judge_options,
            langs=[x.strip() for x in langs.split(",") if x.strip()] if langs else None, limit=limit,
            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, n_boot=n_boot, cache=not no_cache,
        )
        print_table(report)
        if out is not None:
            report.save(out)
            typer.echo(f"wrote {out}/results.json, summary.md, summary.csv")

    @app.command("serve")
    def serve_cmd(
        model: Path = typer.Argument(..., help="Local Hugging Face model directory to serve."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default loopback only)."),
        port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
        name: str = typer.Option(None, "--name", help="Model id reported by /v1/models (default: dir name)."),
    ) -> None:
        """Serve MODEL over the OpenAI chat-completions protocol (/v1/chat/completions, /v1/models)."""
        _quiet()
        if not (model / "config.json").is_file():
            raise InputError(f"{model}: not a model directory (no config.json); pass a local HF model dir")
        from safemerge.evaluate.serve import make_server

        typer.echo(f"serving {model} at http://{host}:{port}/v1")
        make_server(model, host=host, port=port, name=name, log_level="info").run()
