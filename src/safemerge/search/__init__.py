"""safemerge.search: data-aware merge-coefficient search (paper B, "One Bad Model Spoils the Bunch").

``run_search(spec, out_dir, resume=False, workers=None)`` minimises ``L_safety + alpha * L_domain`` over a search
space of method parameters (per model or per layer group), with CMA-ES, grid, LM-Cocktail, NSGA-II or random
search, merging every candidate in memory into one resident model. See docs/search.md.

Modules: ``spec`` (validated YAML spec), ``space`` (genes <-> mergekit configs), ``optimizers``, ``objective``,
``inmemory`` (resident model), ``parallel`` (in-process / Ray evaluators), ``runner`` (the resumable loop), ``cli``.
"""

from safemerge.search.runner import SearchResult, prepare, run_search
from safemerge.search.spec import SearchSpec, load_spec

__all__ = ["SearchResult", "SearchSpec", "load_spec", "prepare", "run_search"]
