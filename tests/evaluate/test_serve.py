"""The OpenAI-compatible server on loopback serving a real tiny model, and the openai judge against it."""

from __future__ import annotations

import threading
import time

import pytest

from safemerge.evaluate.judges import PairItem, SafetyItem, get_judge
from safemerge.evaluate.judges.base import JudgeError
from tests.netutil import free_port

pytestmark = pytest.mark.slow


def _start(model_dir, port: int, delay: float = 0.0):
    from safemerge.evaluate.serve import make_server

    server = make_server(model_dir, port=port, name="tiny")

    def run():
        time.sleep(delay)
        server.run()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return server, th


def _wait(server, timeout=30.0):
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < timeout, "server did not start"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server_url(tiny_models):
    port = free_port()
    server, th = _start(tiny_models["a"], port)
    _wait(server)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    th.join(timeout=10)


def test_openai_client_against_server(server_url):
    import openai

    client = openai.OpenAI(base_url=server_url, api_key="EMPTY")
    assert [m.id for m in client.models.list()] == ["tiny"]
    msgs = [{"role": "user", "content": "the quick brown fox"}]
    a = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    b = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content  # greedy is deterministic
    assert a.usage.completion_tokens <= 6 and a.choices[0].finish_reason in ("stop", "length")
    s1 = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=1.0, seed=3)
    s2 = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=1.0, seed=3)
    assert s1.choices[0].message.content == s2.choices[0].message.content  # seeded sampling
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=msgs, max_tokens=2)


def test_openai_judge_plumbing_and_unparseable_verdicts(server_url):
    """A random tiny model never writes a valid verdict: each item is asked 1 + parse_retries times and then
    reported unjudged (None), never silently safe."""
    j = get_judge("openai", base_url=server_url, max_tokens=8, parse_retries=1, concurrency=2)
    j.check()
    assert j.model == "tiny"  # the first served model
    v = j.judge_safety([SafetyItem("How do I do this?", "Sure, here is how.", "en"),
                        SafetyItem("Как это сделать?", "Не могу помочь.", "ru")])
    assert [x.unsafe for x in v] == [None, None] and all(isinstance(x.raw, str) for x in v)
    p = j.judge_pairs([PairItem("q", "a", "b", "fr", reference="a")])
    assert p[0].winner is None
    assert "api_key" not in str(j.settings()).lower() and "EMPTY" not in str(j.settings())


def test_openai_judge_evaluation_end_to_end(server_url, tiny_models, eval_suite, cache_root):
    from safemerge.evaluate import evaluate_model

    r = evaluate_model(tiny_models["b"], eval_suite, judge="openai", cache_root=cache_root, langs=["en", "hi"],
                       limit=1, progress=False, n_boot=50,
                       judge_options={"base_url": server_url, "max_tokens": 4, "parse_retries": 0})
    assert r.summary["all"]["unjudged"]["value"] == 1.0
    assert r.summary["all"]["harm_rate"] == {"value": None, "lo": None, "hi": None, "n": 0,
                                             "note": "no judged prompts"}
    assert all(x["unsafe"] is None for x in r.records if x["kind"] == "harmful")


def test_judge_retries_until_server_is_up(tiny_models):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    j = get_judge("openai", base_url=url, model="tiny", max_retries=6, backoff=0.5, max_tokens=4)
    server, th = _start(tiny_models["a"], port, delay=1.0)  # the first tries hit a closed port
    try:
        text = j.chat([{"role": "user", "content": "hello"}])
        assert isinstance(text, str)
    finally:
        _wait(server)
        server.should_exit = True
        th.join(timeout=10)
    dead = get_judge("openai", base_url=url, model="tiny", max_retries=1, backoff=0.05)
    with pytest.raises(JudgeError, match="failed after 2 tries"):
        dead.chat([{"role": "user", "content": "hello"}])
    with pytest.raises(JudgeError, match="unreachable"):
        dead.check()
