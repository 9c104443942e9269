"""Model loading, chat formatting and batched generation.

Generation goes through transformers with the tokenizer's chat template and left padding, greedy by default
(deterministic), fp32 on CPU / bf16 on GPU. When vLLM is installed, a GPU is present and the model is a local
directory, vLLM is used instead (import-guarded; same chat template, same greedy decoding).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemerge.errors import InputError
from safemerge.utils.hashing import hash_dir, hash_obj
from safemerge.utils.progress import make_progress

_MODEL_FILES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".tiktoken")


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated; part of every generation cache key."""

    max_new_tokens: int = 64
    batch_size: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def key(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("batch_size")  # batching does not change greedy answers
        return d


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, plus where it came from (a directory, or None for in-memory models)."""

    model: Any
    tokenizer: Any
    path: Path | None = None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str | os.PathLike, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Load a local HF causal LM directory (fp32 on CPU, bf16 on GPU unless ``dtype`` says otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise InputError(f"{p}: not a model directory (no config.json); pass a local Hugging Face model dir")
    device = device or default_device()
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    try:
        tok = AutoTokenizer.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch_dtype).to(device)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot load model or tokenizer ({str(exc).splitlines()[0]}); check the directory")
    model.eval()
    return LoadedModel(model, tok, p)


def model_hash(model: Any, tokenizer: Any = None, path: Path | None = None) -> str:
    """Content hash of a model: its directory files, or (in memory) its tensors + tokenizer vocab/template."""
    if path is not None:
        return hash_dir(path, suffixes=_MODEL_FILES)
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    if tokenizer is not None:
        h.update(hash_obj([tokenizer.get_vocab(), getattr(tokenizer, "chat_template", None)]).encode())
    return h.hexdigest()


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]] | str) -> str:
    """The generation prompt text for a user message (or a message list), via the chat template.

    Tokenizers without a chat template get the plain text followed by a newline.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return "\n".join(m["content"] for m in messages) + "\n"


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        ids += e if isinstance(e, list) else ([e] if e is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[dict[str, str]]],
    settings: GenerationSettings = GenerationSettings(),
    description: str = "generating",
    progress: bool = True,
    formatted: bool = False,
) -> list[str]:
    """Answer every prompt (user message or message list); returns decoded answers in input order.

    Prompts are sorted by length and generated in left-padded batches; generation stops at EOS. With
    ``formatted`` the prompts are complete model inputs (no chat template applied).
    """
    import torch

    texts = [str(p) for p in prompts] if formatted else [chat_prompt(tokenizer, p) for p in prompts]
    if not texts:
        return []
    pad_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    out: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    eos = _eos_ids(model, tokenizer)
    gen_kwargs: dict[str, Any] = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
    )
    if settings.do_sample:
        gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    was_training = model.training
    model.eval()
    try:
        with make_progress(disable=not progress, transient=True) as bar, torch.inference_mode():
            task = bar.add_task(description, total=len(texts))
            for start in range(0, len(order), settings.batch_size):
                idx = order[start : start + settings.batch_size]
                enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(device) for k, v in enc.items()}
                if settings.do_sample:
                    torch.manual_seed(settings.seed + start)
                gen = model.generate(**enc, **gen_kwargs)
                new = gen[:, enc["input_ids"].shape[1] :]
                for i, row in zip(idx, new.tolist()):
                    out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
                bar.advance(task, len(idx))
    finally:
        tokenizer.padding_side = pad_side
        model.train(was_training)
    return out


def vllm_available() -> bool:
    """True when vLLM is importable and a CUDA GPU is present."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def generate_vllm(path: Path, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:  # pragma: no cover
    """Generate with vLLM (GPU only); same chat template and sampling settings as :func:`generate`."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(path), seed=settings.seed)
    params = SamplingParams(
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature if settings.do_sample else 0.0,
        top_p=settings.top_p if settings.do_sample else 1.0,
        seed=settings.seed,
    )
    outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=True)
    return [o.outputs[0].text.strip() for o in outs]
