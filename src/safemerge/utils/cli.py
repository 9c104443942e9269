"""``safemerge convert SRC OUT``: a GGUF file (or an HF dir with a leftover quantization_config) -> a clean HF dir."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert_cmd(
        src: Path = typer.Argument(..., help="A llama.cpp .gguf file, or a Hugging Face model directory (e.g. one "
                                   "saved with a leftover quantization_config)."),
        out: Path = typer.Argument(..., help="Output directory: a plain Hugging Face model (safetensors, config "
                                   "without quantization_config, tokenizer + chat template, generation config)."),
        dtype: str = typer.Option("float32", "--dtype", help="Weight dtype of the output: float32, bfloat16 or "
                                  "float16 (GGUF tensors are dequantized to float32 first)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists (atomically)."),
    ) -> None:
        """Convert a GGUF file (dequantized) or a quantization_config-tagged HF dir into a clean HF model dir."""
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from safemerge.utils.gguf import convert

        typer.echo(f"converted model written to {convert(src, out, dtype, overwrite=overwrite)}")
