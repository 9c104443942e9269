"""Every user-facing parser under hypothesis (the generators of fuzz_targets.py; ``bench/fuzz.py`` runs the same
ones for 10,000 inputs each): an input gives a result or a one-line SafemergeError, never another exception type
or a hang; the server over HTTP never answers 5xx. A failure is shrunk to a minimal input and reported."""

from __future__ import annotations

import pytest

import fuzz_targets as F

EXAMPLES = 150  # per parser; bench/fuzz.py runs 10,000


@pytest.mark.parametrize("name", [n for n, t in F.TARGETS.items() if not t.slow])
def test_parser_gives_result_or_one_line_error(name, workspace):
    target = F.TARGETS[name]
    ctx = target.setup(workspace)
    try:
        stats = F.fuzz(target, ctx, EXAMPLES, shrink=True)
    finally:
        target.teardown(ctx)
    assert stats.failures == 0 and stats.inputs >= EXAMPLES // 2


@pytest.mark.slow
def test_serve_never_answers_5xx(workspace):
    target = F.TARGETS["serve_http"]
    ctx = target.setup(workspace)
    try:
        stats = F.fuzz(target, ctx, 200, shrink=True)
    finally:
        target.teardown(ctx)
    assert stats.failures == 0
    assert {"HTTP 200", "HTTP 401", "HTTP 422"} <= set(stats.statuses), stats.statuses
