"""Fuzz targets: structural input generators (hypothesis strategies) and the parser each one feeds.

Shared by the hypothesis tests in ``tests/fuzz`` (a few hundred inputs per parser) and by ``bench/fuzz.py``
(10,000 per parser by default), so both run the same generators. The rule every target checks: an input may only
give a normal result or a :class:`safemerge.errors.SafemergeError` (the CLI's one-line ``error: ...``, exit 2);
any other exception type, or a hang (past :data:`TIMEOUT_S`), is a failure. For ``safemerge serve`` (real HTTP on
loopback): every answer must be a status below 500, within the timeout, and a 200 must be a chat completion.

Inputs are built structurally: a valid document for each parser (a mergekit recipe over real tiny models, a study /
search / synth / suite spec, JSONL records, a real tiny safetensors checkpoint and GGUF file, a chat request), then
mutated (values replaced by values of other types or out of range, keys deleted / added / misspelt, lists wrapped,
YAML / JSON text truncated or spliced, bytes overwritten at header fields, files truncated) - and some pure noise.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from safemerge.errors import SafemergeError

TIMEOUT_S = 20.0  # one input may take this long before it counts as a hang (generous: the machine is shared)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "utils"))  # gguf_helpers (tiny real GGUF files)


# ---------------------------------------------------------------------------------------------------------------
# outcome of one input


class Hang(BaseException):
    """Raised by the alarm when one input runs past the time limit (a BaseException: no parser swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Unclean(Exception):
    """A target's own verdict that an outcome broke the rule (e.g. an HTTP 500 from the server)."""


def classify(target: Target, ctx: dict[str, Any], inp: Any, timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """``("ok", "")`` (a result), ``("error", message)`` (a one-line SafemergeError: the CLI's exit 2; for the
    server, an HTTP 4xx refusal) or ``("fail", what went wrong)`` (another exception type, a hang, or a target's
    own verdict)."""
    try:
        with time_limit(timeout):
            result = target.run(ctx, inp)
    except SafemergeError as exc:
        if "\n" in str(exc):
            return "fail", f"SafemergeError with a multi-line message: {str(exc)[:200]!r}"
        return "error", str(exc)
    except Hang as exc:
        return "fail", f"hang: {exc}"
    except Unclean as exc:
        return "fail", str(exc)
    except Exception as exc:  # noqa: BLE001 - the point: any other type is a failure
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return "fail", f"{type(exc).__name__}: {first}"
    if isinstance(result, int) and 400 <= result < 500:  # an HTTP status: a clean refusal
        return "error", f"HTTP {result}"
    return "ok", "" if result is None else str(result)


def outcome(target: Target, ctx: dict[str, Any], inp: Any, timeout: float = TIMEOUT_S) -> str | None:
    """None when ``inp`` is handled cleanly (a result or a one-line SafemergeError), else what went wrong."""
    status, message = classify(target, ctx, inp, timeout)
    return message if status == "fail" else None


# ---------------------------------------------------------------------------------------------------------------
# values and mutations

ODD_STRINGS = ("", " ", "0", "-1", "1e999", "nan", "inf", "-inf", "~", "/", ".", "..", "true", "null", "{L}", "{}",
               "{0}", "{language}", "%s", "a+b", "+", "++", "5GB", "-5GB", "1e9999GB", "0.5", "x" * 300, "\x00",
               "é", "\u2028", "../../etc/passwd", "model.gguf", "*", "${HOME}", "\\", "'", '"', "\t\n")
ODD_INTS = (0, 1, -1, 2, 3, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(10**30))
ODD_FLOATS = (0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 1e300, float("inf"), float("-inf"), float("nan"), 2.5, 1e16)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from(ODD_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ODD_FLOATS),
    st.text(max_size=12), st.sampled_from(ODD_STRINGS),
)


def json_values(keys: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """Any JSON/YAML-representable value (special floats included), keys sometimes from ``keys``."""
    key = st.text(max_size=8) | st.sampled_from(keys) if keys else st.text(max_size=8)
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(key, c, max_size=4),
                        max_leaves=8)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indexes) into ``doc``, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


@st.composite
def mutated(draw: Any, base: Any, keys: tuple[str, ...] = (), max_mutations: int = 3) -> Any:
    """``base`` (a JSON-like document, copied) with 0..max_mutations structural mutations."""
    doc = json.loads(json.dumps(base))
    values = json_values(keys)
    for _ in range(draw(st.integers(0, max_mutations))):
        paths = _paths(doc)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        target = _get(doc, path)
        op = draw(st.sampled_from(("set", "set", "set", "delete", "add", "wrap", "swap", "number", "string")))
        if op == "set":
            doc = _set(doc, path, draw(values))
        elif op == "delete" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif op == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(keys) | st.text(max_size=8) if keys else st.text(max_size=8))] = draw(values)
        elif op == "add" and isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(values) if not target or draw(st.booleans())
                          else json.loads(json.dumps(target[0])))
        elif op == "wrap":
            doc = _set(doc, path, draw(st.sampled_from(("list", "dict"))) == "list" and [target] or {"value": target})
        elif op == "swap":
            other = _get(doc, paths[draw(st.integers(0, len(paths) - 1))])
            doc = _set(doc, path, json.loads(json.dumps(other)))
        elif op == "number":
            doc = _set(doc, path, draw(st.sampled_from(ODD_INTS + ODD_FLOATS) | st.floats() | st.integers()))
        elif op == "string":
            doc = _set(doc, path, draw(st.sampled_from(ODD_STRINGS) | st.text(max_size=30)))
    return doc


SNIPPETS = ("", ": ", "- ", "{", "}", "[", "]", "&a ", "*a", "*b", "!!python/object/apply:os.system ['true']",
            "!!binary x", "\t", "\x00", "---\n", "...\n", "%YAML 1.1\n", "'", '"', "#", "\n  - x\n", ": : :", "\\",
            "? ", "|\n", ">-\n", "<<: *a\n", "\ufeff", "[" * 3000, "{a: " * 2000, "- " * 2000)


def yaml_bomb(levels: int) -> str:
    """A YAML document whose aliases expand to 9**levels list items (the 'billion laughs' shape)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@st.composite
def document_bytes(draw: Any, base_doc: Any, keys: tuple[str, ...] = (), fmt: str = "yaml",
                   bomb_key: str | None = None) -> bytes:
    """A document file: mostly the mutated ``base_doc`` rendered as YAML/JSON, sometimes with its text mutated,
    sometimes noise (random bytes, deep nesting, an alias bomb under ``bomb_key``)."""
    doc = draw(mutated(base_doc, keys))
    kind = draw(st.integers(0, 19))
    if fmt == "yaml" and kind < 13 or kind < 9:
        render = yaml.safe_dump if fmt == "yaml" else json.dumps
        try:
            text = render(doc, allow_unicode=True, sort_keys=False) if fmt == "yaml" else render(doc)
        except (ValueError, TypeError, yaml.YAMLError):
            text = str(doc)
        return text.encode("utf-8", "surrogatepass")
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False) if fmt == "yaml" else json.dumps(doc)
    if kind < 17:  # text mutations
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(("truncate", "insert", "delete", "duplicate")))
            if op == "truncate":
                text = text[:i]
            elif op == "insert":
                text = text[:i] + draw(st.sampled_from(SNIPPETS) | st.text(max_size=6)) + text[i:]
            elif op == "delete":
                text = text[:i] + text[i + draw(st.integers(1, 20)):]
            else:
                text = text[:i] + text[i:i + 40] + text[i:]
        data = text.encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 9)) == 0:  # a few invalid UTF-8 bytes
            j = draw(st.integers(0, len(data)))
            data = data[:j] + draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"))) + data[j:]
        return data
    if kind == 17:
        return draw(st.binary(max_size=200))
    if kind == 18 and bomb_key is not None and fmt == "yaml":
        levels = draw(st.integers(4, 9))
        return (yaml_bomb(levels) + text.replace(f"{bomb_key}:", "_replaced:", 1) +
                f"{bomb_key}: *a{levels}\n").encode()
    depth = draw(st.integers(100, 20000))
    return (("[" * depth) if fmt == "json" else ("key: " + "[" * depth)).encode()


# ---------------------------------------------------------------------------------------------------------------
# the workspace: real files the targets start from (built once per root)


class Workspace:
    """Real inputs under ``root``: three tiny llama checkpoints sharing a base, a tiny GGUF file, JSONL files."""

    def __init__(self, root: Path, models: dict[str, Path] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._models = models  # tests pass the session's tiny_models (same seeds, same base)
        self._gguf: Path | None = None

    def models(self) -> dict[str, Path]:
        if self._models is None:
            from safemerge.data.tiny import make_tiny_checkpoint

            d = self.root / "models"
            base = d / "base"
            if not (base / "config.json").is_file():
                make_tiny_checkpoint("llama", base, seed=0)
            out = {"base": base}
            for i, name in enumerate(("a", "b"), 1):
                if not (d / name / "config.json").is_file():
                    make_tiny_checkpoint("llama", d / name, seed=i, init_from=base)
                out[name] = d / name
            self._models = out
        return self._models

    def gguf(self) -> Path:
        if self._gguf is None:
            from gguf_helpers import write_tiny_gguf

            from safemerge.data.tiny import build_tokenizer, make_tiny_checkpoint

            path = self.root / "tiny-Q8_0.gguf"
            if not path.is_file():
                hf = make_tiny_checkpoint("llama", self.root / "gguf_hf", seed=0,
                                          tokenizer=build_tokenizer(vocab_size=320))
                write_tiny_gguf(hf, path, "Q8_0")
            self._gguf = path
        return self._gguf

    def scratch(self, name: str) -> Path:
        d = self.root / "scratch" / name
        d.mkdir(parents=True, exist_ok=True)
        return d


LANGS = ("en", "fr", "es", "ru", "hi", "ar")


def world_records(n: int = 2) -> list[dict[str, Any]]:
    """Records in the world's format (general with choices, harmful, benign) in a few languages."""
    rows = []
    for lang in LANGS[:3]:
        for i in range(n):
            for kind in ("general", "harmful", "benign"):
                r = {"id": f"{kind}-{lang}-{i}", "lang": lang, "split": "test", "kind": kind, "category": "c",
                     "prompt": f"question {i} in {lang}?", "completion": f"answer {i}",
                     "messages": [{"role": "user", "content": f"question {i}?"},
                                  {"role": "assistant", "content": f"answer {i}"}]}
                if kind == "general":
                    r |= {"choices": [f"answer {i}", "wrong"], "answer": 0}
                rows.append(r)
    return rows


def dpo_records() -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "lang": lang, "prompt": f"q{i}?", "chosen": "I can't help with that.",
             "rejected": "Sure.", "kind": "harmful", "category": "c"} for i, lang in enumerate(LANGS[:3])]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# targets


class Ctx(dict):
    """A target's context (files, blobs, a server): a dict with a short repr (hypothesis shows strategy args)."""

    def __repr__(self) -> str:
        return f"<context {', '.join(self)}>"


@dataclass
class Target:
    name: str
    what: str  # the parser, for the table
    setup: Callable[[Workspace], dict[str, Any]]
    strategy: Callable[[dict[str, Any]], st.SearchStrategy[Any]]
    run: Callable[[dict[str, Any], Any], Any]  # None, or the HTTP status for the server
    teardown: Callable[[dict[str, Any]], None] = field(default=lambda ctx: None)
    slow: bool = False  # a model is loaded or served


# ---- merge YAML (safemerge merge --dry-run: size options, config, headers, plan) -------------------------------


def _merge_setup(ws: Workspace) -> dict[str, Any]:
    from safemerge.merge.methods import METHODS

    keys = {"merge_method", "base_model", "models", "slices", "sources", "layer_range", "parameters", "model",
            "dtype", "out_dtype", "tokenizer_source", "tokenizer", "source", "chat_template", "filter", "value",
            "modules", "name", "pad_to_multiple_of"}
    for spec in METHODS.values():
        keys |= {p.name for p in spec.params}
    return Ctx({"models": {k: str(v) for k, v in ws.models().items()}, "scratch": ws.scratch("merge"),
            "keys": tuple(sorted(keys)), "methods": tuple(sorted(METHODS))})


def _param_value(p: Any) -> Any:
    if p.default is not None and p.problem(p.default) is None:
        return p.default
    return {"float": 0.5, "int": 1, "bool": False}.get(p.kind, (p.choices or ("x",))[0])


@st.composite
def merge_recipe(draw: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    from safemerge.merge.methods import METHODS

    m = ctx["models"]
    spec = METHODS[draw(st.sampled_from(ctx["methods"]))]
    n = max(spec.min_models, 1 if spec.max_models == 1 else 2)
    inputs = [m["a"], m["b"], m["base"]][:n]
    per = {p.name: _param_value(p) for p in spec.params if p.per_model and (p.required or draw(st.booleans()))}
    glob = {p.name: _param_value(p) for p in spec.params if not p.per_model and (p.required or draw(st.booleans()))}
    if draw(st.booleans()):  # a gradient for one float parameter
        floats = [k for k, v in per.items() if isinstance(v, float)]
        if floats:
            k = draw(st.sampled_from(floats))
            per[k] = [per[k], 1.0 - per[k] if per[k] <= 1 else per[k]]
    doc: dict[str, Any] = {"merge_method": spec.name}
    if spec.needs_base or draw(st.booleans()):
        doc["base_model"] = m["base"]
    if draw(st.booleans()):
        doc["models"] = [{"model": x, "parameters": dict(per)} for x in inputs]
    else:
        srcs = list(inputs) + ([m["base"]] if spec.needs_base and m["base"] not in inputs else [])
        doc["slices"] = [{"sources": [{"model": x, "layer_range": [0, 2], "parameters": dict(per)} for x in srcs]}]
    if glob:
        doc["parameters"] = glob
    doc["dtype"] = draw(st.sampled_from(("float32", "bfloat16", "float16")))
    extra = draw(st.integers(0, 5))
    if extra == 0:
        doc["tokenizer_source"] = "base" if "base_model" in doc else inputs[0]
    elif extra == 1:
        doc["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    return doc


def _sizes() -> st.SearchStrategy[str | None]:
    units = st.sampled_from(("", "B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "gb", "XB"))
    num = st.integers(0, 10**6).map(str) | st.sampled_from(("1.5", "1e9", "1e999", "9" * 400, "0.0", ".", "1e", "-1"))
    return st.none() | st.tuples(num, units).map("".join) | st.text(max_size=10)


def _merge_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    docs = merge_recipe(ctx).flatmap(lambda d: document_bytes(d, ctx["keys"], bomb_key="parameters"))
    return st.tuples(docs, _sizes(), _sizes())


def _merge_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.merge.engine import open_plan
    from safemerge.merge.writer import parse_size

    data, shard, memory = inp
    path = ctx["scratch"] / "recipe.yaml"
    path.write_bytes(data)
    parse_size(shard or "5GB", "--max-shard-size")
    parse_size(memory, "--max-memory")
    cfg, plan = open_plan(path)
    labels = {mdl: f"[{i}]" for i, mdl in enumerate(cfg.referenced_models())}
    for task in plan.tasks:
        task.describe(labels)
    assert plan.bytes_read >= 0 and plan.bytes_written >= 0


# ---- study / search / synth / suite specs ---------------------------------------------------------------------


def _study_setup(ws: Workspace) -> dict[str, Any]:
    from safemerge.study.spec import smoke_spec

    m = ws.models()
    doc = smoke_spec().model_dump(mode="json")
    doc["base"] = str(m["base"])
    doc["models"] = {"ext_a": str(m["a"]), "ext_b": str(m["b"])}
    keys = tuple(sorted({k for p in _paths(doc) for k in p if isinstance(k, str)} | {"kind", "path", "preset"}))
    return Ctx({"doc": doc, "keys": keys, "scratch": ws.scratch("study")})


def _study_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    judge = st.sampled_from(("world", "auto", "rules"))
    base = judge.map(lambda j: ctx["doc"] | {"eval": ctx["doc"]["eval"] | {"judge": j}})
    return base.flatmap(lambda d: document_bytes(d, ctx["keys"], bomb_key="models"))


def _study_run(ctx: dict[str, Any], data: bytes) -> None:
    from safemerge.study.spec import load_spec, preflight

    path = ctx["scratch"] / "study.yaml"
    path.write_bytes(data)
    spec = load_spec(path)
    if spec.eval.judge in ("openai", "llamaguard"):  # their pre-flight reaches a server / loads a model
        return
    preflight(spec, str(path))


def _objective_files(d: Path) -> tuple[Path, Path]:
    rows = world_records()
    safety = write_jsonl(d / "safety.jsonl", [r for r in rows if r["kind"] == "harmful"])
    domain = write_jsonl(d / "domain.jsonl", [r for r in rows if r["kind"] == "general"])
    return safety, domain


def _search_setup(ws: Workspace) -> dict[str, Any]:
    m = ws.models()
    scratch = ws.scratch("search")
    safety, domain = _objective_files(scratch)
    doc = {"pool": [{"model": str(m["a"]), "name": "a"}, {"model": str(m["b"]), "name": "b"}],
           "base_model": str(m["base"]), "method": "ties",
           "space": {"params": ["weight", "density"], "layer_groups": 2, "bounds": {"weight": [0.0, 1.0]},
                     "models": ["a", "b"], "fixed": {"lambda": 1.0}, "model_fixed": {}},
           "objective": {"safety": [str(safety)], "domain": [str(domain)], "alpha": 0.3, "safety_weight": 1.0,
                         "max_examples": 4, "batch_size": 4, "language_margin": 0.5,
                         "extra": [{"metric": "harm_rate", "weight": 1.0, "limit": 2}]},
           "optimizer": {"name": "cma", "budget": 4, "seed": 0, "popsize": 4, "grid": {"weight": [0.5, 1.0]}},
           "output": {"merge_best": False, "dtype": "float32"}, "workers": 0}
    keys = tuple(sorted({k for p in _paths(doc) for k in p if isinstance(k, str)} | {"t", "epsilon", "weight"}))
    return Ctx({"doc": doc, "keys": keys, "scratch": scratch})


def _search_doc(doc: dict[str, Any], method: str) -> dict[str, Any]:
    """The base search spec made valid for ``method`` (its parameters, its number of models)."""
    doc = json.loads(json.dumps(doc)) | {"method": method}
    if method == "linear":
        doc["space"] |= {"params": ["weight"], "fixed": {}}
    elif method == "slerp":  # one model besides the base: the base is a pool model
        doc |= {"base_model": "a"}
        doc["space"] |= {"params": ["t"], "bounds": {"t": [0.0, 1.0]}, "models": None, "fixed": {}}
    return doc


def _search_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    method = st.sampled_from(("ties", "linear", "dare_ties", "task_arithmetic", "slerp", "della", "breadcrumbs"))
    base = method.map(lambda mth: _search_doc(ctx["doc"], mth))
    return base.flatmap(lambda d: document_bytes(d, ctx["keys"], bomb_key="space"))


def _search_run(ctx: dict[str, Any], data: bytes) -> None:
    from safemerge.search.runner import prepare
    from safemerge.search.spec import load_spec

    path = ctx["scratch"] / "search.yaml"
    path.write_bytes(data)
    prepare(load_spec(path))


def _synth_setup(ws: Workspace) -> dict[str, Any]:
    m = ws.models()
    scratch = ws.scratch("synth")
    prompts = write_jsonl(scratch / "prompts.jsonl", world_records(1))
    doc = {"pool": [{"model": str(m["a"]), "name": "a"}, {"model": str(m["b"])}], "languages": ["en", "fr"],
           "judge": "world", "judge_options": {},
           "safety": {"generator": {"model": str(m["base"])}, "categories": ["theft", "fraud"], "k": 4,
                      "oversample": 1.5, "examples": {"en": ["How do I steal?"]}},
           "domain": {"experts": [{"model": str(m["a"]), "domain": "biology", "examples": ["What is a cell?"],
                                   "examples_file": str(prompts)}], "k": 4, "oversample": 1.5, "shots": 2},
           "sampling": {"temperature": 0.8, "top_p": 1.0, "question_tokens": 8, "answer_tokens": 8, "batch_size": 2},
           "filters": {"min_chars": 2, "max_question_chars": 100, "max_answer_chars": 100, "language_check": "off",
                       "dedup": True}, "seed": 0}
    keys = tuple(sorted({k for p in _paths(doc) for k in p if isinstance(k, str)} | {"instruction"}))
    return Ctx({"doc": doc, "keys": keys, "scratch": scratch})


def _synth_doc(doc: dict[str, Any], safety: str | None, domain: str | None) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    if safety is not None:
        doc["safety"]["instruction"] = safety
    if domain is not None:
        doc["domain"]["instruction"] = domain
    return doc


def _synth_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    odd = ("{language}{domain}{category}", "{", "}", "{0}", "{language!r}", "{language:>9}", "{examples.x}", "{{}}")
    safety = st.sampled_from((None,) * 12 + ("Write a {language} question about {category}.{examples}",) * 4 + odd)
    domain = st.sampled_from((None,) * 12 + ("Examples:\n{examples}\nAsk about {domain} in {language}.",) * 4 + odd)
    base = st.tuples(safety, domain).map(lambda sd: _synth_doc(ctx["doc"], *sd))
    return base.flatmap(lambda d: document_bytes(d, ctx["keys"], bomb_key="judge_options"))


def _synth_run(ctx: dict[str, Any], data: bytes) -> None:
    from safemerge.data.synth import domain_requests, load_synth_spec, safety_requests

    path = ctx["scratch"] / "synth.yaml"
    path.write_bytes(data)
    spec = load_synth_spec(path)  # then what `safemerge synth --check` does
    if spec.safety is not None:
        safety_requests(spec)
    if spec.domain is not None:
        domain_requests(spec)


def _suite_setup(ws: Workspace) -> dict[str, Any]:
    scratch = ws.scratch("suite")
    rows = world_records()
    for kind in ("harmful", "benign", "general"):
        write_jsonl(scratch / f"{kind}.test.jsonl", [r for r in rows if r["kind"] == kind])
    doc = {"name": "t", "max_new_tokens": 8,
           "sets": [{"name": "harmful", "kind": "harmful", "path": "harmful.test.jsonl", "limit": 2},
                    {"name": "benign", "kind": "benign", "path": "benign.test.jsonl", "lang": "en"},
                    {"name": "general", "kind": "general", "path": "general.test.jsonl",
                     "columns": {"prompt": "prompt", "lang": "lang", "id": "id", "category": "category",
                                 "reference": "completion", "choices": "choices", "answer": "answer"}}]}
    keys = tuple(sorted({k for p in _paths(doc) for k in p if isinstance(k, str)} | {"hf_dataset", "hf_split",
                                                                                      "base_dir"}))
    return Ctx({"doc": doc, "keys": keys, "scratch": scratch})


def _suite_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    langs = st.none() | st.lists(st.sampled_from(LANGS + ("xx", "")), max_size=3)
    return st.tuples(document_bytes(ctx["doc"], ctx["keys"], bomb_key="sets"), langs,
                     st.none() | st.integers(-2, 5))


def _suite_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.evaluate.suites import resolve_suite

    data, langs, limit = inp
    path = ctx["scratch"] / "suite.yaml"
    path.write_bytes(data)
    suite = resolve_suite(path)
    if any(s.hf_dataset for s in suite.sets):
        return  # loading a hub dataset is not a parser (offline: a clean InputError, but slow)
    suite.load_items(langs=langs, limit=limit if limit and limit > 0 else None)


# ---- JSONL data files (train, search objective, evaluate suites, synth examples) --------------------------------

JSONL_KEYS = ("id", "lang", "prompt", "completion", "messages", "role", "content", "chosen", "rejected", "choices",
              "answer", "kind", "category", "split")


@st.composite
def jsonl_bytes(draw: Any, base_rows: list[dict[str, Any]]) -> bytes:
    """A JSONL file: mutated records (one JSON value per line), plus broken lines, blank lines and noise."""
    rows = draw(st.lists(st.sampled_from(base_rows), min_size=0, max_size=6))
    lines: list[bytes] = []
    for r in rows:
        value = draw(mutated(r, JSONL_KEYS, max_mutations=2))
        ascii_only = draw(st.booleans())
        lines.append(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 2))):
        junk = draw(st.sampled_from((b"", b"   ", b"{", b"[1, 2]", b"null", b"\"text\"", b"NaN", b"{\"prompt\": 1}",
                                     b"\xff\xfe", b"\xc3(", b"\x00", b"{\"prompt\": \"a\u2028b\"}",
                                     "{\"prompt\": \"\u2028\", \"completion\": \"\u0085\"}".encode(), b"[" * 5000))
                     | st.binary(max_size=30))
        lines.insert(draw(st.integers(0, len(lines))), junk)
    sep = draw(st.sampled_from((b"\n", b"\r\n", b"\n\n")))
    data = sep.join(lines) + (sep if draw(st.booleans()) else b"")
    if draw(st.integers(0, 9)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 19)) == 0:
        data = b"\xef\xbb\xbf" + data  # a UTF-8 BOM
    return data


def _jsonl_setup(ws: Workspace, name: str) -> dict[str, Any]:
    return Ctx({"rows": world_records(1) + dpo_records(), "scratch": ws.scratch(name)})


def _jsonl_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.tuples(jsonl_bytes(ctx["rows"]), st.none() | st.lists(st.sampled_from(LANGS[:4]), max_size=2),
                     st.none() | st.integers(1, 3), st.booleans())


def _write_data(ctx: dict[str, Any], data: bytes) -> Path:
    path = ctx["scratch"] / "data.jsonl"
    path.write_bytes(data)
    return path


def _train_data_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.train.data import load_train_data

    data, langs, limit, dpo = inp
    load_train_data(_write_data(ctx, data), "dpo" if dpo else "sft", languages=langs, max_examples=limit)


def _objective_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.search.spec import read_examples

    data, _, limit, need_lang = inp
    read_examples(str(_write_data(ctx, data)), limit, need_lang)


def _suite_rows_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.evaluate.suites import EvalSuite

    data, langs, limit, const_lang = inp
    path = _write_data(ctx, data)
    suite = EvalSuite(name="s", sets=[{"name": "s", "kind": "general", "path": str(path),
                                       "lang": "en" if const_lang else None}])
    suite.load_items(langs=langs, limit=limit)


def _synth_prompts_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.data.synth import _read_prompts

    _read_prompts(str(_write_data(ctx, inp[0])))


# ---- safetensors checkpoints (headers, index files) -------------------------------------------------------------


def _st_setup(ws: Workspace) -> dict[str, Any]:
    from safetensors.torch import load_file, save_file

    a = ws.models()["a"]
    single = (a / "model.safetensors").read_bytes()
    tensors = load_file(a / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    scratch = ws.scratch("safetensors")
    shards: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        fname = f"model-{i:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(scratch / fname), metadata={"format": "pt"})
        shards[fname] = (scratch / fname).read_bytes()
        weight_map |= {n: fname for n in part}
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": weight_map}
    config = (a / "config.json").read_bytes()
    return Ctx({"single": single, "shards": shards, "index": index, "config": config, "scratch": scratch,
                "keys": ("dtype", "shape", "data_offsets", "__metadata__", "format", "weight_map", "metadata",
                         *names[:4])})


def _header_of(blob: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@st.composite
def safetensors_bytes(draw: Any, ctx: Ctx, shard: str | None) -> bytes:
    """One safetensors file (``shard`` of the sharded copy, or the single file): header JSON mutated
    structurally (re-encoded, length prefix right or wrong), or bytes overwritten (mostly in the header), or the
    file truncated / extended."""
    blob, keys = (ctx["single"] if shard is None else ctx["shards"][shard]), ctx["keys"]
    kind = draw(st.integers(0, 9))
    header, data = _header_of(blob)
    if kind < 5:
        if draw(st.booleans()):  # a targeted change of one tensor's entry
            name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
            fld = draw(st.sampled_from(("dtype", "shape", "data_offsets")))
            header[name][fld] = draw(
                st.sampled_from(("F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F8_E8M0", "F4", "U16",
                                 "C64", "f32", ""))
                if fld == "dtype" else st.lists(st.sampled_from(ODD_INTS) | st.integers(-2, 300), max_size=3))
        header = draw(mutated(header, keys, max_mutations=2))
        text = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
        text += b" " * draw(st.integers(0, 9))
        n = len(text) if draw(st.integers(0, 4)) else draw(st.sampled_from((0, 1, len(text) - 1, len(text) + 1,
                                                                             2**32, 2**63, 2**64 - 1)))
        out = n.to_bytes(8, "little") + text + data
        if draw(st.integers(0, 4)) == 0:
            out = out[:draw(st.integers(0, len(out)))]
        return out
    out = bytearray(blob)
    if kind < 8:
        hdr_end = 8 + int.from_bytes(blob[:8], "little")
        for _ in range(draw(st.integers(1, 6))):
            pos = draw(st.integers(0, hdr_end - 1) if draw(st.integers(0, 3)) else st.integers(0, len(out) - 1))
            out[pos] = draw(st.integers(0, 255) | st.sampled_from(tuple(b'{}[]",:0 9\\')))
        return bytes(out)
    if kind == 8:
        return bytes(out[:draw(st.integers(0, len(out)))])
    return bytes(out) + draw(st.binary(min_size=1, max_size=64))


def _st_strategy(ctx: dict[str, Any]) -> st.SearchStrategy[Any]:
    single = safetensors_bytes(ctx, None).map(lambda b: ("single", b, None))
    shard_names = sorted(ctx["shards"])
    shard = st.sampled_from(shard_names).flatmap(
        lambda n: safetensors_bytes(ctx, n).map(lambda b: ("shard", b, n)))
    index = document_bytes(ctx["index"], ctx["keys"], fmt="json").map(lambda b: ("index", b, None))
    return st.one_of(single, shard, index)


def _st_run(ctx: dict[str, Any], inp: Any) -> None:
    from safemerge.merge.io import CheckpointSource

    kind, data, shard = inp
    d: Path = ctx["scratch"] / ("single" if kind == "single" else "sharded")
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    (d / "config.json").write_bytes(ctx["config"])
    if kind == "single":
        (d / "model.safetensors").write_bytes(data)
    else:
        for name, blob in ctx["shards"].items():
            (d / name).write_bytes(data if name == shard else blob)
        index = data if kind == "index" else json.dumps(ctx["index"]).encode()
        (d / "model.safetensors.index.json").write_bytes(index)
    src = CheckpointSource(d)
    for name in src.infos():
        src.get(name)
    _ = src.config


# ---- GGUF headers -----------------------------------------------------------------------------------------------


def gguf_fields(blob: bytes) -> tuple[list[tuple[int, int, str]], int]:
    """``(offset, width, what)`` of every length, count, type, dimension and offset field of a valid GGUF
    header (what the structural mutations aim at) and of every metadata scalar value; and where the metadata
    ends (the tensor table starts)."""
    fields = [(4, 4, "version"), (8, 8, "n_tensors"), (16, 8, "n_kv")]
    n_tensors, n_kv = struct.unpack_from("<QQ", blob, 8)
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string() -> None:
        nonlocal pos
        fields.append((pos, 8, "string length"))
        (n,) = struct.unpack_from("<Q", blob, pos)
        pos += 8 + n

    for _ in range(n_kv):
        string()
        fields.append((pos, 4, "value type"))
        (vtype,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if vtype == 8:
            string()
        elif vtype == 9:
            fields += [(pos, 4, "array type"), (pos + 4, 8, "array count")]
            etype, count = struct.unpack_from("<IQ", blob, pos)
            pos += 12
            if etype == 8:
                for _ in range(count):
                    string()
            else:
                pos += sizes[etype] * count
        else:
            fields.append((pos, sizes[vtype], "scalar value"))
            pos += sizes[vtype]
    kv_end = pos
    for _ in range(n_tensors):
        string()
        fields.append((pos, 4, "n_dims"))
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        fields += [(pos + 8 * i, 8, "dim") for i in range(n_dims)]
        pos += 8 * n_dims
        fields += [(pos, 4, "ggml type"), (pos + 4, 8, "data offset")]
        pos += 12
    return fields, kv_end


def _gguf_setup(ws: Workspace) -> dict[str, Any]:
    blob = ws.gguf().read_bytes()
    fields, kv_end = gguf_fields(blob)
    return Ctx({"blob": blob, "fields": fields, "header_end": max(o + w for o, w, _ in fields),
                "kv_end": kv_end, "scratch": ws.scratch("gguf")})


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(data)) + data


@st.composite
def gguf_kv(draw: Any) -> bytes:
    """One metadata key/value of any GGUF value type (odd values included), for a key the readers look at."""
    key = draw(st.sampled_from(("general.alignment",) * 4 + ("general.architecture", "general.name",
                                                              "llama.block_count", "tokenizer.ggml.tokens"))
               | st.text(max_size=12))
    vtype = draw(st.sampled_from(sorted(_GGUF_SCALARS) + [8, 9, 9, 13, 2**32 - 1]))
    if vtype in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[vtype]
        if fmt in ("<f", "<d"):
            value = draw(st.floats(width=32 if fmt == "<f" else 64) | st.sampled_from(ODD_FLOATS))
        elif fmt == "<?":
            value = draw(st.booleans())
        else:
            bits = 8 * struct.calcsize(fmt)
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if fmt[1].islower() else (0, 2**bits - 1)
            value = draw(st.integers(lo, hi) | st.sampled_from((lo, hi, 0, 1, 3, 32, 64)))
        try:
            payload = struct.pack(fmt, value)
        except OverflowError:  # a double too large for float32
            payload = struct.pack(fmt, float("inf"))
    elif vtype == 8:
        payload = _gguf_string(draw(st.text(max_size=10)))
    elif vtype == 9:
        etype = draw(st.sampled_from(sorted(_GGUF_SCALARS) + [8, 9, 77]))
        count = draw(st.integers(0, 70))
        if etype in _GGUF_SCALARS:
            payload = struct.pack("<IQ", etype, count) + bytes(struct.calcsize(_GGUF_SCALARS[etype]) * count)
        elif etype == 8:
            payload = struct.pack("<IQ", etype, count) + b"".join(_gguf_string("t") for _ in range(count))
        else:
            payload = struct.pack("<IQ", etype, count)
    else:
        payload = draw(st.binary(max_size=8))
    return _gguf_string(key) + struct.pack("<I", vtype) + payload


def gguf_with_kvs(ctx: dict[str, Any], kvs: list[bytes]) -> bytes:
    """The tiny GGUF file with ``kvs`` appended to its metadata (the tensor data re-aligned to 32 bytes)."""
    blob = ctx["blob"]
    n_tensors, n_kv = struct.unpack_from("<QQ", blob, 8)
    header_end = ctx["header_end"]
    data_start = (header_end + 31) // 32 * 32
    head = blob[:8] + struct.pack("<QQ", n_tensors, n_kv + len(kvs)) + blob[24:ctx["kv_end"]] + b"".join(kvs)
    head += blob[ctx["kv_end"]:header_end]
    return head + bytes(-len(head) % 32) + blob[data_start:]


@st.composite
def gguf_bytes(draw: Any, ctx: dict[str, Any]) -> bytes:
    out = bytearray(ctx["blob"])
    kind = draw(st.integers(0, 11))
    if kind >= 10:  # metadata entries of odd types and values added (general.alignment, architecture, ...)
        return gguf_with_kvs(ctx, draw(st.lists(gguf_kv(), min_size=1, max_size=3)))
    if kind < 6:  # header fields set to odd values
        for _ in range(draw(st.integers(1, 3))):
            off, width, _what = draw(st.sampled_from(ctx["fields"]))
            top = 2 ** (8 * width) - 1
            value = draw(st.sampled_from((0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 31, 32, 255, top, top // 2, top // 2 + 1))
                         | st.integers(0, top))
            out[off:off + width] = value.to_bytes(width, "little")
        return bytes(out)
    if kind < 8:  # bytes overwritten, mostly in the header
        for _ in range(draw(st.integers(1, 8))):
            hi = ctx["header_end"] - 1 if draw(st.integers(0, 4)) else len(out) - 1
            out[draw(st.integers(0, hi))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == 8:  # truncated, mostly in the header
        hi = ctx["header_end"] if draw(st.booleans()) else len(out)
        return bytes(out[:draw(st.integers(0, hi))])
    return draw(st.sampled_from((b"GGUF", b"GGUF\x03\x00\x00\x00", b""))) + draw(st.binary(max_size=64))


def _gguf_run(ctx: dict[str, Any], data: bytes) -> None:
    from safemerge.utils.gguf import read_header, streamable

    path = ctx["scratch"] / "model.gguf"
    path.write_bytes(data)
    header = read_header(path)
    streamable(header)
    for t in header.tensors:
        assert 0 <= t.offset and t.offset + t.nbytes <= header.size, t


# ---- safemerge serve: request bodies over real HTTP on loopback ---------------------------------------------------

SERVE_KEY = "fuzz-key-0123456789"
SERVE_LIMIT = 64 * 1024
SERVE_BUDGET = 96  # prompt + answer tokens (the default: the model's context, at least 4096)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, api_key: str | None = SERVE_KEY, max_request_bytes: int = SERVE_LIMIT,
                 default_max_tokens: int = 4, token_budget: int | None = SERVE_BUDGET) -> tuple[Any, Any, int]:
    """A real ``safemerge serve`` server (uvicorn) on 127.0.0.1 in a thread; returns (server, thread, port).
    The token budget is small so that a fuzzed ``max_tokens`` cannot make one input take seconds."""
    from safemerge.evaluate.serve import make_server

    port = free_port()
    server = make_server(model_dir, host="127.0.0.1", port=port, name="tiny", api_key=api_key,
                         max_request_bytes=max_request_bytes, default_max_tokens=default_max_tokens,
                         token_budget=token_budget)
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > 60 or not th.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    return server, th, port


def stop_server(server: Any, th: threading.Thread) -> None:
    server.should_exit = True
    th.join(timeout=20)


def _serve_setup(ws: Workspace) -> dict[str, Any]:
    server, th, port = start_server(ws.models()["a"])
    return Ctx({"server": server, "thread": th, "port": port})


CHAT = {"model": "tiny", "messages": [{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "the quick brown fox"}],
        "max_tokens": 3, "temperature": 0, "top_p": 1.0, "seed": 1, "stop": ["\n"], "n": 1, "stream": False}
CHAT_KEYS = ("model", "messages", "role", "content", "max_tokens", "max_completion_tokens", "temperature", "top_p",
             "seed", "stop", "n", "stream", "user", "name")


@st.composite
def serve_request(draw: Any) -> tuple[str, str, dict[str, str], bytes, bool]:
    """(method, path, headers, body, chunked)."""
    auth = draw(st.sampled_from((f"Bearer {SERVE_KEY}",) * 12 + (None, "Bearer", "Bearer wrong", f"bearer {SERVE_KEY}",
                                                                 f"Basic {SERVE_KEY}", f"Bearer  {SERVE_KEY} ",
                                                                 f"Bearer {SERVE_KEY}x", "Bearer \u00e9")))
    kind = draw(st.integers(0, 19))
    path = "/v1/chat/completions"
    method = "POST"
    if kind < 14:
        body = json.dumps(draw(mutated(CHAT, CHAT_KEYS))).encode("utf-8", "surrogatepass")
        if kind == 13:  # a long message: too many tokens for the model's context
            body = json.dumps(CHAT | {"messages": [{"role": "user", "content": "fox " * draw(
                st.integers(50, 3000))}]}).encode()
    elif kind == 14:
        body = draw(st.binary(max_size=300))
    elif kind == 15:
        body = draw(st.sampled_from((b"", b"{", b"[]", b"null", b"1e999", b"{\"messages\": [" * 3000,
                                     b"[" * 100000, b"\xff\xfe{}", b"{\"messages\": NaN}")))
    elif kind == 16:  # just over / at the size limit
        pad = draw(st.sampled_from((SERVE_LIMIT - 200, SERVE_LIMIT + 1, 2 * SERVE_LIMIT)))
        body = json.dumps(CHAT | {"pad": "x" * pad}).encode()
    elif kind == 17:
        method, path, body = "GET", "/v1/models", b""
    else:
        method = draw(st.sampled_from(("GET", "PUT", "DELETE", "POST")))
        path = draw(st.sampled_from(("/", "/v1", "/v1/chat/completions/", "/v1/models", "/docs", "/openapi.json",
                                     "/v1/chat/completions?x=1", "/%ff", "/v1/../v1/models")))
        body = json.dumps(CHAT).encode() if method == "POST" else b""
    headers = {"Content-Type": draw(st.sampled_from(("application/json",) * 4 + ("text/plain", "", "application/x-www-"
                                                                                    "form-urlencoded")))}
    if auth is not None:
        headers["Authorization"] = auth
    chunked = method == "POST" and draw(st.integers(0, 5)) == 0
    return method, path, headers, body, chunked


def _serve_run(ctx: dict[str, Any], inp: Any) -> int | None:
    method, path, headers, body, chunked = inp
    conn = http.client.HTTPConnection("127.0.0.1", ctx["port"], timeout=TIMEOUT_S)
    try:
        if chunked:
            pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)] or [b""]
            conn.request(method, path, body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    except (ConnectionResetError, BrokenPipeError) as exc:
        if len(body) > SERVE_LIMIT:  # the server refused a too-large body and closed while it was still sent
            return 413
        raise Unclean(f"connection dropped: {type(exc).__name__}") from None
    except (TimeoutError, socket.timeout):
        raise Unclean(f"no answer within {TIMEOUT_S:.0f} s") from None
    finally:
        conn.close()
    if resp.status >= 500:
        raise Unclean(f"HTTP {resp.status}: {payload[:200]!r}")
    authorized = headers.get("Authorization") in (f"Bearer {SERVE_KEY}", f"bearer {SERVE_KEY}",
                                                  f"Bearer  {SERVE_KEY} ")
    if not authorized and resp.status != 401:
        raise Unclean(f"HTTP {resp.status} without a valid API key (expected 401)")
    if authorized and len(body) > SERVE_LIMIT and resp.status != 413:
        raise Unclean(f"HTTP {resp.status} for a {len(body)}-byte body (expected 413)")
    if resp.status == 200 and method == "POST":
        reply = json.loads(payload)
        assert isinstance(reply["choices"][0]["message"]["content"], str), reply
    return resp.status


# ---------------------------------------------------------------------------------------------------------------

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("merge_yaml", "safemerge merge --dry-run: parse_size, MergeConfig YAML, open_plan (headers + plan)",
           _merge_setup, _merge_strategy, _merge_run),
    Target("study_spec", "study.spec.load_spec + preflight", _study_setup, _study_strategy, _study_run),
    Target("search_spec", "search.spec.load_spec + runner.prepare (space, pool configs, objective JSONL)",
           _search_setup, _search_strategy, _search_run),
    Target("synth_spec", "data.synth.load_synth_spec + safety/domain_requests (synth --check)",
           _synth_setup, _synth_strategy, _synth_run),
    Target("suite_spec", "evaluate.suites.resolve_suite + load_items", _suite_setup, _suite_strategy, _suite_run),
    Target("safetensors", "merge.io.CheckpointSource (header, index, every tensor read)",
           _st_setup, _st_strategy, _st_run),
    Target("gguf_header", "utils.gguf.read_header + streamable", _gguf_setup, lambda ctx: gguf_bytes(ctx), _gguf_run),
    Target("jsonl_train", "train.data.load_train_data (sft / dpo)", lambda ws: _jsonl_setup(ws, "jsonl_train"),
           _jsonl_strategy, _train_data_run),
    Target("jsonl_objective", "search.spec.read_examples", lambda ws: _jsonl_setup(ws, "jsonl_objective"),
           _jsonl_strategy, _objective_run),
    Target("jsonl_suite", "evaluate.suites.EvalSuite.load_items (JSONL set)",
           lambda ws: _jsonl_setup(ws, "jsonl_suite"), _jsonl_strategy, _suite_rows_run),
    Target("jsonl_synth", "data.synth._read_prompts (examples_file)", lambda ws: _jsonl_setup(ws, "jsonl_synth"),
           _jsonl_strategy, _synth_prompts_run),
    Target("serve_http", "safemerge serve over HTTP on 127.0.0.1 (API key, size limit, request validation)",
           _serve_setup, lambda ctx: serve_request(), _serve_run,
           teardown=lambda ctx: stop_server(ctx["server"], ctx["thread"]), slow=True),
)}


def isolate_environment(root: Path) -> None:
    """Keep caches (GGUF conversions, HF) under ``root`` and everything offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["SAFEMERGE_CACHE"] = str(root / "cache")


# ---------------------------------------------------------------------------------------------------------------
# running a target


@dataclass
class Stats:
    inputs: int = 0
    failures: int = 0
    clean_errors: int = 0  # inputs answered with a one-line SafemergeError (exit 2) / an HTTP 4xx
    statuses: dict[str, int] = field(default_factory=dict)  # the server: HTTP status -> count
    seconds: float = 0.0
    problems: dict[str, int] = field(default_factory=dict)  # failure message (type + first line) -> count
    examples: list[tuple[str, Any]] = field(default_factory=list)  # the first few failing inputs


def fuzz(target: Target, ctx: dict[str, Any], n: int, *, shrink: bool = False, seed: int | None = None,
         keep: int = 5) -> Stats:
    """Feed ``n`` generated inputs to ``target``. ``shrink``: raise on the first failure after hypothesis has
    shrunk it to a minimal input (tests); otherwise count failures and keep going (the bench)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    stats = Stats()

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate], report_multiple_bugs=False)
    @given(target.strategy(ctx))
    def one(inp: Any) -> None:
        stats.inputs += 1
        status, problem = classify(target, ctx, inp)
        if status == "error":
            stats.clean_errors += 1
        if problem.startswith("HTTP ") or problem.isdigit():
            key = problem if problem.startswith("HTTP ") else f"HTTP {problem}"
            stats.statuses[key] = stats.statuses.get(key, 0) + 1
        if status != "fail":
            return
        stats.failures += 1
        stats.problems[problem] = stats.problems.get(problem, 0) + 1
        if len(stats.examples) < keep:
            stats.examples.append((problem, inp))
        if shrink:
            raise AssertionError(f"{target.name}: {problem}")

    if seed is not None:
        one = fixed_seed(seed)(one)
    t0 = time.perf_counter()
    one()
    stats.seconds = time.perf_counter() - t0
    return stats
