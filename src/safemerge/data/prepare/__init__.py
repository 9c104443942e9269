"""``safemerge data prepare SPEC``: a study's inputs (SFT mixtures, DPO pairs, monolingual splits, evaluation
sets and suites) built from public datasets, with a datacard. See :mod:`safemerge.data.prepare.build` and
docs/data.md."""

from safemerge.data.prepare.build import PrepareResult, prepare
from safemerge.data.prepare.spec import PrepareSpec, load_prepare_spec

__all__ = ["PrepareResult", "PrepareSpec", "load_prepare_spec", "prepare"]
