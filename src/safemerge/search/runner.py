"""The search loop: validate -> load the pool once -> score the pool -> ask/evaluate/tell -> write the best merge.

Output folder::

    OUT/spec.json          the resolved spec
    OUT/candidates.jsonl   every evaluated candidate (index, genes, config, losses per language, feasibility)
    OUT/state.json         plain-data search state: pool scores, told batches with their results, the pending
                           batch, library versions (atomic, after every ask and tell; see ``search/state.py``)
    OUT/best.yaml          the best configuration as a mergekit YAML (loadable by `safemerge merge` and mergekit)
    OUT/result.json        best candidate, pool baselines, Pareto front (nsga2), counts
    OUT/merged/            the best merge on disk (with output.merge_best)

A killed search resumes with ``resume=True``: the optimiser is rebuilt by replaying the stored batches (its RNG
included; no library pickle), candidates already in ``candidates.jsonl`` are not evaluated again, and the search
reaches the same result.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from safemerge.errors import ConfigError, InputError
from safemerge.search.objective import combine, read_sets, safest_by_lang
from safemerge.search.optimizers import make_optimizer, pareto_front
from safemerge.search.space import SearchSpace, build_space, with_paths
from safemerge.search.spec import SearchSpec, check_pool_architectures, load_spec
from safemerge.search.state import load_state, new_state, restore, results_of, rng_state
from safemerge.utils.atomic import atomic_write_json, atomic_write_text
from safemerge.utils.hashing import hash_obj



@dataclass
class SearchResult:
    out_dir: Path
    best: dict[str, Any]
    records: list[dict[str, Any]]
    pool: dict[str, dict[str, Any]]
    pareto: list[dict[str, Any]]
    best_yaml: Path
    merged: Path | None = None


@dataclass(frozen=True)
class Prepared:
    """Everything validated before any weight is loaded."""

    spec: SearchSpec
    space: SearchSpace
    safety: list[dict[str, Any]]
    domain: list[dict[str, Any]]
    num_layers: int


def prepare(spec: SearchSpec | str | os.PathLike | dict[str, Any]) -> Prepared:
    """Validate spec, method parameters, pool architectures and dataset columns (cheap; no weights)."""
    spec = spec if isinstance(spec, SearchSpec) else load_spec(spec)
    space = build_space(spec)
    layers = check_pool_architectures(spec)
    safety, domain = read_sets(spec.objective)
    check_extra_terms(spec)
    return Prepared(spec, space, safety, domain, layers)


def check_extra_terms(spec: SearchSpec) -> None:
    """The evaluation suites and judges of ``objective.extra`` terms, checked before any model loads (a suite file
    that is missing or malformed, an unknown judge): the same loaders the terms use later."""
    from safemerge.evaluate.judges.base import JUDGE_CHOICES
    from safemerge.evaluate.suites import resolve_suite

    for i, t in enumerate(spec.objective.extra):
        if t.judge not in JUDGE_CHOICES:
            raise ConfigError(f"objective.extra[{i}].judge: unknown judge {t.judge!r}; choose one of "
                              f"{', '.join(sorted(JUDGE_CHOICES))}")
        if t.suite != "world":
            if not os.path.exists(t.suite):
                raise InputError(f"objective.extra[{i}].suite: {t.suite} not found; give a suite YAML or a world "
                                 "folder")
            resolve_suite(t.suite)


def _spec_hash(spec: SearchSpec) -> str:
    # optimizer.select only picks among the evaluated candidates: a finished or resumed search may change it
    return hash_obj(spec.model_dump(mode="json", exclude={"workers": True, "ray_address": True, "output": True,
                                                          "optimizer": {"select"}}))


def _read_records(path: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: evaluated again
            continue
        out[int(rec["index"])] = rec
    return out


def _append(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _rank_key(r: dict[str, Any]) -> tuple[int, float, int]:
    return (0 if r["feasible"] else 1, r["loss"], r["index"])


HIGHER_IS_BETTER = ("alignment", "acc_gen", "acc_mc", "acc_mc_norm")


def select_key(select: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The sort key of ``optimizer.select`` (smallest = best): feasible first, then the loss (``loss``), the domain
    loss (``domain``) or an extra metric (best value first), ties broken by loss and index."""
    if select == "loss":
        return _rank_key

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        if select == "domain":
            value = r["domain"]
        else:
            value = float(r["extra"][select])
            value = -value if select in HIGHER_IS_BETTER else value
        return (0 if r["feasible"] else 1, value, r["loss"], r["index"])

    return key


def run_search(spec: SearchSpec | str | os.PathLike | dict[str, Any], out_dir: str | os.PathLike,
               resume: bool = False, workers: int | None = None, show_progress: bool = True,
               stop_after: int | None = None, on_record: Callable[[dict[str, Any]], None] | None = None,
               device: str | None = None, dtype: str | None = None) -> SearchResult:
    """Run (or resume) a merge search; returns the best candidate and writes OUT (see module doc).

    ``stop_after`` stops after that many NEW evaluations (for tests of resumption); the state stays resumable.
    ``device`` / ``dtype``: where and how candidates are scored (default ``auto`` / ``float32``;
    :mod:`safemerge.search.parallel`); recorded in ``state.json`` and ``result.json`` (``scoring``). A search is
    resumed only with the dtype it was scored in.
    """
    prep = prepare(spec)
    spec, space = prep.spec, prep.space
    out = Path(out_dir)
    state_path, cand_path = out / "state.json", out / "candidates.jsonl"
    digest = _spec_hash(spec)
    state: dict[str, Any] | None = None
    if state_path.exists() or cand_path.exists() or (out / "state.pkl").exists():
        if not resume:
            raise InputError(f"{out}: a search already ran here; pass --resume to continue it or choose another --out")
        if (out / "state.pkl").exists() and not state_path.exists():
            raise InputError(f"{out}: the search state is a pickle written by an older safemerge, which cannot be "
                             "resumed safely; start a new search with another --out")
        if state_path.exists():
            state = load_state(state_path, digest)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "spec.json", spec.model_dump(mode="json"))
    records = _read_records(cand_path)
    opt = restore(state_path, state, space, spec.optimizer) if state is not None else None

    from safemerge.search.parallel import DEFAULT_DEVICE, DEFAULT_DTYPE, make_evaluator

    n_workers = spec.workers if workers is None else workers
    evaluator = make_evaluator(spec, prep.safety, prep.domain, n_workers, spec.ray_address,
                               device or DEFAULT_DEVICE, dtype or DEFAULT_DTYPE)
    try:
        scoring = evaluator.scoring()
        if state is not None:
            _check_scoring(out, state.get("scoring"), scoring)
        if state is None:
            pool = {name: evaluator.score_pool(name) for name in space.pool}
            cocktail = None
            if spec.optimizer.name == "lm_cocktail":
                cocktail = {name: combine(spec.objective, evaluator.score_pool(name, spec.optimizer.cocktail_examples),
                                          {})["objective"] for name in space.pool}
            state = new_state(digest, spec.optimizer.name, pool, cocktail) | {"scoring": scoring}
            opt = make_optimizer(space, spec.optimizer, cocktail)
            atomic_write_json(state_path, state)
        pool_parts = state["pool"]
        ref = safest_by_lang(pool_parts)
        evaluated_now = 0
        with _Progress(show_progress, opt.planned, len(records)) as prog:
            rank = select_key(spec.optimizer.select)
            prog.best(min(records.values(), key=rank) if records else None)
            while True:
                if state["pending"] is None:
                    xs = opt.ask()
                    if not xs:
                        break
                    start = state["told"][-1]["start"] + len(state["told"][-1]["xs"]) if state["told"] else 0
                    state["pending"] = {"start": start, "xs": xs}
                    state["rng"] = rng_state(opt)
                    atomic_write_json(state_path, state)
                start, xs = state["pending"]["start"], state["pending"]["xs"]
                todo = [(start + i, x) for i, x in enumerate(xs) if start + i not in records]
                if stop_after is not None and evaluated_now + len(todo) > stop_after:
                    todo = todo[: max(0, stop_after - evaluated_now)]
                jobs = [(i, space.decode(x), spec.optimizer.seed + i) for i, x in todo]
                for (i, x), (_, cfg, _), (parts, seconds) in zip(todo, jobs, evaluator.evaluate(jobs)):
                    rec = {"index": i, "x": x, "values": dict(zip(space.labels(), space.decode_values(x))),
                           "config": cfg, **combine(spec.objective, parts, ref, parts.get("extra")), "seconds": seconds}
                    _append(cand_path, rec)
                    records[i] = rec
                    evaluated_now += 1
                    prog.advance(rec, min(records.values(), key=rank))
                    if on_record is not None:
                        on_record(rec)
                if any(start + i not in records for i in range(len(xs))):
                    return _partial(out, records, pool_parts, space, spec, scoring)
                told = [records[start + i] for i in range(len(xs))]
                opt.tell(xs, told)
                state["told"].append({"start": start, "xs": xs, "results": results_of(told)})
                state["pending"] = None
                atomic_write_json(state_path, state)
    finally:
        evaluator.close()
    return _finish(out, records, pool_parts, space, spec, scoring)


def _check_scoring(out: Path, stored: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """A resumed search must score in the dtype it started with (losses of another dtype are not comparable)."""
    before = (stored or {}).get("dtype", "float32")  # searches stored before the device setting scored in fp32
    if before != now["dtype"]:
        raise InputError(f"{out}: this search was scored in {before} and would now be scored in {now['dtype']}; "
                         f"resume it with --dtype {before} or start a new search with another --out")


def _summary(spec: SearchSpec, space: SearchSpace, records: dict[int, dict[str, Any]],
             pool: dict[str, Any], scoring: dict[str, Any] | None = None) -> dict[str, Any]:
    recs = [records[i] for i in sorted(records)]
    best = min(recs, key=select_key(spec.optimizer.select))
    front: list[dict[str, Any]] = []
    if spec.optimizer.name == "nsga2":
        feas = [r for r in recs if r["feasible"]] or recs
        idx = pareto_front([(r["safety"], r["domain"]) for r in feas])
        front = [{"index": feas[i]["index"], "safety": feas[i]["safety"], "domain": feas[i]["domain"],
                  "values": feas[i]["values"]} for i in idx]
    pool_summary = {name: combine(spec.objective, parts, safest_by_lang(pool), parts.get("extra")) for name, parts in pool.items()}
    return {"best": best, "pool": pool_summary, "pareto": front, "evaluations": len(recs),
            "feasible": sum(r["feasible"] for r in recs), "method": space.method, "optimizer": spec.optimizer.name,
            "select": spec.optimizer.select, "scoring": scoring}


def _partial(out: Path, records: dict[int, dict[str, Any]], pool: dict[str, Any], space: SearchSpace,
             spec: SearchSpec, scoring: dict[str, Any] | None = None) -> SearchResult:
    s = _summary(spec, space, records, pool, scoring)
    return SearchResult(out, s["best"], [records[i] for i in sorted(records)], s["pool"], s["pareto"], out / "best.yaml")


def best_yaml_text(cfg: dict[str, Any], paths: dict[str, str]) -> str:
    return yaml.safe_dump(with_paths(cfg, paths), sort_keys=False)


def _finish(out: Path, records: dict[int, dict[str, Any]], pool: dict[str, Any], space: SearchSpace,
            spec: SearchSpec, scoring: dict[str, Any] | None = None) -> SearchResult:
    s = _summary(spec, space, records, pool, scoring)
    best_yaml = atomic_write_text(out / "best.yaml", best_yaml_text(s["best"]["config"], spec.model_paths()))
    atomic_write_json(out / "result.json", s)
    merged = None
    if spec.output.merge_best:
        from safemerge.merge import merge

        recipe = out / "merged" / "mergekit_config.yml"
        same = recipe.is_file() and recipe.read_text(encoding="utf-8") == best_yaml.read_text(encoding="utf-8")
        merged = out / "merged" if same else merge(str(best_yaml), out / "merged", overwrite=True)
    return SearchResult(out, s["best"], [records[i] for i in sorted(records)], s["pool"], s["pareto"],
                        best_yaml, merged)


class _Progress:
    """A rich progress bar whose description shows the best loss so far."""

    def __init__(self, enabled: bool, total: int, done: int):
        from safemerge.utils.progress import make_progress

        self.p = make_progress(disable=not enabled)
        self.total, self.done = total, done
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Progress:
        self.p.__enter__()
        self.task = self.p.add_task("search", total=self.total, completed=self.done)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.p.__exit__(*exc)

    def best(self, rec: dict[str, Any] | None) -> None:
        if rec is not None:
            self.p.update(self.task, description=_describe(rec))

    def advance(self, rec: dict[str, Any], best: dict[str, Any]) -> None:
        self.p.update(self.task, advance=1, description=_describe(best))


def _describe(best: dict[str, Any]) -> str:
    flag = "" if best["feasible"] else " (infeasible)"
    return f"search  best #{best['index']}: L={best['objective']:.4f} safety={best['safety']:.3f} " \
           f"domain={best['domain']:.3f}{flag}"
