"""Candidate evaluators: in this process, or spread over Ray workers (``--workers N``).

Each evaluator (and each Ray worker) holds the pool as state dicts and ONE resident model, tokenizes the objective
sets once, and scores candidates by merging in memory. Results come back in job order, so a search gives the same
records whichever evaluator ran it.
"""

from __future__ import annotations

import time
from typing import Any

from safemerge.errors import ConfigError
from safemerge.search.objective import losses, tokenize_sets
from safemerge.search.spec import SearchSpec

Job = tuple[int, dict[str, Any], int]  # (candidate index, config with pool names, merge seed)
Scored = tuple[dict[str, dict[str, float]], float]  # (losses per set and language, seconds)


class LocalEvaluator:
    """Scores candidates in this process with a resident model."""

    def __init__(self, spec: SearchSpec | dict[str, Any], safety: list[dict[str, Any]],
                 domain: list[dict[str, Any]]):
        from safemerge.search.inmemory import ResidentModel

        self.spec = spec if isinstance(spec, SearchSpec) else SearchSpec.model_validate(spec)
        self.resident = ResidentModel(self.spec.model_paths(), model_from=self.spec.pool[0].model)
        self.data = tokenize_sets(self.resident.tokenizer, safety, domain)

    def _score(self, limit: int | None = None) -> dict[str, dict[str, float]]:
        data = self.data
        if limit is not None:
            data = type(data)(data.safety[:limit], data.domain[:limit])
        parts = losses(self.resident.model, self.resident.tokenizer, data, self.spec.objective.batch_size)
        if self.spec.objective.extra:
            parts["extra"] = self._extra()
        return parts

    def _extra(self) -> dict[str, float]:
        from safemerge.evaluate import evaluate_model

        out: dict[str, float] = {}
        for term in self.spec.objective.extra:
            report = evaluate_model(self.resident.model, suite=term.suite, judge=term.judge, limit=term.limit,
                                    tokenizer=self.resident.tokenizer, n_boot=10, cache=False, progress=False)
            value = report.metric(term.metric)
            if value is None:
                raise ConfigError(f"objective.extra: metric {term.metric!r} is undefined on suite {term.suite!r} "
                                  "(e.g. harm_change/win_rate need a reference); choose another metric")
            out[term.metric] = float(value)
        return out

    def score_pool(self, name: str, limit: int | None = None) -> dict[str, dict[str, float]]:
        """Losses of one unmerged pool model."""
        self.resident.load_pool_model(name)
        return self._score(limit)

    def evaluate(self, jobs: list[Job]) -> list[Scored]:
        out = []
        for _index, cfg, seed in jobs:
            t0 = time.perf_counter()
            self.resident.load_merge(cfg, seed=seed)
            out.append((self._score(), time.perf_counter() - t0))
        return out

    def close(self) -> None:
        pass


class RayEvaluator:
    """Spreads candidates over ``n`` Ray actors, each a :class:`LocalEvaluator` (one CPU each)."""

    def __init__(self, spec: SearchSpec, safety: list[dict[str, Any]], domain: list[dict[str, Any]],
                 n: int, address: str | None = None):
        import ray

        self.started = not ray.is_initialized()
        if self.started:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1)(LocalEvaluator)
        payload = spec.model_dump(mode="json")
        self.ray = ray
        self.actors = [actor.remote(payload, safety, domain) for _ in range(n)]

    def score_pool(self, name: str, limit: int | None = None) -> dict[str, dict[str, float]]:
        return self.ray.get(self.actors[0].score_pool.remote(name, limit))

    def evaluate(self, jobs: list[Job]) -> list[Scored]:
        n = len(self.actors)
        chunks = [jobs[k::n] for k in range(n)]
        futures = [a.evaluate.remote(c) for a, c in zip(self.actors, chunks) if c]
        results = self.ray.get(futures)
        out: list[Scored | None] = [None] * len(jobs)
        for k, res in enumerate(results):
            for j, r in enumerate(res):
                out[k + j * n] = r
        return [r for r in out if r is not None]

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def make_evaluator(spec: SearchSpec, safety: list[dict[str, Any]], domain: list[dict[str, Any]],
                   workers: int = 0, address: str | None = None) -> LocalEvaluator | RayEvaluator:
    if workers and workers > 0:
        return RayEvaluator(spec, safety, domain, workers, address)
    return LocalEvaluator(spec, safety, domain)
