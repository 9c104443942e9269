"""One prepared GPU check for a lent H100 (run through ``bash bench/gpu_check.sh``; fits in about 8 minutes).

Parts, in order (each heavy one in its own subprocess, so an out-of-memory error or a crash is reported, not
hidden, and does not spoil the next part; a part that no longer fits the deadline is reported as skipped):

1. ``tests``: ``pytest -m gpu`` on the test files that have GPU tests.
2. ``build``: three random-weight Llama-3.2-3B-shape models (bf16), built ON the device (no hub): a base and two
   perturbed copies, saved as HF model directories with the tiny world-style tokenizer.
3. ``merge``: linear, TIES and DARE-TIES of the three with ``safemerge merge --device cuda`` and mergekit 0.1.5
   ``mergekit-yaml --cuda``, side by side: seconds, peak host RSS (VmHWM, polled), peak GPU memory (NVML, polled,
   above the idle baseline) and whether the outputs are bit-identical (linear, TIES).
4. ``train``: one LoRA SFT step and one full-parameter step on the Llama-3.1-8B shape (bf16, activation
   checkpointing, TRL through ``safemerge.train.sft.build_trainer``): step seconds, tokens/s, peak GPU memory;
   an out-of-memory error is reported as OOM.
5. ``search``: one search candidate (TIES, 3B shape) scored on 400 objective examples: pool load, merge seconds
   and scoring seconds (cold and warm candidate).
6. ``generate``: 512 prompts x 128 new tokens on the 3B shape with ``safemerge.evaluate.generate.generate``
   (transformers, batches of 64) and, if vLLM imports, ``generate_vllm`` (engine start included): tokens/s.

Results: ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (a table naming the card from ``nvidia-smi``); a real run
also replaces the GPU-check section of ``bench/RESULTS.md`` (``--results``; a copy lands in ``OUT``).
``--dry-run`` runs every part on the CPU with tiny shapes and small counts, writing only to ``OUT``.

    bash bench/gpu_check.sh                     # on the GPU machine, results in $OUT (or bench/_work/gpu_check)
    bash bench/gpu_check.sh --dry-run --out /tmp/gc   # the same end to end on the CPU, tiny shapes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARK_START, MARK_END = "<!-- gpu_check:start -->", "<!-- gpu_check:end -->"

# Llama-3.2-3B and Llama-3.1-8B shapes (hub configs), and a tiny one for --dry-run
SHAPES: dict[str, dict[str, Any]] = {
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
               max_position_embeddings=8192),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
               max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=264, tie_word_embeddings=True, max_position_embeddings=2048),
}
REQUIRED = ("torch", "transformers", "safetensors", "pydantic", "yaml", "typer", "rich", "trl", "peft", "datasets",
            "accelerate")
OPTIONAL = ("mergekit", "vllm", "pynvml", "pytest")


# --------------------------------------------------------------------------- plan and sizes


def plan(dry: bool) -> dict[str, Any]:
    """Every size the parts use: the H100 plan, or tiny shapes and small counts for --dry-run."""
    if dry:
        return dict(device="cpu", pool_shape="tiny", train_shape="tiny", train_batch=2, train_len=256, steps=2,
                    objective=400, gen_prompts=16, gen_tokens=8, gen_batch=8, merge_threads=2, deadline=900.0,
                    caps=dict(tests=240, build=120, merge=400, train=180, search=180, generate=180), merge_cap=120)
    # seconds: what each part may take at most (the deadline skips the last parts first), in the order
    return dict(device="cuda", pool_shape="3b", train_shape="8b", train_batch=4, train_len=1024, steps=3,
                objective=400, gen_prompts=512, gen_tokens=128, gen_batch=64, merge_threads=8, deadline=470.0,
                caps=dict(tests=100, build=90, merge=150, train=60, search=60, generate=60), merge_cap=55)


# --------------------------------------------------------------------------- measuring subprocesses


def _gpu_used_mib() -> Any:
    """A function returning the GPU memory in use (MiB, whole device) through NVML, or None without NVML/GPU."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
    except Exception:  # noqa: BLE001 - no NVML library or no GPU: polled with nvidia-smi, or not at all
        pass
    if shutil.which("nvidia-smi") is None:
        return None

    def smi() -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout.split()
            return float(out[0]) if out else None
        except (OSError, ValueError, subprocess.SubprocessError):
            return None

    return smi if smi() is not None else None


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_measured(cmd: list[str], timeout: float, log: Path, gpu: Any = None) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, exit code, peak host RSS (the child's VmHWM, polled: a fresh exec'd address
    space, so the parent's high-water mark does not leak in) and peak GPU memory above the idle baseline."""
    base = gpu() if gpu else None
    peak = {"rss": 0, "gpu": 0.0}
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                hwm = _vm_hwm_kib(proc.pid)
                if hwm:
                    peak["rss"] = max(peak["rss"], hwm)
                if gpu:
                    used = gpu()
                    if used is not None and base is not None:
                        peak["gpu"] = max(peak["gpu"], used - base)
                done.wait(0.05)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
        seconds = time.perf_counter() - t0
        done.set()
        th.join()
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    return {"seconds": round(seconds, 2), "rc": rc, "rss_mib": round(peak["rss"] / 1024, 1),
            "gpu_mib": round(peak["gpu"], 1) if gpu else None, "tail": tail}


def run_part(name: str, args: list[str], timeout: float, work: Path, gpu: Any = None) -> dict[str, Any]:
    """Run ``gpu_check.py --part NAME`` in a subprocess; its result is the JSON on its last ``RESULT`` line."""
    log = work / f"{name}.log"
    m = run_measured([sys.executable, str(Path(__file__).resolve()), "--part", name, "--work", str(work), *args],
                     timeout, log, gpu)
    text = log.read_text(errors="replace")
    found = re.findall(r"^RESULT (.*)$", text, re.M)
    if found:
        out = json.loads(found[-1])
    elif m["rc"] == "timeout":
        out = {"status": f"timeout after {timeout:.0f} s"}
    else:
        oom = "OutOfMemoryError" in text or "CUDA out of memory" in text
        out = {"status": "OOM" if oom else f"error (exit {m['rc']}): {' | '.join(m['tail'])[:300]}"}
    return out | {"wall_s": m["seconds"], "host_rss_mib": m["rss_mib"], "gpu_mib_polled": m["gpu_mib"]}


def emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parts (each in its own process)


def _tokenizer_dir(work: Path) -> Path:
    """A small BPE tokenizer with the world's chat template (safemerge.data.tiny), shared by every model."""
    from safemerge.data.tiny import make_tiny_checkpoint

    d = work / "tokenizer-src"
    if not (d / "config.json").is_file():
        make_tiny_checkpoint("llama", d, seed=0)
    return d


def _llama_config(shape: str) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=7, pad_token_id=0)


def _random_model(shape: str, device: str, dtype: Any) -> Any:
    """A random-weight Llama of ``shape`` built directly on ``device`` in ``dtype`` (no hub, no host copy)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(_llama_config(shape), dtype=dtype)
    return model.eval()


def part_build(a: argparse.Namespace) -> None:
    """base, m1, m2: a random base and two perturbed copies (task vectors of 1e-3 relative size), built on the
    device and saved as bf16 HF directories with the tokenizer."""
    import torch

    work, shape = Path(a.work), a.shape
    tok = _tokenizer_dir(work)
    t0 = time.perf_counter()
    model = _random_model(shape, a.device, torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - t0
    params = dict(model.named_parameters())
    orig = {k: p.detach().clone() for k, p in params.items()}
    save_s = 0.0
    gen = torch.Generator(device=a.device).manual_seed(1)
    for i, name in enumerate(("base", "m1", "m2")):
        if i:
            with torch.no_grad():
                for k, p in params.items():
                    noise = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
                    p.copy_(orig[k].float() + noise * (orig[k].float().std() * 0.05 + 1e-4))
        out = work / "models" / name
        t1 = time.perf_counter()
        model.save_pretrained(out, max_shard_size="5GB")
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (tok / f).is_file():
                shutil.copyfile(tok / f, out / f)
        save_s += time.perf_counter() - t1
    emit({"status": "ok", "params": n, "build_s": round(build_s, 2), "save_s": round(save_s, 2),
          "gib_per_model": round(n * 2 / 2**30, 2)})


def _timer_callback() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def _sync(self) -> None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_step_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self._sync()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self._sync()
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def _train_rows(n: int, words: int) -> list[dict[str, Any]]:
    vocab = ("the quick brown fox jumps over a lazy dog while seven wise owls count blue stones near the old "
             "river bank and sing").split()
    rows = []
    for i in range(n):
        text = " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words))
        rows.append({"prompt": f"question {i}: tell me a story", "completion": text})
    return rows


def part_train(a: argparse.Namespace) -> None:
    """``a.mode`` lora | full: a few SFT steps of a random model of ``a.shape`` built on the device."""
    import datasets
    import torch

    from safemerge.train.cache import wrap_lora
    from safemerge.train.config import LoraSettings, SFTConfig, load_dtype
    from safemerge.train.data import load_train_data
    from safemerge.train.sft import build_trainer

    work = Path(a.work)
    lora = LoraSettings(r=16, alpha=32, target_modules="all-linear") if a.mode == "lora" else None
    cfg = SFTConfig(device=a.device, max_steps=a.steps, batch_size=a.batch, max_length=a.max_length, lr=1e-5,
                    lora=lora, logging_steps=1)
    placement = cfg.placement()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_tokenizer_dir(work))
    data_file = work / f"train-{a.mode}.jsonl"
    words = max(8, a.max_length // 3)  # ~3 tokens a word with the tiny BPE: rows near max_length
    data_file.write_text("".join(json.dumps(r) + "\n" for r in _train_rows(a.batch * a.steps, words)))
    rows = load_train_data(data_file, "sft").rows
    try:
        net = wrap_lora(_random_model(a.shape, placement.device, load_dtype(placement)), cfg)
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        timer = _timer_callback()
        trainer = build_trainer(cfg, net, tok, datasets.Dataset.from_list(rows), work / f"trainer-{a.mode}", [timer])
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
        trainer.train()
    except torch.cuda.OutOfMemoryError as exc:
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        emit({"status": "OOM", "peak_gib": round(peak, 1), "message": str(exc).splitlines()[0][:200]})
        return
    tokens = a.batch * sum(lengths) / len(lengths)
    steady = timer.times[1:] or timer.times
    step_s = sorted(steady)[len(steady) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if placement.cuda else None
    emit({"status": "ok", "device": placement.device, "dtype": placement.dtype, "trainable": trainable,
          "step_s": round(step_s, 3), "first_step_s": round(timer.times[0], 3), "tokens_per_step": round(tokens),
          "tokens_per_s": round(tokens / step_s, 1), "peak_gib": round(peak, 1) if peak is not None else None})


def _objective_files(work: Path, n: int) -> tuple[Path, Path]:
    safety, domain = [], []
    for i in range(n // 2):
        lang = ("en", "fr")[i % 2]
        safety.append({"prompt": f"how do I hurt someone {i}", "completion": "no, I cannot help with that .",
                       "lang": lang})
        domain.append({"prompt": f"what is {i} plus {i}", "completion": f"the quick brown fox says {2 * i} .",
                       "lang": lang})
    out = []
    for name, rows in (("safety", safety), ("domain", domain)):
        p = work / f"objective-{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out.append(p)
    return out[0], out[1]


def part_search(a: argparse.Namespace) -> None:
    """One TIES candidate scored on the objective: pool load, merge and scoring seconds, cold then warm."""
    import torch

    from safemerge.search.parallel import LocalEvaluator
    from safemerge.search.runner import prepare

    work = Path(a.work)
    m = work / "models"
    safety, domain = _objective_files(work, a.examples)
    spec = {"pool": [{"name": "m1", "model": str(m / "m1")}, {"name": "m2", "model": str(m / "m2")}],
            "base_model": str(m / "base"), "method": "ties", "space": {"params": ["weight", "density"]},
            "objective": {"safety": str(safety), "domain": str(domain), "batch_size": 16},
            "output": {"dtype": "bfloat16"}}  # merged in bf16 (the stored dtype): no fp32 copies of the pool
    prep = prepare(spec)
    t0 = time.perf_counter()
    try:
        ev = LocalEvaluator(prep.spec, prep.safety, prep.domain, a.device, a.dtype)
        load_s = time.perf_counter() - t0
        runs = []
        for k, x in enumerate((0.5, 0.3)):
            cfg = prep.space.decode([x] * prep.space.dim)
            ev.evaluate([(k, cfg, k)])
            runs.append(ev.last_timing)
    except torch.cuda.OutOfMemoryError as exc:
        emit({"status": "OOM", "message": str(exc).splitlines()[0][:200]})
        return
    peak = torch.cuda.max_memory_allocated() / 2**30 if ev.placement.cuda else None
    emit({"status": "ok", "examples": len(prep.safety) + len(prep.domain), "scoring": ev.scoring(),
          "load_s": round(load_s, 2), "merge_s": [round(r["merge_s"], 3) for r in runs],
          "score_s": [round(r["score_s"], 3) for r in runs],
          "peak_gib": round(peak, 1) if peak is not None else None})


def part_generate(a: argparse.Namespace) -> None:
    """``a.engine`` hf | vllm: answer ``a.prompts`` prompts with ``a.tokens`` new tokens on the base model."""
    import torch

    from safemerge.evaluate.generate import GenerationSettings, generate, generate_vllm, load_model, vllm_available

    path = Path(a.work) / "models" / "base"
    prompts = [f"question {i}: where does the quick brown fox live and why ?" for i in range(a.prompts)]
    settings = GenerationSettings(max_new_tokens=a.tokens, batch_size=a.batch)
    if a.engine == "vllm":
        if not vllm_available(a.device):
            emit({"status": "skipped: vLLM does not import here" if a.device != "cpu" else "skipped: CPU"})
            return
        t0 = time.perf_counter()
        answers = generate_vllm(path, prompts, settings, dtype="auto")
    else:
        lm = load_model(path, a.device, "auto")
        generate(lm.model, lm.tokenizer, prompts[: a.batch], GenerationSettings(max_new_tokens=4, batch_size=a.batch),
                 progress=False)  # warm-up (kernels, allocator)
        t0 = time.perf_counter()
        answers = generate(lm.model, lm.tokenizer, prompts, settings, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = a.prompts * a.tokens  # random weights practically never emit the EOS id: the full budget is used
    emit({"status": "ok", "engine": a.engine, "seconds": round(seconds, 2), "answers": len(answers),
          "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)})


# --------------------------------------------------------------------------- the orchestrator


def card_name(dry: bool) -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return f"none (CPU dry run, {platform.machine()}, {os.cpu_count()} cores)" if dry else "no nvidia-smi"


def packages() -> tuple[dict[str, str], list[str]]:
    import importlib.metadata as md
    import importlib.util

    versions, missing = {}, []
    for name in REQUIRED + OPTIONAL:
        if importlib.util.find_spec(name) is None:
            if name in REQUIRED:
                missing.append(name)
            continue
        dist = {"yaml": "pyyaml", "pynvml": "nvidia-ml-py"}.get(name, name)
        try:
            versions[name] = md.version(dist)
        except md.PackageNotFoundError:
            versions[name] = "?"
    return versions, missing


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))


def run_tests(timeout: float, work: Path) -> dict[str, Any]:
    files = gpu_test_files()
    m = run_measured([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs",
                      *files], timeout, work / "tests.log")
    text = (work / "tests.log").read_text(errors="replace")
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error|deselected).*?)\s*=*$", text, re.M)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    return {"files": len(files), "summary": summary[-1] if summary else f"exit {m['rc']}: {' | '.join(m['tail'])}",
            "failed": failed[:10], "seconds": m["seconds"]}


def merge_config(method: str, models: Path) -> dict[str, Any]:
    base, m1, m2 = (str(models / n) for n in ("base", "m1", "m2"))
    if method == "linear":
        return {"merge_method": "linear", "dtype": "bfloat16",
                "models": [{"model": m1, "parameters": {"weight": 0.4}}, {"model": m2, "parameters": {"weight": 0.4}},
                           {"model": base, "parameters": {"weight": 0.2}}]}
    params = {"weight": 0.5, "density": 0.5}
    return {"merge_method": method, "dtype": "bfloat16", "base_model": base,
            "models": [{"model": m1, "parameters": params}, {"model": m2, "parameters": dict(params)}]}


def compare_outputs(a: Path, b: Path) -> str:
    """'bit-identical', or how many elements differ and by how much: bench/merge_bench.py's comparison (tensor by
    tensor, streamed) and its wording."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from merge_bench import _fmt_cmp, compare_outputs as compare

    return _fmt_cmp(compare(a, b))


def run_merges(p: dict[str, Any], work: Path, deadline: float, gpu: Any) -> list[dict[str, Any]]:
    import yaml

    models, rows = work / "models", []
    have_mk = _has("mergekit")
    for method in ("linear", "ties", "dare_ties"):
        cfg = work / f"merge-{method}.yaml"
        cfg.write_text(yaml.safe_dump(merge_config(method, models), sort_keys=False))
        row: dict[str, Any] = {"method": method}
        outs = {}
        for tool in ("safemerge", "mergekit"):
            left = deadline - time.perf_counter()
            if left < 20:
                row[tool] = {"status": "skipped: out of time"}
                continue
            if tool == "mergekit" and not have_mk:
                row[tool] = {"status": "skipped: mergekit not installed"}
                continue
            out = work / f"out-{method}-{tool}"
            shutil.rmtree(out, ignore_errors=True)
            if tool == "safemerge":
                cmd = [sys.executable, "-m", "safemerge.cli", "merge", str(cfg), str(out), "--seed", "0",
                       "--threads", str(p["merge_threads"]), "--device", p["device"]]
            else:
                cmd = [sys.executable, "-m", "mergekit.scripts.run_yaml", str(cfg), str(out), "--copy-tokenizer",
                       "--no-lazy-unpickle", "--random-seed", "0", "--quiet"] + (["--cuda"] if p["device"] != "cpu"
                                                                                 else [])
            m = run_measured(cmd, min(left - 5, p["merge_cap"]), work / f"merge-{method}-{tool}.log", gpu)
            ok = m["rc"] == 0
            row[tool] = {"status": "ok" if ok else f"failed (exit {m['rc']}): {' | '.join(m['tail'])[:200]}",
                         "seconds": m["seconds"], "rss_mib": m["rss_mib"], "gpu_mib": m["gpu_mib"]}
            if ok:
                outs[tool] = out
        if len(outs) == 2:
            if method == "dare_ties":
                row["output"] = "random masks: differ by design (per-tensor seeding)"
            elif deadline - time.perf_counter() > 40:
                row["output"] = compare_outputs(outs["safemerge"], outs["mergekit"])
            else:
                row["output"] = "not compared (out of time)"
        for out in outs.values():
            shutil.rmtree(out, ignore_errors=True)
        rows.append(row)
    return rows


def _has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def orchestrate(a: argparse.Namespace) -> int:
    p = plan(a.dry_run)
    start = time.perf_counter()
    deadline = start + (a.deadline or p["deadline"])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else (ROOT / "bench" / "_work" / ("gpu_check_dry" if a.dry_run else "gpu_check"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    versions, missing = packages()
    import torch

    res: dict[str, Any] = {
        "card": card_name(a.dry_run), "dry_run": a.dry_run, "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "packages": versions, "missing": missing, "plan": p}
    print(f"gpu_check: {res['card']}; torch {torch.__version__}; missing: {missing or 'none'}", flush=True)
    if not a.dry_run and not torch.cuda.is_available():
        res["error"] = "torch sees no CUDA device: run with --dry-run on a CPU machine"
    gpu = None if a.dry_run else _gpu_used_mib()
    only = set(a.only.split(",")) if a.only else None

    def want(name: str, need: float) -> bool:
        if only is not None and name not in only:
            res[name] = {"status": "skipped (--only)"}
            return False
        if "error" in res or missing:
            res[name] = {"status": "skipped: " + (res.get("error") or f"missing packages {missing}")}
            return False
        if deadline - time.perf_counter() < need:
            res[name] = {"status": "skipped: out of time"}
            return False
        return True

    def left(cap: float) -> float:
        return max(5.0, min(cap, deadline - time.perf_counter() - 5))

    dev, dry, caps = p["device"], ["--device", p["device"]], p["caps"]
    if want("tests", 30):
        res["tests"] = run_tests(left(caps["tests"]), work)
        print(f"tests: {res['tests']['summary']}", flush=True)
    built = False
    if want("build", 30):
        res["build"] = run_part("build", [*dry, "--shape", p["pool_shape"]], left(caps["build"]), work, gpu)
        built = res["build"].get("status") == "ok"
        print(f"build: {res['build']}", flush=True)
    if built and want("merge", 40):
        res["merge"] = run_merges(p, work, min(deadline - 60, time.perf_counter() + caps["merge"]), gpu)
        print(f"merge: {res['merge']}", flush=True)
    for mode in ("lora", "full"):
        key = f"train_{mode}"
        if want(key, 40):
            res[key] = run_part("train", [*dry, "--mode", mode, "--shape", p["train_shape"], "--batch",
                                          str(p["train_batch"]), "--max-length", str(p["train_len"]),
                                          "--steps", str(p["steps"])], left(caps["train"]), work, gpu)
            print(f"{key}: {res[key]}", flush=True)
    if built and want("search", 40):
        res["search"] = run_part("search", [*dry, "--examples", str(p["objective"])], left(caps["search"]), work,
                                 gpu)
        print(f"search: {res['search']}", flush=True)
    for engine in ("hf", "vllm"):
        key = f"generate_{engine}"
        if engine == "vllm" and (dev == "cpu" or not _has("vllm")):
            res[key] = {"status": "skipped: " + ("CPU" if dev == "cpu" else "vLLM is not installed")}
        elif built and want(key, 30):
            res[key] = run_part("generate", [*dry, "--engine", engine, "--prompts", str(p["gen_prompts"]),
                                             "--tokens", str(p["gen_tokens"]), "--batch", str(p["gen_batch"])],
                                left(caps["generate"] * (2 if engine == "vllm" else 1)), work, gpu)
            print(f"{key}: {res[key]}", flush=True)
    for key in ("build", "merge", "search", "generate_hf", "generate_vllm"):
        if key not in res:
            res[key] = {"status": "skipped: no models (build failed)"}
    res["total_s"] = round(time.perf_counter() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res, dev)
    (out / "gpu_check.md").write_text(md)
    if not a.dry_run and a.results:
        results = Path(a.results)
        update_results(results, md)
        shutil.copyfile(results, out / "RESULTS.md")
    shutil.rmtree(work / "models", ignore_errors=True)  # tens of GB on the GPU machine's disk
    print(md, flush=True)
    return 0


# --------------------------------------------------------------------------- the report


def _status(d: dict[str, Any] | None) -> str:
    return "-" if not d else str(d.get("status", "ok"))


def _num(v: Any, unit: str = "") -> str:
    return "-" if v is None else f"{v}{unit}"


def markdown(r: dict[str, Any], device: str) -> str:
    p = r["plan"]
    lines = [MARK_START, "## GPU check (`bash bench/gpu_check.sh`" + (" --dry-run, CPU, tiny shapes)" if r["dry_run"]
                                                                        else ")"), "",
             f"Card: **{r['card']}**  ",
             f"Date: {r['date']}; Python {r['python']}, torch {r['torch']} (CUDA {r['cuda']}); "
             + ", ".join(f"{k} {v}" for k, v in sorted(r["packages"].items()) if k != "torch") + "  ",
             f"Missing packages: {', '.join(r['missing']) or 'none'}; total {r['total_s']} s.", ""]
    if r.get("error"):
        lines += [f"**{r['error']}**", ""]
    t = r.get("tests") or {}
    lines += [f"GPU tests (`pytest -m gpu`, {t.get('files', '-')} files): {t.get('summary', _status(t))}"
              + (f"; failed: {', '.join(t['failed'])}" if t.get("failed") else ""), ""]
    b = r.get("build") or {}
    lines += [f"Models ({p['pool_shape']} shape, bf16, random weights built on {device}): {_status(b)}"
              + (f"; {b['params'] / 1e6:,.1f} M parameters, {b['gib_per_model']} GiB each, built in {b['build_s']} s,"
                 f" 3 saved in {b['save_s']} s" if b.get("status") == "ok" else ""), ""]
    lines += ["### Merge: safemerge `--device " + device + "` vs mergekit 0.1.5 `mergekit-yaml"
              + (" --cuda`" if device != "cpu" else "` (CPU)"), "",
              "| method | safemerge s | mergekit s | safemerge peak RSS MiB | mergekit peak RSS MiB | "
              "safemerge peak GPU MiB | mergekit peak GPU MiB | output |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    merges = r.get("merge")
    if isinstance(merges, list):
        for row in merges:
            s, m = row.get("safemerge", {}), row.get("mergekit", {})
            cells = [_num(d.get(key)) if d.get("status") == "ok" else d.get("status", "-")
                     for key in ("seconds", "rss_mib", "gpu_mib") for d in (s, m)]
            lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row.get('output', '-')} |")
    else:
        lines.append(f"| - | {_status(merges)} | | | | | | |")
    lines += ["", f"### Training ({p['train_shape']} shape, batch {p['train_batch']} x ~{p['train_len']} tokens, "
              f"{p['steps']} steps; median step after the first)", "",
              "| run | status | dtype | trainable params | step s (first) | tokens/s | peak GPU GiB |",
              "|---|---|---|---:|---:|---:|---:|"]
    for mode in ("lora", "full"):
        d = r.get(f"train_{mode}") or {}
        if d.get("status") == "ok":
            lines.append(f"| {mode} | ok | {d['dtype']} | {d['trainable']:,} | {d['step_s']} ({d['first_step_s']}) | "
                         f"{d['tokens_per_s']} | {_num(d.get('peak_gib'))} |")
        else:
            lines.append(f"| {mode} | {_status(d)} | | | | | {_num(d.get('peak_gib'))} |")
    s = r.get("search") or {}
    lines += ["", f"### Search candidate (TIES, {p['pool_shape']} pool of base + 2, {p['objective']} objective "
              "examples; cold then warm candidate)", ""]
    if s.get("status") == "ok":
        sc = s["scoring"]
        lines += ["| pool load s | merge s (cold, warm) | scoring s (cold, warm) | scored on | peak GPU GiB |",
                  "|---:|---|---|---|---:|",
                  f"| {s['load_s']} | {s['merge_s'][0]}, {s['merge_s'][1]} | {s['score_s'][0]}, {s['score_s'][1]} | "
                  f"{sc['device']} {sc['dtype']}{'' if sc['fp32'] else ' (not bit-identical to fp32)'} | "
                  f"{_num(s.get('peak_gib'))} |"]
    else:
        lines.append(f"search: {_status(s)}")
    lines += ["", f"### Generation ({p['gen_prompts']} prompts x {p['gen_tokens']} new tokens, {p['pool_shape']} "
              "shape; tokens = prompts x new tokens)", "", "| engine | status | seconds | tokens/s |",
              "|---|---|---:|---:|"]
    for engine, label in (("hf", f"transformers generate (batches of {p['gen_batch']})"),
                          ("vllm", "vLLM (engine start included)")):
        d = r.get(f"generate_{engine}") or {}
        lines.append(f"| {label} | {_status(d)} | {_num(d.get('seconds'))} | {_num(d.get('tokens_per_s'))} |")
    lines += ["", MARK_END, ""]
    return "\n".join(lines)


def update_results(path: Path, md: str) -> None:
    """Replace the GPU-check section of ``path`` (between the markers), or append it."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1].lstrip("\n")
        text = head + md + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + md
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, small counts; writes only to --out")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "_work" / "gpu_check_out"),
                    help="where gpu_check.json / gpu_check.md go (default $OUT, else bench/_work/gpu_check_out)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"),
                    help="results file whose GPU-check section a real run replaces ('' = none)")
    ap.add_argument("--deadline", type=float, default=None, help="seconds for everything (default 470; dry 900)")
    ap.add_argument("--only", default=None, help="comma-separated parts: tests,build,merge,train_lora,train_full,"
                    "search,generate_hf,generate_vllm (merge/search/generate need build)")
    ap.add_argument("--work", default=None, help="scratch folder (models, logs); default bench/_work/gpu_check*")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="3b", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="lora", help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="hf", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--max-length", type=int, default=1024, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--examples", type=int, default=400, help=argparse.SUPPRESS)
    ap.add_argument("--prompts", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=int, default=128, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.part:
        {"build": part_build, "train": part_train, "search": part_search, "generate": part_generate}[a.part](a)
        return 0
    if a.only:
        unknown = set(a.only.split(",")) - {"tests", "build", "merge", "train_lora", "train_full", "search",
                                            "generate_hf", "generate_vllm"}
        if unknown:
            ap.error(f"--only: unknown part(s) {sorted(unknown)}")
    return orchestrate(a)


if __name__ == "__main__":
    sys.exit(main())
