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


def _cli_args(name: str, ctx: dict, inp, tmp) -> list[str]:
    if name == "merge_yaml":
        data, shard, memory = inp
        (tmp / "recipe.yaml").write_bytes(data)
        return ["merge", str(tmp / "recipe.yaml"), str(tmp / "out"), "--dry-run", "--max-shard-size",
                shard or "5GB"] + (["--max-memory", memory] if memory else [])
    (tmp / "spec.yaml").write_bytes(inp)
    cmd = "search" if name == "search_spec" else "synth"
    return [cmd, str(tmp / "spec.yaml"), "--out", str(tmp / "out"), "--check"]


@pytest.mark.parametrize("name", ["merge_yaml", "search_spec", "synth_spec"])
def test_cli_exit_code_is_0_or_2(name, workspace):
    """The same inputs through the command line (`merge --dry-run`, `search --check`, `synth --check`): exit 0 or
    2, never a traceback; our errors are one `error: ...` line (click's usage errors are its own lines)."""
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings

    from safemerge.cli import main

    target = F.TARGETS[name]
    ctx = target.setup(workspace)
    tmp = workspace.scratch(f"cli_{name}")

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy(ctx))
    def one(inp) -> None:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                main(_cli_args(name, ctx, inp, tmp))
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
        text = err.getvalue()
        assert code in (0, 2) and "Traceback" not in text, (code, text[-2000:])
        if code == 2 and "Usage:" not in text:
            assert [ln for ln in text.splitlines() if ln.strip()][-1].startswith("error: "), text

    one()
