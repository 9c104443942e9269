"""Time safemerge's merge methods against mergekit 0.1.5's on one large weight (not a test).

    .venv/bin/python bench/methods_timing.py [--size 4096] [--models 3] [--repeats 3] [--dtype float32]

Prints, per method, the median seconds of both and the speed ratio (mergekit / safemerge), after checking
that both outputs are identical (torch.equal; dare/della with the same seed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    from mergekit.merge_methods import merge_tensors

    from safemerge.merge.methods import METHODS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="weight is size x size")
    ap.add_argument("--models", type=int, default=3, help="fine-tuned models besides the base")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--methods", default="linear,slerp,task_arithmetic,ties,dare_ties,della,breadcrumbs")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tie-break", default="mergekit", choices=["mergekit", "index"],
                    help="safemerge's tie_break for ties/breadcrumbs ('index' is always O(n); parity not checked)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    shape = (args.size, args.size)
    base = torch.randn(shape, generator=gen).to(dtype)
    models = [(base.float() + 0.01 * torch.randn(shape, generator=gen)).to(dtype) for _ in range(args.models)]
    weights = [0.2 + 0.3 * i for i in range(args.models)]
    print(f"torch threads={torch.get_num_threads()} shape={shape} models={args.models} dtype={args.dtype}")
    print(f"{'method':18s} {'mergekit s':>10s} {'safemerge s':>11s} {'ratio':>6s} equal")
    for name in args.methods.split(","):
        spec = METHODS[name]
        per: dict = {"weight": weights}
        if name in ("ties", "dare_ties", "della", "breadcrumbs", "dare_linear", "breadcrumbs_ties", "della_linear"):
            per["density"] = [0.5] * args.models
        glob: dict = {"t": 0.3} if name == "slerp" else {}
        ours_glob = {**glob, "tie_break": args.tie_break} if any(p.name == "tie_break" for p in spec.params) else glob
        ms = models[:1] if name == "slerp" else models
        if name == "slerp":
            per = {}
        if spec.base_policy == "ignored":
            inputs, b, mk_params = ms, None, {**glob, **per}
        else:
            inputs, b = [base, *ms], base
            mk_params = {**glob, **{k: {i + 1: v for i, v in enumerate(vals)} for k, vals in per.items()}}
        per_model = [{k: vals[i] for k, vals in per.items()} for i in range(len(ms))]

        def theirs():
            torch.manual_seed(1)
            return merge_tensors(inputs, name, parameters=mk_params, base_index=None if b is None else 0)

        def ours():
            return spec.apply(b, ms, per_model, ours_glob, torch.Generator().manual_seed(1))

        t_mk, out_mk = _median_time(theirs, args.repeats)
        t_sm, out_sm = _median_time(ours, args.repeats)
        print(f"{name:18s} {t_mk:10.3f} {t_sm:11.3f} {t_mk / t_sm:6.2f} {torch.equal(out_mk, out_sm)}", flush=True)


if __name__ == "__main__":
    main()
