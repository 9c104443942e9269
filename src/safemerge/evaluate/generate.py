"""Model loading, chat formatting and batched generation.

Generation goes through transformers with the tokenizer's chat template and left padding, greedy by default
(deterministic), in batches (``GenerationSettings.batch_size``, 64 by default) on the model's device: fp32 on the
CPU, bf16 on a GPU (``--device`` / ``--dtype``, :mod:`safemerge.utils.device`). When vLLM is installed, the device is
CUDA and the model is a local directory, vLLM is used instead (:func:`generate_vllm`; imported lazily, so this
module never needs it): one engine per model, torn down before the next (:func:`release_vllm`); same chat template,
same greedy decoding, the same list of answers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemerge.errors import InputError
from safemerge.utils.device import release_cuda_memory, resolve_device, resolve_dtype, torch_dtype
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
    """``--device auto``: ``cuda`` when torch sees a CUDA device, else ``cpu``."""
    return resolve_device("auto")


def load_model(path: str | os.PathLike, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Load a local HF causal LM directory onto ``device`` (default auto) in ``dtype`` (default auto: fp32 on the
    CPU, bf16 on a GPU that supports it; :mod:`safemerge.utils.device`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise InputError(f"{p}: not a model directory (no config.json); pass a local Hugging Face model dir")
    device = resolve_device(device or "auto")
    weights = torch_dtype(resolve_dtype(dtype or "auto", device))
    try:
        tok = AutoTokenizer.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p, dtype=weights).to(device)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot load model or tokenizer ({str(exc).splitlines()[0]}); check the directory")
    model.eval()
    return LoadedModel(model, tok, p)


def model_source(path: str | os.PathLike, placement: Any) -> Any:
    """What ``evaluate_model`` should get for a model directory evaluated on ``placement`` (a
    :class:`~safemerge.utils.device.Placement`): the directory itself where the harness's own loading gives that
    placement (``--device auto`` / ``--dtype auto``, or the same spelled out), so a cached evaluation loads nothing
    and a CUDA machine with vLLM generates with vLLM; else the model loaded here on ``placement`` (generated with
    transformers, in batches)."""
    from safemerge.utils.device import resolve

    if placement == resolve("auto", "auto"):
        return Path(path)
    return load_model(path, placement.device, placement.dtype)


def answer_cache_root(placement: Any) -> Path | None:
    """The answer cache for ``placement`` (``evaluate_model(cache_root=...)``): the default one (None) for fp32, one
    per other dtype under ``cache_dir()/eval-<dtype>``: answers are cached by model content, prompts and settings,
    and bf16 / fp16 / TF32 answers differ from fp32 ones, so neither may be served for the other."""
    if placement.exact_fp32:
        return None
    from safemerge.utils.paths import cache_dir

    return cache_dir() / f"eval-{placement.dtype}"


def generator_name(source: Any) -> str:
    """``vllm`` or ``transformers``: what generates the answers of ``source`` (from :func:`model_source`)."""
    return "vllm" if isinstance(source, Path) and vllm_available() else "transformers"


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


def vllm_available(device: str | None = None) -> bool:
    """True when the device (``device``, default auto) is CUDA and vLLM imports. Never imports vLLM on the CPU."""
    dev = resolve_device(device or "auto")
    if not dev.startswith("cuda"):
        return False
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or built for another torch / CUDA: use transformers
        return False
    return True


def _stop_ids(path: Path) -> list[int]:
    """The EOS ids of a model directory's ``generation_config.json`` and ``config.json`` (the end of turn a
    fine-tune writes there): vLLM otherwise stops only at the tokenizer's EOS."""
    import json

    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        f = path / name
        if f.is_file():
            e = json.loads(f.read_text(encoding="utf-8")).get("eos_token_id")
            ids += e if isinstance(e, list) else ([e] if isinstance(e, int) else [])
    return sorted(set(ids))


def generate_vllm(path: Path, prompts: Sequence[str | Sequence[dict[str, str]]], settings: GenerationSettings,
                  dtype: str | None = None, formatted: bool = False,
                  engine_options: dict[str, Any] | None = None) -> list[str]:  # pragma: no cover - GPU + vLLM only
    """Answer ``prompts`` with vLLM (CUDA only) exactly as :func:`generate` does (same chat template, greedy unless
    ``settings.do_sample``, stop at the model's EOS / end of turn, special tokens skipped, answers stripped, input
    order). One engine for this model, torn down before returning (:func:`release_vllm`), so the next model gets
    the whole GPU. ``dtype``: a :mod:`safemerge.utils.device` dtype (default auto: bf16 where supported)."""
    from vllm import LLM, SamplingParams

    path = Path(path)
    weights = resolve_dtype(dtype or "auto", "cuda")
    release_cuda_memory()  # vLLM sizes its KV cache from the free memory: hand back what earlier models cached
    engine = {"llm": LLM(model=str(path), tokenizer=str(path), seed=settings.seed,
                         dtype="float32" if weights == "tf32" else weights, **(engine_options or {}))}
    try:
        params = SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature if settings.do_sample else 0.0,
            top_p=settings.top_p if settings.do_sample else 1.0,
            seed=settings.seed,
            stop_token_ids=_stop_ids(path) or None,
            skip_special_tokens=True,
        )
        if formatted:
            outs = engine["llm"].generate([str(p) for p in prompts], params, use_tqdm=False)
        else:
            convs = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
            outs = engine["llm"].chat(convs, params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outs]
    finally:
        release_vllm(engine)


def release_vllm(holder: dict[str, Any]) -> None:
    """Tear down the vLLM engine in ``holder["llm"]`` (removed from the dict, so no reference stays): shut its
    engine core down where the vLLM version has one, ``destroy_model_parallel`` / ``destroy_distributed_environment``
    where vLLM has them, then ``del`` + ``gc.collect()`` + ``torch.cuda.empty_cache()``. Every vLLM import is
    guarded: with vLLM absent (or no engine in ``holder``) only the garbage collection and the CUDA cache release
    run."""
    llm = holder.pop("llm", None)
    if llm is not None:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - best effort: the process-level teardown below still runs
                pass
    del llm
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    except Exception:  # noqa: BLE001 - vLLM absent, or a version without these
        pass
    else:
        destroy_model_parallel()
        destroy_distributed_environment()
    release_cuda_memory()
