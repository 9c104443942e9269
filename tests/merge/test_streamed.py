"""The merge-to-disk workers (merge/streamed.py) and the positioned-write shard writer (merge/writer.py): elementwise
methods streamed in chunks give the bits of the whole-tensor path, tensors written in any order give the same shards,
and errors are those of the whole-tensor path."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from safemerge.errors import InputError
from safemerge.merge import streamed
from safemerge.merge.config import load_config
from safemerge.merge.engine import merge_state_dicts
from safemerge.merge.task import run_task
from safemerge.merge.io import CheckpointSource, DictSource, TensorInfo
from safemerge.merge.plan import build_plan
from safemerge.merge.writer import ShardedWriter


def _values(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random values with the awkward ones mixed in: signed zeros, subnormals, large magnitudes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 0.02
    special = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 3e4, -3e4, 1.0, -1.0])
    pick = torch.randint(0, 8, (n,), generator=g)
    where = torch.rand(n, generator=g) < 0.1
    return torch.where(where, special[pick], x).to(dtype)


def _model(root: Path, name: str, tensors: dict[str, torch.Tensor], fmt: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    if fmt == "bin":
        torch.save(tensors, d / "pytorch_model.bin")
    else:
        save_file(tensors, str(d / "model.safetensors"))
    return d


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


SHAPES = {"w": (37, 29), "v": (1000,), "s": (), "e": (0, 3), "big": (3, 257)}


def _merge_both(tmp_path: Path, cfg: dict, dicts: dict[str, dict[str, torch.Tensor]], fmt: str,
                check_finite: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(chunked through write_task from model files, whole through run_task in memory) for the same recipe."""
    dirs = {label: _model(tmp_path, label, sd, fmt) for label, sd in dicts.items()}
    sources = {str(d): CheckpointSource(d) for d in dirs.values()}
    disk_cfg = json.loads(json.dumps(cfg).replace('"@', f'"{tmp_path}/'))
    plan = build_plan(load_config(disk_cfg), sources)
    assert all(streamed.elementwise(plan, t) for t in plan.tasks)
    out = tmp_path / "out"
    out.mkdir()
    writer = ShardedWriter(out, [(t.name, t.out) for t in plan.tasks], 3000)
    for task in reversed(plan.tasks):  # any order
        streamed.write_task(writer, plan, task, 0, check_finite)
    writer.close()
    chunked: dict[str, torch.Tensor] = {}
    for shard in out.glob("*.safetensors"):
        chunked.update(load_file(str(shard)))
    whole_cfg = json.loads(json.dumps(cfg).replace('"@', '"'))
    whole = merge_state_dicts(whole_cfg, dicts)
    return chunked, whole


@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(["linear", "task_arithmetic"]), n_models=st.integers(1, 3),
       dtypes=st.sampled_from([("float32",) * 4, ("bfloat16",) * 4, ("float16",) * 4,
                               ("bfloat16", "float32", "float16", "bfloat16")]),
       compute=st.sampled_from([None, "float32", "bfloat16", "float16"]), normalize=st.booleans(),
       weights=st.lists(st.sampled_from([0.5, 0.3, 0.2, -0.7, 1.0, 1 / 3, 0.0]), min_size=3, max_size=3),
       lam=st.sampled_from([1.0, 0.6]), chunk=st.sampled_from([3, 64, 1000]), fmt=st.sampled_from(["st", "bin"]),
       seed=st.integers(0, 1000))
def test_chunked_elementwise_merge_equals_the_whole_tensor_path(tmp_path_factory, method, n_models, dtypes, compute,
                                                                 normalize, weights, lam, chunk, fmt, seed):
    if method == "linear" and normalize and sum(weights[:n_models]) == 0:
        weights = [1.0, 0.5, 0.25]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(streamed, "CHUNK", chunk)
        _check_chunked(tmp_path_factory, method, n_models, dtypes, compute, normalize, weights, lam, fmt, seed)


def _check_chunked(tmp_path_factory, method, n_models, dtypes, compute, normalize, weights, lam, fmt, seed):
    tmp_path = tmp_path_factory.mktemp("chunked")
    labels = ["base", "a", "b", "c"][: n_models + 1]
    dicts = {label: {k: _values(max(1, torch.Size(s).numel()), getattr(torch, dtypes[i]), seed + i).reshape(s)
                     if torch.Size(s).numel() else torch.zeros(s, dtype=getattr(torch, dtypes[i]))
                     for k, s in SHAPES.items()} for i, label in enumerate(labels)}
    models = [{"model": f"@{label}", "parameters": {"weight": weights[i]}} for i, label in enumerate(labels[1:])]
    cfg: dict = {"merge_method": method, "models": models, "parameters": {"normalize": normalize}}
    if method == "task_arithmetic":
        cfg.update(base_model="@base")
        cfg["parameters"]["lambda"] = lam
    if compute:
        cfg["dtype"] = compute
    chunked, whole = _merge_both(tmp_path, cfg, dicts, fmt)
    assert chunked.keys() == whole.keys()
    for name in whole:  # (linear gives a 0-d input a shape of (1,) in memory; the file has the plan's shape)
        assert chunked[name].dtype == whole[name].dtype and chunked[name].shape == SHAPES[name], name
        assert torch.equal(_bits(chunked[name]), _bits(whole[name])), name


def _same_error_whole_and_chunked(tmp_path, cfg, dirs) -> str:
    """The InputError of the one-task merge ``cfg`` (models in ``dirs``), whole (run_task) and chunked (write_task):
    the same message from both paths, returned."""
    plan = build_plan(load_config(cfg), {str(d): CheckpointSource(d) for d in dirs.values()})
    (task,) = plan.tasks
    with pytest.raises(InputError) as whole:
        run_task(plan, task, 0, check_finite=True)
    (tmp_path / "out").mkdir()
    writer = ShardedWriter(tmp_path / "out", [(task.name, task.out)], 10**9)
    with pytest.raises(InputError) as chunked:
        streamed.write_task(writer, plan, task, 0, check_finite=True)
    writer.abort()
    assert str(chunked.value) == str(whole.value)
    return str(whole.value)


def test_a_non_finite_input_in_a_later_chunk_names_the_model_the_whole_path_names(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "CHUNK", 100)
    a = {"w": _values(1000, torch.float32, 1)}
    b = {"w": _values(1000, torch.float32, 2)}
    a["w"][999] = float("nan")  # a: only in the last chunk
    b["w"][0] = float("inf")  # b: already in the first chunk
    dirs = {k: _model(tmp_path, k, sd, "st") for k, sd in (("a", a), ("b", b))}
    cfg = {"merge_method": "linear", "models": [{"model": str(dirs[k]), "parameters": {"weight": 0.5}}
                                                for k in ("a", "b")]}
    assert str(dirs["a"]) in _same_error_whole_and_chunked(tmp_path, cfg, dirs)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["base", "a", "b"])
@pytest.mark.parametrize("weights,lam", [((0.5, 0.5), 1.0), ((0.0, 0.0), 1.0), ((1.0, -1.0), 0.0), ((0.0, 2.0), 0.0)])
def test_any_non_finite_input_entry_is_found_from_the_output(tmp_path, monkeypatch, method, bad, where, weights, lam):
    """The chunked path checks the output chunk and the inputs only where it is not finite: a NaN/Inf in any input,
    under zero weights or lambda 0 too, still gives the whole path's error."""
    monkeypatch.setattr(streamed, "CHUNK", 64)
    dicts = {k: {"w": _values(500, torch.bfloat16, i)} for i, k in enumerate(("base", "a", "b"))}
    dicts[where]["w"][321] = bad
    dirs = {k: _model(tmp_path, k, sd, "st") for k, sd in dicts.items()}
    models = [{"model": str(dirs[k]), "parameters": {"weight": w}} for k, w in zip(("a", "b"), weights)]
    if method == "linear":
        models.append({"model": str(dirs["base"]), "parameters": {"weight": 0.0}})
        cfg = {"merge_method": "linear", "dtype": "bfloat16", "models": models, "parameters": {"normalize": False}}
    else:
        cfg = {"merge_method": "task_arithmetic", "dtype": "bfloat16", "base_model": str(dirs["base"]),
               "models": models, "parameters": {"lambda": lam}}
    assert str(dirs[where]) in _same_error_whole_and_chunked(tmp_path, cfg, dirs)


def test_an_overflow_of_finite_inputs_is_a_result_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "CHUNK", 64)
    dicts = {k: {"w": torch.full((300,), 60000.0, dtype=torch.float16)} for k in ("a", "b")}
    dirs = {k: _model(tmp_path, k, sd, "st") for k, sd in dicts.items()}
    cfg = {"merge_method": "linear", "dtype": "float16", "parameters": {"normalize": False},
           "models": [{"model": str(dirs[k]), "parameters": {"weight": 1.0}} for k in ("a", "b")]}
    plan = build_plan(load_config(cfg), {str(d): CheckpointSource(d) for d in dirs.values()})
    (task,) = plan.tasks
    whole = run_task(plan, task, 0, check_finite=True)
    assert torch.isinf(whole).all()
    (tmp_path / "out").mkdir()
    writer = ShardedWriter(tmp_path / "out", [(task.name, task.out)], 10**9)
    streamed.write_task(writer, plan, task, 0, check_finite=True)
    writer.close()
    assert torch.equal(load_file(str(tmp_path / "out" / "model.safetensors"))["w"], whole)


def test_other_methods_and_aligned_tasks_run_whole(tiny_models):
    base, a = (str(tiny_models[k]) for k in ("base", "a"))
    sources = {k: CheckpointSource(k) for k in (base, a)}
    ties = build_plan(load_config({"merge_method": "ties", "base_model": base,
                                   "models": [{"model": a, "parameters": {"weight": 1.0, "density": 0.5}}]}), sources)
    assert not any(streamed.elementwise(ties, t) for t in ties.tasks)
    lin = build_plan(load_config({"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": 1.0}}]}),
                     sources)
    assert all(streamed.elementwise(lin, t) for t in lin.tasks)
    assert not streamed.elementwise(lin, lin.tasks[0], align=lambda task, raw: raw) or lin.tasks[0].vocab_rows is None


def test_span_is_where_the_bytes_are(tiny_models):
    src = CheckpointSource(tiny_models["a"])
    for name, info in src.infos().items():
        file, offset, nbytes = src.span(name)
        assert nbytes == info.nbytes
        with open(file, "rb") as fh:
            fh.seek(offset)
            raw = bytearray(fh.read(nbytes))
        assert torch.equal(torch.frombuffer(raw, dtype=info.dtype).reshape(info.shape), src.get(name))


# ---- the writer ------------------------------------------------------------------------------------------------

def _layout() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(40, 30, generator=g), "b": torch.randn(7, generator=g).bfloat16(),
            "empty": torch.zeros(0, 5), "c": torch.arange(12, dtype=torch.int64).reshape(3, 4),
            "d": torch.randn(100, 100, generator=g).half(), "s": torch.tensor(1.5)}


@pytest.mark.parametrize("shard_size", [10**9, 5000, 1])
def test_writes_in_any_order_and_in_chunks_give_loadable_shards(tmp_path, shard_size):
    tensors = _layout()
    layout = [(k, TensorInfo(tuple(v.shape), v.dtype)) for k, v in tensors.items()]
    files = {}
    for how in ("in_order", "reversed", "chunks"):
        out = tmp_path / how
        out.mkdir()
        writer = ShardedWriter(out, layout, shard_size)
        if how == "in_order":
            for k, v in tensors.items():
                writer.write(k, v)
        elif how == "reversed":
            for k, v in reversed(tensors.items()):
                writer.write_at(k, v)
        else:
            for k, v in tensors.items():
                flat = v.reshape(-1)
                for start in reversed(range(0, flat.numel(), 333)):
                    writer.write_range(k, start, flat[start:start + 333])
                writer.done(k)
        names = writer.close()
        loaded: dict[str, torch.Tensor] = {}
        for name in names:
            loaded.update(load_file(str(out / name)))
        assert loaded.keys() == tensors.keys()
        assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in tensors.items())
        assert (out / "model.safetensors.index.json").is_file() == (len(names) > 1)
        files[how] = {name: (out / name).read_bytes() for name in names}
    assert files["in_order"] == files["reversed"] == files["chunks"]


def test_writer_refuses_wrong_tensors_twice_written_and_missing_ones(tmp_path):
    tensors = _layout()
    writer = ShardedWriter(tmp_path, [(k, TensorInfo(tuple(v.shape), v.dtype)) for k, v in tensors.items()], 10**9)
    with pytest.raises(RuntimeError, match="expected"):
        writer.write_at("a", tensors["a"].double())
    with pytest.raises(RuntimeError, match="expected a"):
        writer.write("b", tensors["b"])  # the in-order API: "a" comes first
    writer.write_at("a", tensors["a"])
    with pytest.raises(RuntimeError, match="twice"):
        writer.write_at("a", tensors["a"])
    with pytest.raises(RuntimeError, match="bad range"):
        writer.write_range("b", 5, tensors["b"][:5])
    with pytest.raises(RuntimeError, match="never written"):
        writer.close()
    writer.abort()


def _tiny_plan(tiny_models, method: str, **shared):
    """The plan of ``method`` on the tiny models: ``a`` merged onto ``base`` (linear: ``a`` alone), ``shared`` as the
    recipe's parameters."""
    base, a = (str(tiny_models[k]) for k in ("base", "a"))
    own = {"linear": {"weight": 1.0}, "nearswap": {}, "slerp": {}}.get(method, {"weight": 1.0, "density": 0.5})
    cfg = {"merge_method": method, "parameters": shared, "models": [{"model": a, "parameters": own}]}
    if method != "linear":
        cfg["base_model"] = base
    return build_plan(load_config(cfg), {k: CheckpointSource(k) for k in (base, a)})


def test_worker_threads_only_for_thread_count_free_merges_and_restored(tiny_models):
    lin, ties, dare = (_tiny_plan(tiny_models, m) for m in ("linear", "ties", "dare_ties"))
    before = torch.get_num_threads()
    for plan in (lin, ties):  # no sum over a tensor's entries: 1 intra-op thread per worker
        with streamed.worker_threads(10**6, plan):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == before
    with streamed.worker_threads(10**6, dare):  # DARE's L1 rescale sums |delta|: torch's setting stays
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_thread_count_free_follows_the_registry_and_the_rescale(tiny_models):
    plan = functools.partial(_tiny_plan, tiny_models)

    def free(p):
        return all(streamed.thread_count_free(p, t) for t in p.tasks)

    assert free(plan("ties")) and free(plan("task_arithmetic")) and free(plan("dare_ties", rescale=False))
    assert free(plan("dare_ties", rescale_mode="inverse_p"))
    assert not free(plan("ties", rescale=True)) and not free(plan("dare_ties")) and free(plan("nearswap", t=0.1))
    assert not free(plan("slerp", t=0.5))  # its norms sum over the entries
    assert not free(plan("della", epsilon=0.1))


# ---- the engine's window without --max-memory ----------------------------------------------------------------

def test_outlier_budget_isolates_only_outliers():
    from safemerge.merge.engine import outlier_budget

    assert outlier_budget([], 4) == 0
    assert outlier_budget([10, 12, 11, 30], 4) == 1 << 62  # 30 < 4 x median: no outlier, the window alone bounds
    assert outlier_budget([10, 12, 11, 10, 500], 4) == 500  # above the whole window of typical tasks: runs alone


def test_an_outlier_task_runs_alone_and_the_rest_in_a_window():
    import threading
    import time

    from safemerge.merge.engine import execute, release_free_heap

    g = torch.Generator().manual_seed(0)
    sd = {f"w{i}": torch.randn(64, 64, generator=g) for i in range(12)}
    sd["w6"] = torch.randn(2000, 600, generator=g)  # ~290x the others
    cfg = {"merge_method": "linear", "models": [{"model": m, "parameters": {"weight": 0.5}} for m in ("a", "b")]}
    plan = build_plan(load_config(cfg), {m: DictSource(m, {k: v + i for k, v in sd.items()})
                                         for i, m in enumerate(("a", "b"))})
    lock, active, seen = threading.Lock(), set(), {}

    def work(plan, task, *args):
        with lock:
            active.add(task.name)
            seen[task.name] = set(active)
        time.sleep(0.01)
        out = run_task(plan, task, *args)
        with lock:
            active.discard(task.name)
        return out

    order: list[str] = []
    execute(plan, lambda task, t: order.append(task.name), threads=3, work=work)
    assert order == [t.name for t in plan.tasks]
    assert seen["w6"] == {"w6"}  # nothing beside the outlier
    assert max(len(s) for s in seen.values()) > 1  # the others overlap
    release_free_heap()  # a no-op where the C library has no malloc_trim


@pytest.mark.parametrize("method,models", [("dare_ties", 2), ("della", 2), ("ties", 2), ("ties", 3),
                                           ("breadcrumbs", 3), ("model_stock", 3)])
def test_merges_give_the_same_bits_with_1_and_2_workers(tmp_path, method, models):
    """Beyond torch's parallel grain (32768 entries) a sum over a tensor's entries rounds differently with another
    torch thread count (the L1 rescale of DARE/DELLA, Model Stock's norms): the merge leaves torch's threads alone for
    these methods, and gives each worker one intra-op thread only where the output cannot depend on it, so the number
    of workers does not change the output."""
    from safemerge.merge import merge

    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(300, 700, generator=g).bfloat16(), "n": torch.randn(700, generator=g).bfloat16()}
    dirs = {"base": _model(tmp_path, "base", base, "st")}
    names = "abc"[:models]
    for k in names:
        dirs[k] = _model(tmp_path, k, {n: (t.float() + 0.02 * torch.randn(t.shape, generator=g)).bfloat16()
                                       for n, t in base.items()}, "st")
    params = {} if method == "model_stock" else {"weight": 0.5, "density": 0.5}
    params.update({"epsilon": 0.1} if method == "della" else {})
    cfg = {"merge_method": method, "dtype": "bfloat16", "base_model": str(dirs["base"]),
           "models": [{"model": str(dirs[k]), "parameters": dict(params)} for k in names]}
    before = torch.get_num_threads()
    outs = [merge(cfg, tmp_path / f"out{t}", threads=t, seed=3) for t in (1, 2)]
    assert torch.get_num_threads() == before
    one, two = (load_file(str(o / "model.safetensors")) for o in outs)
    assert all(torch.equal(_bits(one[k]), _bits(two[k])) for k in one)
