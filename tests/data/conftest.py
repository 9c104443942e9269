"""Fixtures of the data tests: the tiny world (built once per session) and the default world's records."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny preset built end to end (data, tokenizer, pretrained base) into a temp dir."""
    from safemerge.data.world import WorldConfig, build_world

    return build_world(tmp_path_factory.mktemp("world") / "tiny", WorldConfig.tiny(), show_progress=False)


@pytest.fixture(scope="session")
def default_data():
    """The default world's records and corpus, generated in memory (no tokenizer/model: fast)."""
    from safemerge.data.world import WorldConfig
    from safemerge.data.world.build import generate_data

    return generate_data(WorldConfig())
