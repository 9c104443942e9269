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
        model: Path = typer.Argument(..., help="Model to evaluate: a local Hugging Face model directory or a .gguf "
                                     "file (dequantized once into a cached HF dir)."),
        suite: str = typer.Option("world", "--suite", "-s", help="'world' (built-in world test split), a world "
                                  "directory, or a suite YAML (JSONL / HF datasets with column mapping)."),
        judge: str = typer.Option("auto", "--judge", "-j", help="Judge: auto (default: world for the built-in "
                                  "world's models, rules for real models), world, rules, openai or llamaguard."),
        judge_model: str = typer.Option(None, "--judge-model", help="openai: model name on the endpoint "
                                        "(default: the first it serves); llamaguard: the guard model directory."),
        judge_url: str = typer.Option(None, "--judge-url", help="openai: base URL of an OpenAI-compatible "
                                      "endpoint, e.g. http://127.0.0.1:8000/v1 (default: the OpenAI API)."),
        judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="openai: name of the "
                                          "environment variable holding the API key (never logged)."),
        reference: str = typer.Option(None, "--reference", "-r", help="Reference model dir or .gguf file (or a "
                                      "results.json / eval output dir) for harm_change and win_rate."),
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
        from safemerge.evaluate.report import print_table
        from safemerge.utils.gguf import is_gguf_path, resolve_model

        model = resolve_model(model)  # a .gguf file -> its converted (cached) dir; quantization_config dirs refused
        if judge == "llamaguard" and judge_model:
            judge_model = resolve_model(judge_model)
        judge_options: dict[str, Any] = {}
        if judge == "openai":
            judge_options = {"model": judge_model, "base_url": judge_url, "api_key_env": judge_key_env}
        elif judge == "llamaguard":
            judge_options = {"model": judge_model}
        elif judge_model or judge_url:  # world / rules / auto are offline and take neither
            raise InputError(f"--judge {judge} takes no --judge-model / --judge-url (offline judge); drop them or "
                             "use --judge openai / llamaguard")
        ref: Any = None
        if reference:
            rp = Path(reference)
            if is_gguf_path(rp):
                ref = resolve_model(rp)
            elif rp.is_file() or (rp / "results.json").is_file():
                ref = EvalReport.load(rp)
            elif (rp / "config.json").is_file():
                ref = resolve_model(rp)
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
        model: Path = typer.Argument(..., help="Local Hugging Face model directory (or .gguf file, dequantized once "
                                     "into a cached HF dir) to serve."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default loopback only). Any "
                                 "other address (e.g. 0.0.0.0) requires --api-key-env."),
        port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
        name: str = typer.Option(None, "--name", help="Model id reported by /v1/models (default: dir name, or "
                                 "the .gguf file's name without its suffix)."),
        api_key_env: str = typer.Option(None, "--api-key-env", help="Name of the environment variable holding the "
                                        "API key; every request must then send 'Authorization: Bearer <key>' (401 "
                                        "otherwise). Required when --host is not loopback. The key is never logged."),
        require_api_key: bool = typer.Option(False, "--require-api-key", envvar="SAFEMERGE_REQUIRE_API_KEY",
                                             help="Require the API key on loopback too (off loopback it always is)."),
        max_request_bytes: int = typer.Option(1 << 20, "--max-request-bytes", min=1, help="Refuse request bodies "
                                              "larger than this with 413, before reading them (default 1 MiB)."),
    ) -> None:
        """Serve MODEL over the OpenAI chat-completions protocol (/v1/chat/completions, /v1/models)."""
        _quiet()
        from safemerge.evaluate.serve import api_key_from_env
        from safemerge.utils.gguf import is_gguf_path, resolve_model

        api_key = api_key_from_env(host, api_key_env, require_api_key)  # before the model is loaded

        if is_gguf_path(model):
            name = name or model.stem
        model = resolve_model(model)
        if not (model / "config.json").is_file():
            raise InputError(f"{model}: not a model directory (no config.json); pass a local HF model dir")
        from safemerge.evaluate.serve import make_server

        server = make_server(model, host=host, port=port, name=name, log_level="info", api_key=api_key,
                             max_request_bytes=max_request_bytes)
        typer.echo(f"serving {model} at http://{host}:{port}/v1"
                   + (f" (API key from ${api_key_env} required)" if api_key else ""))
        server.run()
