"""Benchmark safemerge's merge engine against mergekit 0.1.5 on the same YAML configs.

Builds three random Llama checkpoints sharing a base (default ~0.25B parameters, bf16, 2 shards; cached under
``bench/_work`` so reruns skip building), then for every method runs ``safemerge merge`` and ``mergekit-yaml`` on
the SAME config, each in a fresh subprocess (peak RSS per run via ``os.wait4``), alternating which tool goes first,
``--repeats`` times. Reports medians of wall time, the speed ratio, peak RSS of each tool and whether the outputs
are bit-identical (else how many elements differ and the max |diff|). For the methods in ``--fast-ties`` safemerge
also runs with ``--fast-ties``, and for the methods in ``--exact-ties`` (DELLA, whose default ranks equal magnitudes
by index) with ``tie_break: mergekit`` set in the recipe (each reported in a separate table against the same mergekit
runs). In the same alternation it runs the floor (``bench/floor.py``: interpreter start, ``import torch,
safetensors``, read every input safetensors file whole, write an output file of the merged size) and reports each
tool's wall time over it, pair by pair. A last run of safemerge with ``--max-memory`` shows its peak RSS against that
budget.

    python bench/merge_bench.py                       # full default bench (several minutes on 2 cores)
    python bench/merge_bench.py --size 500m           # the second size: ~0.5B params, 32k vocabulary
    python bench/merge_bench.py --params 10M --repeats 1 --methods ties,linear   # quick check
    python bench/merge_bench.py --out bench/results   # also write results.json + results.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_METHODS = ("linear", "slerp", "task_arithmetic", "ties", "dare_ties", "della", "breadcrumbs")
SPARSE = {"ties", "dare_ties", "della", "della_linear", "dare_linear", "breadcrumbs", "breadcrumbs_ties"}
RANDOM = {"dare_ties", "dare_linear", "della", "della_linear"}
ELEMENTWISE = {"linear", "task_arithmetic"}  # the linear family: judged against the floor
TARGET_SPARSE, TARGET_DENSE, TARGET_FLOOR = 3.0, 1.3, 1.3
VOCAB = 264  # safemerge.data.tiny tokenizer size
# --size presets: (params, hidden, vocabulary); --params / --hidden / --vocab override a preset's values
SIZES = {"250m": ("0.25B", None, VOCAB), "500m": ("0.52B", 1536, 32000)}


# --------------------------------------------------------------------------- sizes and checkpoints


def parse_size(text: str) -> int:
    """'250M' / '0.25B' / '2GB' / '512MiB' / '123' -> integer (decimal K/M/G/B, binary KiB/MiB/GiB)."""
    t = text.strip().upper().replace("_", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}
    for suffix, mult in units.items():
        if t.endswith(suffix) and t[: -len(suffix)]:
            return int(float(t[: -len(suffix)]) * mult)
    return int(float(t))


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int = VOCAB

    @property
    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        per_layer = 3 * h * h + 3 * h * i + 2 * h  # q,o: h*h; k,v: h*h/2 (2 of 4 heads); mlp; 2 norms
        return self.layers * per_layer + 2 * self.vocab * h + h

    @property
    def tag(self) -> str:
        vocab = "" if self.vocab == VOCAB else f"-v{self.vocab}"
        return f"llama-h{self.hidden}-l{self.layers}-i{self.intermediate}{vocab}"


def choose_shape(params: int, hidden: int | None, layers: int | None, vocab: int = VOCAB) -> Shape:
    """A Llama shape of about ``params`` parameters (hidden from the size unless given, intermediate 2.75x)."""
    if hidden is None:
        hidden = 1024 if params >= 100e6 else 512 if params >= 20e6 else 256
    inter = max(64, int(2.75 * hidden) // 64 * 64)
    if layers is None:
        per_layer = Shape(hidden, 1, inter).params - Shape(hidden, 0, inter).params
        layers = max(1, round((params - 2 * vocab * hidden) / per_layer))
    return Shape(hidden, layers, inter, vocab)


class _PaddedTokenizer:
    """The tiny tokenizer, counted as ``size`` tokens: the model gets ``size`` embedding rows (a vocabulary of a real
    model's size), the files saved are the tiny tokenizer's (both tools copy them as they are)."""

    def __init__(self, tokenizer: Any, size: int):
        self.tokenizer, self.size = tokenizer, size

    def __len__(self) -> int:
        return self.size

    def save_pretrained(self, path: Any) -> Any:
        return self.tokenizer.save_pretrained(path)


def build_checkpoints(shape: Shape, shards: int, models_dir: Path) -> dict[str, Path]:
    """base, a, b (bf16, ``shards`` shards each), built once and cached under ``models_dir/<shape>``."""
    from safemerge.data.tiny import build_tokenizer, make_tiny_checkpoint

    root = models_dir / f"{shape.tag}-s{shards}"
    shard_bytes = shape.params * 2 // shards + 2 * shape.vocab * shape.hidden * 2 + 1
    paths = {name: root / name for name in ("base", "a", "b")}
    tokenizer = None if shape.vocab == VOCAB else _PaddedTokenizer(build_tokenizer(), shape.vocab)
    for i, (name, path) in enumerate(paths.items()):
        if (path / "config.json").is_file():
            continue
        print(f"building {name} ({shape.params / 1e6:.0f}M params) -> {path}", flush=True)
        make_tiny_checkpoint("llama", path, seed=i, dtype="bfloat16", hidden=shape.hidden, layers=shape.layers,
                             intermediate=shape.intermediate, max_shard_size=shard_bytes, tokenizer=tokenizer,
                             init_from=None if name == "base" else paths["base"])
    return paths


def method_config(method: str, m: dict[str, Path]) -> dict[str, Any]:
    """The mergekit YAML both tools run for ``method`` (bf16, typical paper-style parameters)."""
    a, b, base = str(m["a"]), str(m["b"]), str(m["base"])
    if method == "linear":
        return {"merge_method": "linear", "dtype": "bfloat16",
                "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.3}},
                           {"model": base, "parameters": {"weight": 0.2}}]}
    if method == "slerp":
        return {"merge_method": "slerp", "dtype": "bfloat16", "base_model": a,
                "models": [{"model": a}, {"model": b}],
                "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.3, 0.5, 0.7, 1]},
                                     {"filter": "mlp", "value": [1, 0.7, 0.5, 0.3, 0]}, {"value": 0.5}]}}
    params = {"weight": 0.5}
    if method in SPARSE:
        params["density"] = 0.5
    if method == "breadcrumbs":
        params.update(density=0.9, gamma=0.01)
    if method.startswith("della"):
        params["epsilon"] = 0.1
    return {"merge_method": method, "dtype": "bfloat16", "base_model": base,
            "models": [{"model": a, "parameters": params}, {"model": b, "parameters": dict(params)}]}


# --------------------------------------------------------------------------- running one tool


@dataclass
class Run:
    tool: str
    method: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int


def run_measured(cmd: list[str], log: Path) -> tuple[float, float, float, int]:
    """Run ``cmd`` in a fresh process; return (wall s, CPU s = user + sys, peak RSS MiB, return code).

    Peak RSS comes from ``/usr/bin/time -f %M``: a child forked straight from this (large) Python process would
    inherit its RSS high-water mark on Linux, so ``getrusage``/``wait4`` of a direct child over-reports.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    rss_file = log.with_suffix(".rss")
    timer = shutil.which("time", path="/usr/bin:/bin")
    full = [timer, "-f", "%M %U %S", "-o", str(rss_file), *cmd] if timer else cmd
    with open(log, "w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime  # fallback: may include our high-water mark
    if timer:
        fields = rss_file.read_text().splitlines()[-1].split()  # time prints "Command exited..." lines first
        rss_kib, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
    return wall, cpu, rss_kib / 1024, proc.returncode


def tool_command(tool: str, cfg: Path, out: Path, threads: int, seed: int, max_memory: str | None = None,
                 fast_ties: bool = False) -> list[str]:
    if tool == "mergekit":
        # mergekit's fastest CPU setting for safetensors inputs: torch threads = cores (-j), no lazy unpickle
        # (only affects pickled .bin inputs), synchronous writes (async only adds memory), one output shard.
        return [str(BIN / "mergekit-yaml"), str(cfg), str(out), "--copy-tokenizer", "--no-lazy-unpickle",
                "-j", str(threads), "--random-seed", str(seed), "--quiet"]
    cmd = [str(BIN / "safemerge"), "merge", str(cfg), str(out), "--seed", str(seed), "--threads", str(threads)]
    if max_memory:
        cmd += ["--max-memory", max_memory]
    if fast_ties:
        cmd += ["--fast-ties"]
    return cmd


def compare_outputs(ours: Path, theirs: Path) -> dict[str, Any]:
    """Tensor-by-tensor comparison of two output directories (streams one tensor at a time)."""
    from safetensors import safe_open

    def index(d: Path) -> dict[str, Path]:
        out = {}
        for shard in sorted(d.glob("*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                out.update({k: shard for k in f.keys()})
        return out

    mine, ref = index(ours), index(theirs)
    if set(mine) != set(ref):
        return {"identical": False, "max_abs_diff": None, "n_tensors": len(mine),
                "note": f"tensor names differ ({len(set(mine) ^ set(ref))} not shared)"}
    n_equal, max_diff, n_diff_elems, n_elems = 0, 0.0, 0, 0
    for name in sorted(mine):
        with safe_open(str(mine[name]), "pt") as f:
            a = f.get_tensor(name)
        with safe_open(str(ref[name]), "pt") as f:
            b = f.get_tensor(name)
        n_elems += a.numel()
        if a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all()):
            n_equal += 1
        elif a.shape == b.shape:
            diff = (a.float() - b.float()).abs()
            max_diff = max(max_diff, diff.max().item())
            n_diff_elems += int((a != b).sum())
        else:
            max_diff = float("inf")
            n_diff_elems += a.numel()
    return {"identical": n_equal == len(mine), "n_tensors": len(mine), "n_identical": n_equal,
            "max_abs_diff": max_diff, "n_elements": n_elems, "n_differing_elements": n_diff_elems}


# --------------------------------------------------------------------------- the bench


def floor_command(recipe: dict[str, Any], out: Path, gc_off: bool = False) -> list[str]:
    """``bench/floor.py`` for ``recipe``: read the safetensors files of every model it names, write an output of
    the size of one model's safetensors files (the merged model's, up to its header); ``gc_off``: its ``--gc-off``."""
    dirs = list(dict.fromkeys([m["model"] for m in recipe.get("models", [])]
                              + ([recipe["base_model"]] if recipe.get("base_model") else [])))
    size = sum(f.stat().st_size for f in Path(dirs[0]).glob("*.safetensors"))
    return [sys.executable, str(ROOT / "bench" / "floor.py"), *(["--gc-off"] if gc_off else []), str(out), str(size),
            *dirs]


@dataclass
class MethodResult:
    method: str
    safemerge_s: float
    mergekit_s: float
    speedup: float  # median over the repeats of mergekit / safemerge, each pair from the same repeat
    target: float
    safemerge_rss_mb: float
    mergekit_rss_mb: float
    safemerge_cpu_s: float
    mergekit_cpu_s: float
    comparison: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    floor_s: float = float("nan")
    over_floor: float = float("nan")  # median over the repeats of safemerge / floor, each pair from the same repeat
    floor_cpu_s: float = float("nan")
    load: str = ""  # 1-minute load average before the first and after the last run


def _paired(num: list[Run], den: list[Run]) -> float:
    """Median of num.wall / den.wall over the repeats both finished (runs of one repeat run back to back)."""
    pairs = [(a.wall_s, b.wall_s) for a, b in zip(num, den) if a.returncode == 0 and b.returncode == 0]
    return statistics.median(x / y for x, y in pairs) if pairs else float("nan")


def bench_method(method: str, models: dict[str, Path], work: Path, repeats: int, threads: int,
                 seed: int, fast_ties: bool = False, exact_ties: bool = False,
                 floor: str = "plain") -> list[MethodResult]:
    """The default row of ``method`` (both tools), plus with ``fast_ties`` a ``method --fast-ties`` row (safemerge
    with ``--fast-ties``) and with ``exact_ties`` a ``method tie_break=mergekit`` row (the recipe with
    ``parameters.tie_break: mergekit``), each against the same mergekit runs and output; with ``floor``, the floor
    (``plain`` or ``gc-off``, :func:`floor_command`; ``no``: none) runs in the same alternation and every row gets
    its time over it."""
    cfg = work / "configs" / f"{method}.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    recipe = method_config(method, models)
    cfg.write_text(yaml.safe_dump(recipe, sort_keys=False))
    exact_cfg = work / "configs" / f"{method}-tie_break-mergekit.yaml"
    if exact_ties:
        exact_cfg.write_text(yaml.safe_dump({**recipe, "parameters": {**recipe.get("parameters", {}),
                                                                      "tie_break": "mergekit"}}, sort_keys=False))
    runs: list[Run] = []
    tools = (("safemerge", "mergekit") + (("fast",) if fast_ties else ()) + (("exact",) if exact_ties else ())
             + (("floor",) if floor != "no" else ()))
    outs = {t: work / "out" / t / method for t in tools}
    load = os.getloadavg()[0]
    for rep in range(repeats):
        order = tools if rep % 2 == 0 else tools[::-1]
        for tool in order:
            shutil.rmtree(outs[tool], ignore_errors=True)  # outside the timed run
            outs[tool].parent.mkdir(parents=True, exist_ok=True)
            log = work / "logs" / f"{method}-{tool}-{rep}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            if tool == "floor":
                cmd = floor_command(recipe, outs[tool], gc_off=floor == "gc-off")
            else:
                cmd = tool_command("mergekit" if tool == "mergekit" else "safemerge",
                                   exact_cfg if tool == "exact" else cfg, outs[tool], threads, seed,
                                   fast_ties=tool == "fast")
            wall, cpu, rss, rc = run_measured(cmd, log)
            runs.append(Run(tool, method, wall, cpu, rss, rc))
            status = "ok" if rc == 0 else f"FAILED rc={rc} (see {log})"
            print(f"  {method:16s} rep {rep + 1}/{repeats} {tool:9s} {wall:7.2f}s wall {cpu:7.2f}s cpu "
                  f"{rss:7.0f} MiB  {status}",
                  flush=True)
            if rc != 0:
                print(log.read_text()[-2000:], file=sys.stderr)
    load_text = f"{load:.2f} -> {os.getloadavg()[0]:.2f}"
    by_tool = {t: [r for r in runs if r.tool == t] for t in outs}
    ok = {t: [r for r in by_tool[t] if r.returncode == 0] for t in outs}
    med = {t: statistics.median(r.wall_s for r in ok[t]) if ok[t] else float("nan") for t in outs}
    rss = {t: max((r.peak_rss_mb for r in ok[t]), default=float("nan")) for t in outs}
    cpu = {t: statistics.median(r.cpu_s for r in ok[t]) if ok[t] else float("nan") for t in outs}
    results = []
    for tool in tools:
        if tool in ("mergekit", "floor"):
            continue
        if ok[tool] and ok["mergekit"]:
            comparison = compare_outputs(outs[tool], outs["mergekit"])
        else:
            comparison = {"identical": False, "max_abs_diff": None, "note": "a tool failed"}
        comparison["random_method"] = method in RANDOM
        name = {"safemerge": method, "fast": f"{method} --fast-ties", "exact": f"{method} tie_break=mergekit"}[tool]
        results.append(MethodResult(
            name, med[tool], med["mergekit"], _paired(by_tool["mergekit"], by_tool[tool]),
            TARGET_SPARSE if method in SPARSE else TARGET_DENSE, rss[tool], rss["mergekit"], cpu[tool],
            cpu["mergekit"], comparison, [asdict(r) for r in runs if r.tool in (tool, "mergekit", "floor")],
            med.get("floor", float("nan")),
            _paired(by_tool[tool], by_tool["floor"]) if floor != "no" else float("nan"),
            cpu.get("floor", float("nan")), load_text))
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    return results


def bench_budget(method: str, budget: str, models: dict[str, Path], work: Path, threads: int,
                 seed: int) -> dict[str, Any]:
    cfg = work / "configs" / f"{method}.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump(method_config(method, models), sort_keys=False))
    out = work / "out" / "safemerge-budget" / method
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = work / "logs" / f"{method}-safemerge-budget.log"
    wall, _, rss, rc = run_measured(tool_command("safemerge", cfg, out, threads, seed, max_memory=budget), log)
    shutil.rmtree(out, ignore_errors=True)
    # the budget covers the merge's working memory; the process adds the interpreter + imports baseline
    baseline_cmd = [sys.executable, "-c", "import torch, safetensors, yaml, typer, rich, safemerge.cli, "
                    "safemerge.merge.engine, safemerge.merge.methods"]
    _, _, baseline, _ = run_measured(baseline_cmd, work / "logs" / "baseline.log")
    budget_mb = parse_size(budget) / 2**20
    print(f"  {method:16s} safemerge --max-memory {budget}: {wall:.2f}s  {rss:.0f} MiB (baseline {baseline:.0f} MiB)"
          f"  rc={rc}", flush=True)
    return {"method": method, "max_memory": budget, "budget_mib": budget_mb, "wall_s": wall, "peak_rss_mb": rss,
            "baseline_rss_mb": baseline, "returncode": rc, "within_budget": rc == 0 and rss - baseline <= budget_mb}


def _fmt_cmp(c: dict[str, Any]) -> str:
    if c.get("identical"):
        return "bit-identical"
    if c.get("max_abs_diff") is None:
        return c.get("note", "n/a")
    tag = " (random: per-tensor seeding differs by design)" if c.get("random_method") else ""
    count = ""
    if c.get("n_elements"):
        count = f"{c['n_differing_elements']} of {c['n_elements']} elements differ, "
    return f"{count}max abs diff {c['max_abs_diff']:.3g}{tag}"


def _targets(r: MethodResult) -> str:
    """The row's targets and whether they were met: speed-up, <= 1.3x the floor (the linear family), RSS <= half."""
    out = [f"speed-up >= {r.target}x {'ok' if r.speedup >= r.target else 'MISS'}"]
    if r.method in ELEMENTWISE:
        out.append(f"<= {TARGET_FLOOR}x floor {'ok' if r.over_floor <= TARGET_FLOOR else 'MISS'}")
    out.append(f"RSS <= mk/2 {'ok' if r.safemerge_rss_mb <= r.mergekit_rss_mb / 2 else 'MISS'}")
    return ", ".join(out)


def markdown(results: list[MethodResult], budget: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    lines = [
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']}  ",
        f"Models: 3 x {meta['params_m']:.0f}M-parameter random Llama ({meta['shape']}, vocabulary {meta['vocab']}), "
        f"bf16, {meta['shards']} shards each; {meta['repeats']} run(s) per tool, alternating, medians reported; "
        "ratios are medians of the per-repeat ratios (the runs of one repeat are back to back); floor: "
        f"bench/floor.py{' --gc-off' if meta.get('floor') == 'gc-off' else ''}.",
    ]
    head = ["| method | safemerge s | mergekit s | floor s | sm / floor | speed-up (mk / sm) | target "
            "| CPU s (sm / mk / floor) | safemerge RSS MiB | mergekit RSS MiB | RSS sm / mk | load "
            "| output vs mergekit |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|"]
    default = [r for r in results if " " not in r.method]
    fast = [r for r in results if r.method.endswith("--fast-ties")]
    exact = [r for r in results if r.method.endswith("tie_break=mergekit")]
    for title, rows in (("Default (ties/breadcrumbs: mergekit's exact tie order; della: ties ranked by index)", default),
                        ("safemerge --fast-ties (tie_break: index; same mergekit runs)", fast),
                        ("tie_break: mergekit in the recipe (mergekit's tie ranks; same mergekit runs)", exact)):
        if rows:
            lines += ["", f"### {title}", "", *head]
        for r in rows:
            lines.append(f"| {r.method} | {r.safemerge_s:.2f} | {r.mergekit_s:.2f} | {r.floor_s:.2f} | "
                         f"{r.over_floor:.2f}x | {r.speedup:.2f}x | {_targets(r)} | {r.safemerge_cpu_s:.1f} / "
                         f"{r.mergekit_cpu_s:.1f} / {r.floor_cpu_s:.1f} | {r.safemerge_rss_mb:.0f} | "
                         f"{r.mergekit_rss_mb:.0f} | {r.safemerge_rss_mb / r.mergekit_rss_mb:.2f} | {r.load} | "
                         f"{_fmt_cmp(r.comparison)} |")
    if budget:
        lines += ["", f"safemerge `{budget['method']}` with `--max-memory {budget['max_memory']}`: "
                      f"{budget['wall_s']:.2f} s, peak RSS {budget['peak_rss_mb']:.0f} MiB = interpreter baseline "
                      f"{budget['baseline_rss_mb']:.0f} MiB + {budget['peak_rss_mb'] - budget['baseline_rss_mb']:.0f} "
                      f"MiB ({'within' if budget['within_budget'] else 'OVER'} the {budget['budget_mib']:.0f} MiB "
                      "budget, which covers the memory above the baseline)."]
    return "\n".join(lines) + "\n"


def print_table(results: list[MethodResult], budget: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="safemerge vs mergekit 0.1.5 and the floor (medians; ratios: medians of paired runs)")
    for col in ("method", "safemerge s", "mergekit s", "floor s", "sm/floor", "speed-up", "targets",
                "CPU s sm/mk/floor", "RSS safemerge", "RSS mergekit", "output"):
        table.add_column(col, justify="left" if col in ("method", "output", "targets") else "right")
    for r in results:
        targets = _targets(r)
        style = "[red]" if "MISS" in targets else "[green]"
        table.add_row(r.method, f"{r.safemerge_s:.2f}", f"{r.mergekit_s:.2f}", f"{r.floor_s:.2f}",
                      f"{r.over_floor:.2f}x", f"{r.speedup:.2f}x", style + targets,
                      f"{r.safemerge_cpu_s:.1f}/{r.mergekit_cpu_s:.1f}/{r.floor_cpu_s:.1f}",
                      f"{r.safemerge_rss_mb:.0f} MiB", f"{r.mergekit_rss_mb:.0f} MiB", _fmt_cmp(r.comparison))
    console = Console(width=shutil.get_terminal_size((170, 40)).columns)
    console.print(table)
    if budget:
        style = "green" if budget["within_budget"] else "red"
        console.print(f"[{style}]--max-memory {budget['max_memory']} ({budget['method']}): peak RSS "
                      f"{budget['peak_rss_mb']:.0f} MiB = baseline {budget['baseline_rss_mb']:.0f} MiB + "
                      f"{budget['peak_rss_mb'] - budget['baseline_rss_mb']:.0f} MiB (budget "
                      f"{budget['budget_mib']:.0f} MiB), {budget['wall_s']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="250m",
                    help="model size preset: 250m (~0.25B params, 264-token vocabulary; the default) or 500m (~0.52B "
                         "params, hidden 1536, 32000-token vocabulary)")
    ap.add_argument("--params", default=None, help="approximate parameters per model (e.g. 10M, 0.25B; overrides "
                                                   "--size)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (embedding rows; overrides --size)")
    ap.add_argument("--hidden", type=int, default=None, help="hidden size (default: from --size / --params)")
    ap.add_argument("--layers", type=int, default=None, help="number of layers (default: from --params)")
    ap.add_argument("--shards", type=int, default=2, help="safetensors shards per input model")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated merge methods")
    ap.add_argument("--repeats", type=int, default=3, help="runs per tool and method (alternating order)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for both tools (mergekit -j, safemerge --threads)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the random methods (both tools)")
    ap.add_argument("--max-memory", default="auto",
                    help="budget for the extra safemerge --max-memory run ('auto' = 0.75 x mergekit's peak "
                         "RSS on that method, 'none' to skip)")
    ap.add_argument("--budget-method", default="ties", help="method used for the --max-memory run")
    ap.add_argument("--fast-ties", default="ties,breadcrumbs",
                    help="methods that also get a safemerge --fast-ties row (comma-separated, 'none' to skip)")
    ap.add_argument("--exact-ties", default="della",
                    help="methods that also get a row with 'tie_break: mergekit' in the recipe (for methods whose "
                         "default ranks ties by index; comma-separated, 'none' to skip)")
    ap.add_argument("--floor", default="plain", choices=("plain", "gc-off", "no"),
                    help="also time bench/floor.py (read the inputs, write the output's bytes) in the alternation: "
                         "plain, or gc-off (its --gc-off: no cyclic GC, gc.freeze at the end, as safemerge merge)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "_work", help="cache and scratch directory")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="where the generated models are cached (default: WORK/models)")
    ap.add_argument("--out", type=Path, default=None, help="write results.json and results.md into this folder")
    args = ap.parse_args(argv)

    preset_params, preset_hidden, preset_vocab = SIZES[args.size]
    params = args.params or preset_params
    hidden = args.hidden or (preset_hidden if args.params is None else None)
    shape = choose_shape(parse_size(params), hidden, args.layers, args.vocab or preset_vocab)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    models = build_checkpoints(shape, args.shards, args.models_dir or args.work / "models")
    print(f"models: {shape.tag} (~{shape.params / 1e6:.0f}M params, bf16, {args.shards} shards) in "
          f"{models['base'].parent}", flush=True)

    fast = set() if args.fast_ties.lower() == "none" else {m.strip() for m in args.fast_ties.split(",")}
    exact = set() if args.exact_ties.lower() == "none" else {m.strip() for m in args.exact_ties.split(",")}
    results = [r for m in methods for r in bench_method(m, models, args.work, args.repeats, args.threads,
                                                        args.seed, m in fast, m in exact, args.floor)]
    budget = None
    if args.max_memory.lower() != "none":
        limit = args.max_memory
        if limit.lower() == "auto":
            ref = next((r.mergekit_rss_mb for r in results if r.method == args.budget_method), None)
            if ref is None or ref != ref:  # method not benched: measure mergekit once
                ref = bench_method(args.budget_method, models, args.work, 1, args.threads, args.seed,
                                   floor="no")[0].mergekit_rss_mb
            limit = f"{int(0.75 * ref)}MiB"
        budget = bench_budget(args.budget_method, limit, models, args.work, args.threads, args.seed)

    print_table(results, budget)
    meta = {"command": "python bench/merge_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
            "shape": shape.tag, "params_m": shape.params / 1e6, "vocab": shape.vocab, "shards": args.shards,
            "repeats": args.repeats, "floor": args.floor,
            "mergekit_options": "--copy-tokenizer --no-lazy-unpickle -j THREADS --random-seed SEED --quiet",
            "threads": args.threads}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(
            {"meta": meta, "results": [asdict(r) for r in results], "max_memory_run": budget}, indent=2))
        (args.out / "results.md").write_text(markdown(results, budget, meta))
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    failed = any(r.safemerge_s != r.safemerge_s or r.mergekit_s != r.mergekit_s for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
