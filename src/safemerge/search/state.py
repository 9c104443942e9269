"""The search state as plain JSON, and the optimiser rebuilt from it by replay (no library pickles).

``OUT/state.json`` holds everything a search needs to continue::

    {"version": 2, "spec_hash": ..., "pool": {...}, "cocktail": {...} | null,
     "libraries": {"optuna": "5.1.0"},          # the versions that asked the stored candidates
     "told": [{"start": 0, "xs": [[...], ...], "results": [{"loss", "safety", "domain", "violation"}, ...]}, ...],
     "pending": {"start": 8, "xs": [[...], ...]} | null,
     "rng": {...} | null}                        # the optimiser's own generator state after the last ask, if any

The seeds are in the spec (its hash is stored). On resume the optimiser is built anew from the spec and every
stored batch is replayed through the public ask/tell API: ``ask()`` must return exactly the stored candidates
(floats survive JSON exactly), then the stored results are told. The pending batch is asked once more. So a
resumed search asks exactly what an uninterrupted one would, for NSGA-II (optuna), CMA-ES (cma), grid, random
and LM-Cocktail alike. Where the optimiser has its own numpy generator (CMA-ES, random), its state after the
replay must also equal the stored one.

A state written under other library versions whose replay asks other candidates cannot be continued as the
same search: that is a one-line :class:`InputError` naming both versions, never a traceback. A state whose
replay matches resumes under the new versions.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from safemerge.errors import InputError
from safemerge.search.optimizers import make_optimizer
from safemerge.search.space import SearchSpace
from safemerge.search.spec import OptimizerSpec

STATE_VERSION = 2
RESULT_KEYS = ("loss", "safety", "domain", "violation")  # what ``tell`` reads from a candidate's record
LIBRARIES = {"nsga2": ("optuna",), "cma": ("cma", "numpy"), "random": ("numpy",), "grid": (), "lm_cocktail": ()}


def library_versions(optimizer: str) -> dict[str, str]:
    """The installed versions of the libraries that decide this optimiser's candidates."""
    return {name: metadata.version(name) for name in LIBRARIES[optimizer]}


def new_state(spec_hash: str, optimizer: str, pool: dict[str, Any], cocktail: dict[str, float] | None
              ) -> dict[str, Any]:
    return {"version": STATE_VERSION, "spec_hash": spec_hash, "pool": pool, "cocktail": cocktail,
            "libraries": library_versions(optimizer), "told": [], "pending": None, "rng": None}


def rng_state(opt: Any) -> dict[str, Any] | None:
    """The optimiser's own numpy generator state (plain data), or None where it has none."""
    rng = getattr(opt, "rng", None) or getattr(getattr(opt, "randn", None), "rng", None)
    return None if rng is None else rng.bit_generator.state


def results_of(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: float(r.get(k, 0.0)) for k in RESULT_KEYS} for r in records]


def load_state(path: Path, spec_hash: str) -> dict[str, Any]:
    """Read OUT/state.json, with one-line errors for a foreign, old or damaged state."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable search state ({type(exc).__name__}); "
                         "remove the folder or choose another --out") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise InputError(f"{path}: search state version {state.get('version') if isinstance(state, dict) else '?'} "
                         f"is not {STATE_VERSION}; start a new search with another --out")
    if state.get("spec_hash") != spec_hash:
        raise InputError(f"{path.parent}: the stored search used a different spec; use the same spec to resume "
                         "or choose another --out")
    return state


def _mismatch(path: Path, state: dict[str, Any], opt_name: str, where: str) -> InputError:
    then, now = state.get("libraries", {}), library_versions(opt_name)
    if then != now:
        fmt = lambda v: ", ".join(f"{k} {x}" for k, x in sorted(v.items())) or "none"  # noqa: E731
        pins = " ".join(f"{k}=={x}" for k, x in sorted(then.items()))
        return InputError(f"{path}: written with {fmt(then)}, this is {fmt(now)}, whose {opt_name} asks other "
                          f"candidates ({where}); resume with `pip install {pins}` or start a new --out")
    return InputError(f"{path}: replaying the stored candidates gives others ({where}); the state does not "
                      "belong to this spec: start a new --out")


def restore(path: Path, state: dict[str, Any], space: SearchSpace, opt_spec: OptimizerSpec) -> Any:
    """The optimiser rebuilt by replaying the stored batches (and re-asking the pending one)."""
    opt = make_optimizer(space, opt_spec, state.get("cocktail"))
    for k, batch in enumerate(state["told"]):
        xs = opt.ask()
        if xs != batch["xs"]:
            raise _mismatch(path, state, opt_spec.name, f"batch {k + 1} of {len(state['told'])}")
        opt.tell(xs, batch["results"])
    if state.get("pending") is not None:
        xs = opt.ask()
        if xs != state["pending"]["xs"]:
            raise _mismatch(path, state, opt_spec.name, "the pending batch")
    if state.get("rng") is not None and rng_state(opt) != state["rng"]:
        raise _mismatch(path, state, opt_spec.name, "the generator state after the replay")
    state["libraries"] = library_versions(opt_spec.name)
    return opt
