"""Fixtures of the data tests: the tiny world (built once per session) and the default world's records."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny preset built end to end (data, tokenizer, pretrained base) through ``default_world`` into a
    private cache dir (``$SAFEMERGE_CACHE`` is restored afterwards)."""
    from safemerge.data.world import WorldConfig, default_world

    old = os.environ.get("SAFEMERGE_CACHE")
    os.environ["SAFEMERGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield default_world(WorldConfig.tiny(), show_progress=False)
    finally:
        if old is None:
            os.environ.pop("SAFEMERGE_CACHE", None)
        else:
            os.environ["SAFEMERGE_CACHE"] = old


@pytest.fixture(scope="session")
def default_data():
    """The default world's records and corpus, generated in memory (no tokenizer/model: fast)."""
    from safemerge.data.world import WorldConfig
    from safemerge.data.world.build import generate_data

    return generate_data(WorldConfig())
