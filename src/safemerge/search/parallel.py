"""Candidate evaluators: in this process, or spread over Ray workers (``--workers N``).

Each evaluator (and each Ray worker) holds the pool as state dicts and ONE resident model, tokenizes the objective
sets once, and scores candidates by merging in memory. Results come back in job order, so a search gives the same
records whichever evaluator ran it.

Placement (``--device`` / ``--dtype``, :mod:`safemerge.utils.device`): the pool, the merge and the resident model
live on the evaluator's device. Scoring is fp32 by default (``float32``: on a GPU the losses match the CPU's to
~1e-5, sums reduce in another order); ``bfloat16`` (or ``auto`` on a bf16 GPU) holds the resident model in bf16
and ``tf32`` scores with TF32 matrix products: faster, NOT bit-identical to fp32, and recorded as such
(:meth:`LocalEvaluator.scoring`, a search's ``result.json``). Ray workers on a cluster with GPUs each take
``gpus / workers`` of them (``num_gpus``), so several workers share one GPU.
"""

from __future__ import annotations

import time
from typing import Any

from safemerge.errors import ConfigError
from safemerge.search.objective import losses, tokenize_sets
from safemerge.search.spec import SearchSpec
from safemerge.utils.device import check_device_name, check_dtype_name, matmul_precision, resolve

DEFAULT_DEVICE = "auto"
DEFAULT_DTYPE = "float32"  # scoring compares candidates: exact by default, bf16 / TF32 on request

Job = tuple[int, dict[str, Any], int]  # (candidate index, config with pool names, merge seed)
Scored = tuple[dict[str, dict[str, float]], float]  # (losses per set and language, seconds)


class LocalEvaluator:
    """Scores candidates in this process with a resident model."""

    def __init__(self, spec: SearchSpec | dict[str, Any], safety: list[dict[str, Any]],
                 domain: list[dict[str, Any]], device: str = DEFAULT_DEVICE, dtype: str = DEFAULT_DTYPE):
        from safemerge.search.inmemory import ResidentModel

        self.placement = resolve(device, dtype)  # CUDA asked for without one: one line, before weights are read
        self.spec = spec if isinstance(spec, SearchSpec) else SearchSpec.model_validate(spec)
        self.resident = ResidentModel(self.spec.model_paths(), model_from=self.spec.pool[0].model,
                                      device=self.placement.device)
        if self.placement.dtype in ("bfloat16", "float16"):  # cast in place: the resident's parameter handles stay
            self.resident.model.to(self.placement.torch_dtype)
        self.data = tokenize_sets(self.resident.tokenizer, safety, domain)
        self.last_timing: dict[str, float] = {}

    def scoring(self) -> dict[str, Any]:
        """Where and how candidates are scored, for the search's records: device, dtype, ``fp32`` (plain fp32
        scoring: bit-identical to fp32 elsewhere up to the order of sums; False for bf16 / fp16 / TF32)."""
        return self.placement.record()

    def _score(self, limit: int | None = None) -> dict[str, dict[str, float]]:
        data = self.data
        if limit is not None:
            data = type(data)(data.safety[:limit], data.domain[:limit])
        with matmul_precision(self.placement.dtype):
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
        """Merge and score each job; ``last_timing`` holds the last one's merge and scoring seconds."""
        out = []
        for _index, cfg, seed in jobs:
            t0 = time.perf_counter()
            self.resident.load_merge(cfg, seed=seed)
            self._sync()  # the device's copies are asynchronous: the merge's time ends when they do
            t1 = time.perf_counter()
            parts = self._score()
            t2 = time.perf_counter()
            self.last_timing = {"merge_s": t1 - t0, "score_s": t2 - t1}
            out.append((parts, t2 - t0))
        return out

    def _sync(self) -> None:
        if self.placement.cuda:
            import torch

            torch.cuda.synchronize(self.placement.device)

    def close(self) -> None:
        pass


class RayEvaluator:
    """Spreads candidates over ``n`` Ray actors, each a :class:`LocalEvaluator` (one CPU each; on a cluster with
    GPUs and a CUDA device asked for, ``gpus / n`` GPUs each)."""

    def __init__(self, spec: SearchSpec, safety: list[dict[str, Any]], domain: list[dict[str, Any]],
                 n: int, address: str | None = None, device: str = DEFAULT_DEVICE, dtype: str = DEFAULT_DTYPE):
        import ray

        name, dtype = check_device_name(device), check_dtype_name(dtype)  # resolved by each actor, on its node
        self.started = not ray.is_initialized()
        if self.started:
            if address:
                _token_auth_for_address()
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
        self.ray = ray
        try:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            num_gpus = worker_gpus(name, gpus, n, address)
            actor = ray.remote(num_cpus=1, num_gpus=num_gpus)(LocalEvaluator)
            payload = spec.model_dump(mode="json")
            # Ray makes the actor's share of GPUs its only visible devices: inside, they are cuda / cuda:0
            on = "cuda" if num_gpus else "cpu"
            self.actors = [actor.remote(payload, safety, domain, on, dtype) for _ in range(n)]
        except BaseException:
            if self.started:
                ray.shutdown()
            raise

    def scoring(self) -> dict[str, Any]:
        return self.ray.get(self.actors[0].scoring.remote()) | {"workers": len(self.actors)}

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


def _token_auth_for_address() -> None:
    """Connect to a ``ray start`` cluster in its authentication mode. ``ray start`` (Ray >= 2.5x) turns token
    authentication on when a token exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``), but
    a driver joining by address does not, and is refused ("InvalidAuthToken"); Ray's own switch is applied here
    unless ``RAY_AUTH_MODE`` is set (a Ray without it: nothing to do)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def worker_gpus(device: str, cluster_gpus: float, n: int, address: str | None = None) -> float:
    """The GPUs each of ``n`` Ray workers asks for (``num_gpus``): 0 for ``cpu`` and for ``auto`` on a cluster
    without GPUs; ``cluster_gpus / n`` (at most 1) otherwise. CUDA asked for on a cluster without GPUs is a
    one-line ConfigError (Ray would wait for them forever)."""
    if device == "cpu" or (device == "auto" and cluster_gpus <= 0):
        return 0.0
    if cluster_gpus <= 0:
        where = f"the Ray cluster at {address}" if address else "the local Ray cluster (this machine)"
        raise ConfigError(f"--device {device}: {where} has no GPU; start its nodes on GPU machines "
                          "(`ray start --num-gpus N`) or use --device cpu")
    return min(1.0, cluster_gpus / n)


def make_evaluator(spec: SearchSpec, safety: list[dict[str, Any]], domain: list[dict[str, Any]],
                   workers: int = 0, address: str | None = None, device: str = DEFAULT_DEVICE,
                   dtype: str = DEFAULT_DTYPE) -> LocalEvaluator | RayEvaluator:
    """Ray workers for ``workers > 0`` (on the cluster at ``address``, else a local one), else this process;
    candidates are scored on ``device`` in ``dtype`` (module doc)."""
    if workers and workers > 0:
        return RayEvaluator(spec, safety, domain, workers, address, device, dtype)
    return LocalEvaluator(spec, safety, domain, device, dtype)
