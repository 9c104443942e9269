"""Candidate proposers with one ask/tell protocol; a search resumes by replaying ask/tell (``search/state.py``).

- :class:`CmaOptimizer` - CMA-ES (``cma``) in the unit cube, sigma0 = 1/6 and population 4 + floor(3 ln n) by
  default (paper B); its random numbers come from its own seeded numpy generator (``randn``), whose state the
  search state records, so a resumed search asks exactly what an uninterrupted one would.
- :class:`GridOptimizer` - the full product of per-parameter value lists (paper B: density {0.25, 0.5, 1} x
  weight {0.25, 0.5, 1}).
- :class:`RandomOptimizer` - uniform samples (a baseline).
- :class:`LmCocktailOptimizer` - one candidate with weights = softmax(-loss_i / T) of the pool models' losses.
- :class:`NsgaOptimizer` - optuna NSGA-II on (safety loss, domain loss); the Pareto front is read from the results.

``ask()`` returns the next batch of unit-cube points (empty when finished); ``tell(xs, results)`` reports their
results (dicts with ``loss``, ``safety``, ``domain``, ``violation``) in the same order.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Protocol

import numpy as np

from safemerge.errors import ConfigError
from safemerge.search.space import SearchSpace
from safemerge.search.spec import OptimizerSpec


class Optimizer(Protocol):
    def ask(self) -> list[list[float]]: ...

    def tell(self, xs: list[list[float]], results: list[dict[str, Any]]) -> None: ...


class _Randn:
    """``randn(*shape)`` for cma from a private, seeded numpy Generator (no global RNG state)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


class CmaOptimizer:
    def __init__(self, dim: int, opt: OptimizerSpec):
        import cma

        self.dim = dim
        self.popsize = opt.population(dim)
        self.generations = max(1, opt.budget // self.popsize)
        self.planned = self.generations * self.popsize
        self.done_generations = 0
        n = max(dim, 2)  # cma refuses 1-D problems: pad with an ignored gene
        self.randn = _Randn(opt.seed)
        self.es = cma.CMAEvolutionStrategy(
            [opt.x0] * n, opt.sigma0,
            {"bounds": [0.0, 1.0], "popsize": self.popsize, "seed": opt.seed + 1, "randn": self.randn,
             "verbose": -9},
        )

    def ask(self) -> list[list[float]]:
        if self.done_generations >= self.generations:
            return []
        self._full = [np.asarray(x, dtype=float) for x in self.es.ask()]
        return [[float(v) for v in x[: self.dim]] for x in self._full]

    def tell(self, xs: list[list[float]], results: list[dict[str, Any]]) -> None:
        self.es.tell(self._full, [float(r["loss"]) for r in results])
        self.done_generations += 1


class GridOptimizer:
    def __init__(self, space: SearchSpace, opt: OptimizerSpec, batch: int = 8):
        missing = sorted({g.param for g in space.genes} - set(opt.grid))
        if missing:
            raise ConfigError(f"optimizer.grid: no values for searched parameter(s) {missing}; "
                              "add e.g. grid: {" + f"{missing[0]}: [0.25, 0.5, 1.0]" + "}")
        axes = [[g.unit(v) for v in opt.grid[g.param]] for g in space.genes]
        size = math.prod(len(a) for a in axes)
        if size > opt.budget:
            raise ConfigError(f"optimizer.budget: the grid has {size} points but the budget is {opt.budget}; "
                              "raise the budget, shorten the grid lists or search fewer parameters")
        self.points = [list(p) for p in itertools.product(*axes)]
        self.planned = len(self.points)
        self.next = 0
        self.batch = batch

    def ask(self) -> list[list[float]]:
        out = self.points[self.next: self.next + self.batch]
        self.next += len(out)
        return out

    def tell(self, xs: list[list[float]], results: list[dict[str, Any]]) -> None:
        pass


class RandomOptimizer:
    def __init__(self, dim: int, opt: OptimizerSpec, batch: int = 8):
        self.rng = np.random.default_rng(opt.seed)
        self.left = self.planned = opt.budget
        self.dim, self.batch = dim, batch

    def ask(self) -> list[list[float]]:
        n = min(self.batch, self.left)
        self.left -= n
        return [[float(v) for v in self.rng.random(self.dim)] for _ in range(n)]

    def tell(self, xs: list[list[float]], results: list[dict[str, Any]]) -> None:
        pass


def cocktail_weights(losses: list[float], temperature: float) -> list[float]:
    """LM-Cocktail: softmax(-loss / T), computed stably."""
    z = np.asarray([-loss / temperature for loss in losses], dtype=float)
    z -= z.max()
    w = np.exp(z)
    return [float(v) for v in w / w.sum()]


class LmCocktailOptimizer:
    """One candidate: each pool model's ``weight`` (or SLERP's ``t``) from its loss on a few examples."""

    def __init__(self, space: SearchSpace, opt: OptimizerSpec, pool_losses: dict[str, float]):
        self.weights = cocktail_weights([pool_losses[m] for m in space.pool], opt.temperature)
        by_model = dict(zip(space.pool, self.weights))
        values: dict[str, float] = {}
        for g in space.genes:
            if g.param == "weight" and g.model is not None:
                values[g.label] = by_model[g.model]
            elif g.param == "t" and g.model is None and len(space.pool) == 2 and len(space.inputs) == 1:
                values[g.label] = by_model[space.inputs[0]]  # SLERP: t = the non-base model's share
            else:
                raise ConfigError(f"space.params: LM-Cocktail sets only per-model 'weight' (or SLERP 't'); "
                                  f"move {g.param!r} to space.model_fixed / space.fixed")
        self.point = space.encode_values(values)
        self.asked = False
        self.planned = 1

    def ask(self) -> list[list[float]]:
        if self.asked:
            return []
        self.asked = True
        return [self.point]

    def tell(self, xs: list[list[float]], results: list[dict[str, Any]]) -> None:
        pass


class NsgaOptimizer:
    """optuna NSGA-II over (L_safety, L_domain); infeasible candidates carry their violation as a constraint."""

    def __init__(self, space: SearchSpace, opt: OptimizerSpec):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.labels = space.labels()
        self.popsize = opt.population(space.dim)
        self.left = self.planned = opt.budget
        # optuna 5 records constraints on the trial (Trial.set_constraint); 4.x reads them through constraints_func
        self.per_trial_constraints = hasattr(optuna.trial.Trial, "set_constraint")
        extra = {} if self.per_trial_constraints else {"constraints_func": _violation_of}
        sampler = optuna.samplers.NSGAIISampler(population_size=self.popsize, seed=opt.seed, **extra)
        self.study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        self._trials: list[Any] = []

    def ask(self) -> list[list[float]]:
        n = min(self.popsize, self.left)
        self.left -= n
        self._trials = [self.study.ask() for _ in range(n)]
        return [[t.suggest_float(label, 0.0, 1.0) for label in self.labels] for t in self._trials]

    def tell(self, xs: list[list[float]], results: list[dict[str, Any]]) -> None:
        for trial, r in zip(self._trials, results):
            if self.per_trial_constraints:
                trial.set_constraint("language_margin", float(r.get("violation", 0.0)))
            else:
                trial.set_user_attr("language_margin", float(r.get("violation", 0.0)))
            self.study.tell(trial, (float(r["safety"]), float(r["domain"])))
        self._trials = []


def _violation_of(trial: Any) -> tuple[float]:
    """optuna 4.x's ``constraints_func``: the language-margin violation stored on the trial (feasible when <= 0)."""
    return (float(trial.user_attrs.get("language_margin", 0.0)),)


def make_optimizer(space: SearchSpace, opt: OptimizerSpec, pool_losses: dict[str, float] | None = None) -> Any:
    if opt.name == "cma":
        return CmaOptimizer(space.dim, opt)
    if opt.name == "grid":
        return GridOptimizer(space, opt)
    if opt.name == "random":
        return RandomOptimizer(space.dim, opt)
    if opt.name == "nsga2":
        return NsgaOptimizer(space, opt)
    assert pool_losses is not None, "LM-Cocktail needs the pool models' losses"
    return LmCocktailOptimizer(space, opt, pool_losses)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (minimisation on both axes), sorted by the first axis."""
    front = [i for i, (a, b) in enumerate(points)
             if not any((c <= a and d <= b) and (c < a or d < b) for c, d in points)]
    return sorted(front, key=lambda i: points[i])
