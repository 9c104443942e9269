"""Fuzz every user-facing parser of safemerge with structurally generated inputs and print a table.

    .venv/bin/python bench/fuzz.py                      # 10,000 inputs per parser (all parsers)
    .venv/bin/python bench/fuzz.py -n 500 -t merge_yaml,gguf_header --examples 3

The generators and targets are those of the hypothesis tests (``tests/fuzz/fuzz_targets.py``): valid documents
and files mutated structurally (values of other types / out of range, keys deleted / added, text truncated or
spliced, header fields and bytes overwritten, files truncated) plus noise. The rule: every input gives a result
(exit 0) or a one-line ``SafemergeError`` (the CLI's ``error: ...``, exit 2); any other exception, a hang (past
``--timeout`` seconds per input) or, for ``safemerge serve`` over HTTP on loopback, a 5xx status / dropped connection
is a failure. Exit status 1 when there is any failure.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

import fuzz_targets as F  # noqa: E402


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--inputs", type=int, default=10_000, help="inputs per parser (default 10000)")
    ap.add_argument("-t", "--targets", default="all", help=f"comma-separated, from: {', '.join(F.TARGETS)}")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed gives the same inputs)")
    ap.add_argument("--timeout", type=float, default=F.TIMEOUT_S, help="seconds per input before it is a hang")
    ap.add_argument("--root", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--examples", type=int, default=2, help="failing inputs to show per parser")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    args = ap.parse_args(argv)
    args.out = args.out.resolve() if args.out is not None else None  # before the chdir below
    args.root = args.root.resolve() if args.root is not None else None

    names = list(F.TARGETS) if args.targets == "all" else [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [n for n in names if n not in F.TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; choose from {', '.join(F.TARGETS)}")
    F.TIMEOUT_S = args.timeout
    tmp = None if args.root else tempfile.TemporaryDirectory(prefix="safemerge-fuzz-")
    root = args.root or Path(tmp.name)  # type: ignore[union-attr]
    F.isolate_environment(root)
    os.chdir(F.Workspace(root).scratch("cwd"))  # relative paths the generators invent resolve in here
    ws = F.Workspace(root)

    started = datetime.now(timezone.utc)
    load_before = _load()
    print(f"# safemerge fuzz: {args.inputs} inputs per parser, seed {args.seed}, timeout {args.timeout:g} s/input")
    print(f"# {started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average (1/5/15 min) before: {load_before}", flush=True)
    rows = []
    failed = 0
    for name in names:
        target = F.TARGETS[name]
        t0 = time.perf_counter()
        ctx = target.setup(ws)
        setup_s = time.perf_counter() - t0
        try:
            stats = F.fuzz(target, ctx, args.inputs, seed=args.seed, keep=args.examples)
        finally:
            target.teardown(ctx)
        failed += stats.failures
        ok = stats.inputs - stats.clean_errors - stats.failures
        rows.append((name, target.what, stats.inputs, ok, stats.clean_errors, stats.failures, stats.seconds))
        print(f"{name}: {stats.inputs} inputs, {ok} results, {stats.clean_errors} one-line errors, "
              f"{stats.failures} failures, {stats.seconds:.1f} s (setup {setup_s:.1f} s)", flush=True)
        if stats.statuses:
            print("    " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.statuses.items())))
        for problem, count in sorted(stats.problems.items(), key=lambda kv: -kv[1]):
            print(f"    {count:6d} x {problem}")
        for problem, inp in stats.examples:
            print(f"    e.g. {problem}\n         input: {inp!r:.600}")
    table = ["| parser | what is called | inputs | results (exit 0 / HTTP 2xx-3xx) "
             "| one-line errors (exit 2 / HTTP 4xx) | failures | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    table += [f"| {n} | {w} | {i} | {o} | {e} | {f} | {s:.1f} |" for n, w, i, o, e, f, s in rows]
    total = [sum(r[k] for r in rows) for k in (2, 3, 4, 5)]
    table.append(f"| **all** | | {total[0]} | {total[1]} | {total[2]} | {total[3]} | "
                 f"{sum(r[6] for r in rows):.1f} |")
    print()
    print("\n".join(table))
    print(f"\n# load average after: {_load()}; finished {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    if args.out is not None:
        args.out.write_text("\n".join(table) + "\n", encoding="utf-8")
    if tmp is not None:
        os.chdir(ROOT)
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
