"""Fuzz tests: a workspace of real inputs (the session's tiny models, a tiny GGUF file) and a private cache."""

from __future__ import annotations

import pytest

import fuzz_targets as F


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAFEMERGE_CACHE", str(root / "cache"))  # a GGUF the generators name is converted in here
        mp.chdir(root)  # relative paths the generators invent resolve in here
        yield F.Workspace(root, models=dict(tiny_models))
