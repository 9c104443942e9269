"""Candidate evaluations per minute: in-memory merging into a resident model vs merging to disk and reloading.

Both paths score the SAME candidate configurations (random per-model weight/density for TIES and DARE-TIES, weights
for linear, t for SLERP) on the SAME models, objective records and device, in one run:

- in memory (safemerge.search): the pool is loaded once as state dicts on the device; each candidate runs the
  engine's merge plan on per-pool constants cached across candidates (``ResidentModel.load_merge``,
  bit-identical to ``merge_state_dicts`` on the CPU) straight into one resident model's parameters, then is scored
  (answer-only cross-entropy, ``safemerge.evaluate.loss.answer_loss``, on records tokenized once);
- disk round trip (what an evolutionary search built on mergekit does): each candidate is written as a YAML,
  merged by mergekit 0.1.5 ``run_merge`` to a folder (``--cuda`` on a GPU), loaded with
  ``AutoModelForCausalLM.from_pretrained`` onto the device and scored the same way (tokenizer loaded and records
  tokenized once, see :func:`disk_options`).

Candidates alternate between the paths (the load of a shared machine drifts). Reports per phase (merge / load /
score) the median seconds per candidate of each path, evaluations per minute, the speed-up (target >= 10x), the
speed-up of what merging in memory removes ((disk merge + load) / memory merge), the largest objective size at
which the measured phases still give 10x, and the largest difference between the two paths' losses (they must
agree). Scoring is the same function on the same device in both paths, so the speed-up shrinks towards 1 as the
objective set grows. Models are cached in ``bench/_work/search/`` (gitignored). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_bench.py        # 2.5M and 19M params, 16 and 400 examples
    python bench/search_bench.py --device cuda --examples 400,2000 --sizes 512x8,1024x16 --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

WORK = Path(__file__).resolve().parent / "_work" / "search"


def build_models(hidden: int, layers: int) -> dict[str, Path]:
    from safemerge.data.tiny import make_tiny_checkpoint

    root = WORK / f"models-h{hidden}-l{layers}"
    paths = {k: root / k for k in ("base", "a", "b")}
    if not all((p / "config.json").is_file() for p in paths.values()):
        make_tiny_checkpoint("llama", paths["base"], seed=0, hidden=hidden, layers=layers, intermediate=2 * hidden)
        for i, k in enumerate(("a", "b"), 1):
            make_tiny_checkpoint("llama", paths[k], seed=i, init_from=paths["base"], noise=0.02)
    return paths


def records(n: int) -> list[dict[str, Any]]:
    langs = ("en", "fr")
    return [{"prompt": f"question number {i}: how does the fox jump?", "completion": f"the quick brown fox {i} .",
             "lang": langs[i % 2]} for i in range(n)]


def candidates(n: int, seed: int, method: str = "ties") -> list[dict[str, Any]]:
    """``n`` random candidate configs of ``method`` over models a, b (base = base; SLERP: a is the base)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, d = rng.uniform(0.1, 1.0, 2), rng.uniform(0.2, 1.0, 2)
        if method == "slerp":
            out.append({"merge_method": "slerp", "base_model": "a", "dtype": "float32", "models": [{"model": "b"}],
                        "parameters": {"t": round(float(w[0]), 4)}})
            continue
        params = [{"weight": round(float(w[i]), 4)} | ({"density": round(float(d[i]), 4)}
                                                       if method in ("ties", "dare_ties") else {}) for i in range(2)]
        cfg = {"merge_method": method, "dtype": "float32",
               "models": [{"model": m, "parameters": params[i]} for i, m in enumerate(("a", "b"))]}
        if method != "linear":
            cfg["base_model"] = "base"
        out.append(cfg)
    return out


def with_paths(cfg: dict[str, Any], paths: dict[str, Path]) -> dict[str, Any]:
    out = {**cfg, "models": [{**m, "model": str(paths[m["model"]])} for m in cfg["models"]]}
    if "base_model" in cfg:
        out["base_model"] = str(paths[cfg["base_model"]])
    return out


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a phase's time includes it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def in_memory_step(paths: dict[str, Path], rows: list[dict[str, Any]], device: str, batch_size: int) -> Any:
    """Set up the resident model; returns ``step(cfg) -> (phases, loss)`` scoring one candidate in memory."""
    from safemerge.evaluate.loss import answer_loss, tokenize_records
    from safemerge.search.inmemory import ResidentModel

    resident = ResidentModel({k: str(v) for k, v in paths.items()}, model_from=str(paths["a"]), device=device)
    pairs = tokenize_records(resident.tokenizer, rows)

    def step(cfg: dict[str, Any]) -> tuple[dict[str, float], float]:
        t = time.perf_counter()
        resident.load_merge(cfg, seed=0)
        sync(device)
        t1 = time.perf_counter()
        loss = answer_loss(resident.model, resident.tokenizer, pairs, batch_size)
        return {"merge": t1 - t, "score": time.perf_counter() - t1}, loss

    return step


def disk_options(device: str) -> Any:
    """mergekit's fastest settings for this round trip: no tokenizer copy (the pool's tokenizer is loaded once, as
    in memory), no model card, safetensors output, torch threads = this process's, merging on the GPU when the
    bench runs on one; lazy_unpickle only matters for pickled .bin inputs (ours are safetensors)."""
    import torch
    from mergekit.options import MergeOptions

    return MergeOptions(copy_tokenizer=False, lazy_unpickle=False, quiet=True, write_model_card=False,
                        safe_serialization=True, num_threads=torch.get_num_threads(),
                        cuda=device.startswith("cuda"))


def disk_step(paths: dict[str, Path], rows: list[dict[str, Any]], tmp: Path, device: str, batch_size: int) -> Any:
    """``step(cfg) -> (phases, loss)``: mergekit run_merge to ``tmp``, from_pretrained onto ``device``, score,
    delete."""
    import torch
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safemerge.evaluate.loss import answer_loss, tokenize_records

    options = disk_options(device)
    tok = AutoTokenizer.from_pretrained(paths["a"])
    pairs = tokenize_records(tok, rows)

    def step(cfg: dict[str, Any]) -> tuple[dict[str, float], float]:
        t = time.perf_counter()
        text = yaml.safe_dump(with_paths(cfg, paths))
        out = tmp / "candidate"
        run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(out), options)
        t1 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, device_map=device).eval()
        sync(device)
        t2 = time.perf_counter()
        loss = answer_loss(model, tok, pairs, batch_size)
        phases = {"merge": t1 - t, "load": t2 - t1, "score": time.perf_counter() - t2}
        del model
        shutil.rmtree(out)
        return phases, loss

    return step


COLUMNS = ("model", "method", "examples (tokens)", "mem merge", "mem score", "mem s/cand", "mem eval/min",
           "disk merge", "disk load", "disk score", "disk s/cand", "disk eval/min", "speed-up", ">= 10x",
           "merge+load speed-up", "10x up to (examples)", "max |loss diff|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256x4,512x8",
                    help="comma-separated HIDDENxLAYERS Llama shapes to measure (intermediate = 2 x hidden); "
                         "default: 2.5M and 19M parameters")
    ap.add_argument("--memory", type=int, default=4, help="candidates scored in memory (after 1 warm-up)")
    ap.add_argument("--disk", type=int, default=4, help="candidates scored through disk (after 1 warm-up)")
    ap.add_argument("--examples", default="16,400",
                    help="comma-separated objective sizes (examples scored per candidate); 400 = the paper's "
                         "smallest K (200 safety + 200 domain), 2000 = its default and the synth spec's (1000 + 1000)")
    ap.add_argument("--methods", default="ties,linear", help="comma-separated: ties, dare_ties, linear, slerp")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where both paths merge, load and score")
    ap.add_argument("--batch-size", type=int, default=16, help="scoring batch size (the search spec's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    WORK.mkdir(parents=True, exist_ok=True)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} torch threads"
    table = Table(title=f"merge-search candidate evaluation on {args.device} ({dev}), batch {args.batch_size}, "
                        "median seconds per candidate")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "method") else "right")
    for size in args.sizes.split(","):
        hidden, layers = (int(v) for v in size.lower().split("x"))
        paths = build_models(hidden, layers)
        n_params = sum(p.numel() for p in _load(paths["a"]).parameters())
        for n in (int(v) for v in args.examples.split(",")):
            for method in args.methods.split(","):
                add_row(table, paths, f"{n_params / 1e6:.2f}M ({hidden}x{layers})", method, records(n), args)
    Console(width=250).print(table)
    print("in memory: cached-plan merge into one resident model on the device (safemerge.search.inmemory) + "
          "answer_loss; disk: mergekit 0.1.5 run_merge (no tokenizer copy, no model card, safetensors, cuda on a "
          "GPU) + AutoModelForCausalLM.from_pretrained(device_map=device) + answer_loss; both tokenize once; same "
          "candidates, same data, alternating. merge+load speed-up = (disk merge + load) / mem merge: the part "
          "that merging in memory removes. 10x up to = the largest objective size (examples of this length) at "
          "which the measured per-phase times still give >= 10x (score time taken as proportional to examples).")
    return 0


def add_row(table: Any, paths: dict[str, Path], label: str, method: str, rows: list[dict[str, Any]],
            args: Any) -> None:
    """Candidates alternate between the two paths (load drifts on a shared machine); the first is a warm-up."""
    cands = candidates(max(args.memory, args.disk) + 1, args.seed, method)
    mem: dict[str, list[float]] = {}
    disk: dict[str, list[float]] = {}
    mem_l, disk_l = [], []
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-", dir=WORK))
    try:
        mem_step = in_memory_step(paths, rows, args.device, args.batch_size)
        disk_step_ = disk_step(paths, rows, tmp, args.device, args.batch_size)
        tokens = sum(len(p.prompt_ids) + len(p.answer_ids) for p in _pairs(paths, rows))
        for i, cfg in enumerate(cands):
            for n, step, phases, losses in ((args.memory, mem_step, mem, mem_l), (args.disk, disk_step_, disk, disk_l)):
                if i <= n:
                    times, loss = step(cfg)
                    losses.append(loss)
                    for k, v in times.items():
                        phases.setdefault(k, []).append(v)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {f"mem {k}": statistics.median(v[1:]) for k, v in mem.items()}
    med |= {f"disk {k}": statistics.median(v[1:]) for k, v in disk.items()}
    mem_total = statistics.median([sum(p) for p in zip(*mem.values())][1:])
    disk_total = statistics.median([sum(p) for p in zip(*disk.values())][1:])
    k = min(len(mem_l), len(disk_l))
    agree = max(abs(a - b) for a, b in zip(mem_l[:k], disk_l[:k]))
    speed = disk_total / mem_total
    removed = med["disk merge"] + med["disk load"]
    overhead = removed / med["mem merge"]
    # (removed + s n) / (mem merge + s n) >= 10  <=>  n <= (removed - 10 mem merge) / (9 s), s = score per example
    per_example = statistics.mean([med["mem score"], med["disk score"]]) / len(rows)
    up_to = int((removed - 10 * med["mem merge"]) / (9 * per_example))
    table.add_row(label, method, f"{len(rows)} ({tokens})", f"{med['mem merge']:.3f}", f"{med['mem score']:.3f}",
                  f"{mem_total:.3f}", f"{60 / mem_total:.1f}", f"{med['disk merge']:.3f}", f"{med['disk load']:.3f}",
                  f"{med['disk score']:.3f}", f"{disk_total:.3f}", f"{60 / disk_total:.1f}", f"{speed:.1f}x",
                  "yes" if speed >= 10 else "no", f"{overhead:.1f}x", str(up_to) if up_to > 0 else "none",
                  f"{agree:.1e}")
    print(f"{label} {method} {len(rows)} examples: mem {mem_total:.3f} s, disk {disk_total:.3f} s, {speed:.1f}x",
          flush=True)


def _pairs(paths: dict[str, Path], rows: list[dict[str, Any]]) -> list[Any]:
    from transformers import AutoTokenizer

    from safemerge.evaluate.loss import tokenize_records

    return tokenize_records(AutoTokenizer.from_pretrained(paths["a"]), rows)


def _load(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


if __name__ == "__main__":
    sys.exit(main())
