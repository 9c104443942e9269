"""Cached, atomic training runs shared by SFT and DPO.

A run's output directory holds a Hugging Face model (weights, config, generation config, tokenizer),
``train_config.json`` (what was trained on what, the cache key, timings) and ``loss_log.jsonl`` (one line per
logging step). It is built in a temporary sibling and renamed into place only when everything is written, so an
interrupted run leaves nothing that looks finished. The cache key hashes the starting model's files, the normalised
training rows and the validated config: re-running a finished run returns at once. The device is no part of the
key (an fp32 run gives the same model wherever it ran, up to the order of floating-point sums); the resolved dtype
is, when it is not float32 (``--dtype auto`` is bf16 on a GPU), so a bf16 GPU run never reuses a CPU fp32 run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from safemerge.errors import InputError
from safemerge.train.config import TrainConfig, load_dtype
from safemerge.train.data import DataSource, ModelRef, TrainData, load_train_data, resolve_model
from safemerge.utils.atomic import atomic_dir, atomic_write_json, atomic_write_jsonl, make_readable
from safemerge.utils.device import Placement
from safemerge.utils.hashing import hash_obj
from safemerge.utils.malloc import KEEP_FREED, malloc_policy
from safemerge.utils.progress import make_progress

RUN_FORMAT = 1
TRAIN_CONFIG = "train_config.json"
LOSS_LOG = "loss_log.jsonl"

# (model, tokenizer, dataset, trainer_output_dir, callbacks) -> a transformers Trainer
TrainerFactory = Callable[[Any, Any, Any, Path, list[Any]], Any]


def run_key(kind: str, model: ModelRef, data: TrainData, config: TrainConfig,
            placement: Placement | None = None) -> str:
    """The cache key of a run: starting model content + data content + config (+ the resolved dtype unless it is
    float32; ``device`` / ``dtype`` as written are not hashed, so ``auto`` on the CPU keeps the keys of fp32 runs)."""
    key: dict[str, Any] = {"format": RUN_FORMAT, "kind": kind, "model": model.digest, "data": data.digest,
                           "config": config.model_dump(mode="json", exclude={"device", "dtype"})}
    if placement is not None and placement.dtype != "float32":
        key["dtype"] = placement.dtype
    return hash_obj(key)


def finished_run(out_dir: str | os.PathLike, key: str | None = None) -> dict[str, Any] | None:
    """The ``train_config.json`` of a finished run at ``out_dir`` (matching ``key`` if given), else None."""
    path = Path(out_dir) / TRAIN_CONFIG
    if not path.is_file() or not (Path(out_dir) / "config.json").is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return meta if key is None or meta.get("cache_key") == key else None


def load_tokenizer(ref: ModelRef) -> Any:
    """The starting model's tokenizer; it must carry a chat template."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref.name)
    except (OSError, ValueError) as exc:
        raise InputError(f"{ref.name}: cannot load its tokenizer ({str(exc).splitlines()[0]}); "
                         "save the tokenizer files next to the model") from None
    if not getattr(tok, "chat_template", None):
        raise InputError(f"{ref.name}: tokenizer has no chat template; set 'chat_template' in tokenizer_config.json")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class _RunLogger:
    """A TrainerCallback (built lazily to keep transformers out of import time) logging losses + progress."""

    @staticmethod
    def make(progress: Any, description: str) -> Any:
        from transformers import TrainerCallback

        class RunLogger(TrainerCallback):
            def __init__(self) -> None:
                self.rows: list[dict[str, Any]] = []
                self.task = progress.add_task(description, total=None)

            def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
                progress.update(self.task, total=state.max_steps)

            def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
                progress.update(self.task, completed=state.global_step)

            def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
                logs = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
                if any(k.endswith("loss") for k in logs) and "train_runtime" not in logs:
                    self.rows.append({"step": state.global_step, **{k: round(float(v), 6) for k, v in logs.items()}})

        return RunLogger()


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template closes an assistant turn with (``<|im_end|>``, ``<|eot_id|>``,
    ``<end_of_turn>``, the world's ``<|end|>``), or None when the template ends a turn with plain text."""
    marker = "SAFEMERGE_END_OF_TURN_PROBE"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that rejects this conversation: fall back to the tokenizer's EOS
        return None
    if not isinstance(text, str) or marker not in text:
        return None
    ids = tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False).input_ids
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return int(ids[0]) if ids and ids[0] in special else None


def stop_token_ids(tokenizer: Any, existing: Any = None) -> int | list[int] | None:
    """EOS ids for a fine-tuned model's generation config: the template's end of turn, the tokenizer's EOS and the
    model's own ones (``existing``), without repeats; one id stays a plain int."""
    ids: list[int] = []
    olds = existing if isinstance(existing, list) else [existing]
    for i in [end_of_turn_id(tokenizer), tokenizer.eos_token_id, *olds]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids[0] if len(ids) == 1 else (ids or None)


def _save_model(model: Any, tokenizer: Any, out: Path, lora_save_adapter: bool) -> None:
    """Write the (merged, if LoRA) model, its tokenizer and a generation config that stops at EOS."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if lora_save_adapter:
            model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    gen = model.generation_config
    gen.eos_token_id = stop_token_ids(tokenizer, gen.eos_token_id)
    gen.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    gen.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _load_model(ref: ModelRef, config: TrainConfig, placement: Placement | None = None) -> Any:
    """The starting model in the run's load dtype (:func:`~safemerge.train.config.load_dtype`), LoRA-wrapped if
    asked; the Trainer moves it to the run's device."""
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(config.seed)
    placement = placement or config.placement()
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.name, dtype=load_dtype(placement))
    except (OSError, ValueError) as exc:
        raise InputError(f"{ref.name}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return wrap_lora(model, config)


def wrap_lora(model: Any, config: TrainConfig) -> Any:
    """``model`` with ``config.lora``'s PEFT adapter (the model itself without LoRA)."""
    if config.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    lc = config.lora
    return get_peft_model(model, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                            target_modules=lc.target_modules, task_type="CAUSAL_LM"))


def cached_train(
    kind: str,
    model: str | os.PathLike,
    train_data: DataSource,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    make_trainer: TrainerFactory,
    progress: Any = None,
    force: bool = False,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Validate inputs, return at once on a cache hit, else train with ``make_trainer`` and write the run.

    ``meta``: extra keys for ``train_config.json`` (e.g. ``size_defaults``, the size band's choices).
    """
    placement = config.placement()  # CUDA asked for without one: a one-line error before anything is read
    ref = resolve_model(model)
    data = load_train_data(train_data, "sft" if kind == "sft" else "dpo", config.languages, config.max_examples)
    key = run_key(kind, ref, data, config, placement)
    out = Path(out_dir)
    if not force and finished_run(out, key) is not None:
        return out
    tokenizer = load_tokenizer(ref)
    import datasets
    from transformers.trainer_callback import PrinterCallback

    datasets.disable_progress_bars()
    own_progress = progress is None
    progress = make_progress() if own_progress else progress
    with (progress if own_progress else nullcontext(), _torch_threads(config.threads), malloc_policy(KEEP_FREED),
          _cuda_device(placement.device), atomic_dir(out) as tmp):
        start, cpu_start = time.perf_counter(), time.process_time()
        net = _load_model(ref, config, placement)
        logger = _RunLogger.make(progress, f"{kind} {out.name}")
        trainer = _build_trainer(make_trainer, ref, net, tokenizer, datasets.Dataset.from_list(data.rows),
                                 tmp / ".trainer", [logger])
        trainer.remove_callback(PrinterCallback)  # our loss log + progress bar replace its stdout dicts
        result = trainer.train()
        _save_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer, tmp,
                    config.lora is not None and config.lora.save_adapter)
        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        atomic_write_jsonl(tmp / LOSS_LOG, logger.rows)
        losses = [r["loss"] for r in logger.rows if "loss" in r]
        atomic_write_json(tmp / TRAIN_CONFIG, {
            "kind": kind, "cache_key": key, "format": RUN_FORMAT,
            "model": ref.name, "model_hash": ref.digest,
            "data": data.sources, "data_hash": data.digest, "n_examples": len(data.rows),
            "languages": data.languages, "config": config.model_dump(mode="json"),
            "steps": int(result.global_step), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "train_seconds": round(time.perf_counter() - start, 2),
            "train_cpu_seconds": round(time.process_time() - cpu_start, 2), "versions": _versions(),
            "placement": placement.record(),
            **(meta or {}),
        })
        make_readable(tmp)
        if not own_progress:
            progress.remove_task(logger.task)
    return out


def _build_trainer(make_trainer: TrainerFactory, ref: ModelRef, net: Any, tokenizer: Any, dataset: Any,
                   trainer_dir: Path, callbacks: list[Any]) -> Any:
    """``make_trainer(...)``, with TRL / transformers refusing to fine-tune the model (a ``ValueError`` from the
    trainer's constructor about quantized / non-trainable models: e.g. "You cannot perform fine-tuning on purely
    quantized models") as a one-line InputError; other errors propagate unchanged."""
    try:
        return make_trainer(net, tokenizer, dataset, trainer_dir, callbacks)
    except ValueError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not any(word in first.lower() for word in ("quantiz", "fine-tun", "finetun", "trainable", "adapter")):
            raise
        first = first.split(". ")[0].rstrip(".")[:160]
        hint = (f"if its config.json has a quantization_config, write a plain copy with `safemerge convert {ref.name} "
                "OUT_DIR` and train OUT_DIR") if ref.local else "start from a plain (unquantized) model"
        raise InputError(f"{ref.name}: the trainer refuses to fine-tune this model ({first}); {hint}") from None


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads, restoring the previous count afterwards."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _cuda_device(device: str) -> Iterator[None]:
    """For ``cuda:N``, make N the current CUDA device while the run trains (the Trainer places the model on the
    current device; TrainingArguments take no index), restoring the previous one afterwards."""
    if not device.startswith("cuda:"):
        yield
        return
    import torch

    before = torch.cuda.current_device()
    torch.cuda.set_device(int(device.split(":")[1]))
    try:
        yield
    finally:
        torch.cuda.set_device(before)


def _versions() -> dict[str, str]:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
