"""``safemerge serve`` off loopback: API key required (Bearer, constant-time compare), request size limit (413 before
the body is read), strict request values. The HTTP tests run the real CLI on 127.0.0.1 with --require-api-key."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import pytest

from safemerge.cli import main
from safemerge.errors import InputError
from safemerge.evaluate.serve import api_key_from_env, is_loopback, make_server
from tests.netutil import free_port, wait_for

KEY = "test-key-5f0c2a"
KEY_ENV = "SAFEMERGE_TEST_SERVE_KEY"


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
                                        ("localhost", True), ("LocalHost", True), ("0.0.0.0", False),
                                        ("::", False), ("10.0.0.5", False), ("example.org", False), ("", False)])
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_api_key_rules(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert api_key_from_env("127.0.0.1", None) is None  # open on loopback by default
    with pytest.raises(InputError, match=r"--host 0\.0\.0\.0 is not loopback.*--api-key-env NAME"):
        api_key_from_env("0.0.0.0", None)
    with pytest.raises(InputError, match="--require-api-key is set"):
        api_key_from_env("127.0.0.1", None, require=True)
    with pytest.raises(InputError, match=f"--api-key-env {KEY_ENV}: the environment variable {KEY_ENV} is not set"):
        api_key_from_env("0.0.0.0", KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "   ")
    with pytest.raises(InputError, match="not set or empty"):
        api_key_from_env("0.0.0.0", KEY_ENV)
    monkeypatch.setenv(KEY_ENV, KEY)
    assert api_key_from_env("0.0.0.0", KEY_ENV) == KEY
    assert api_key_from_env("127.0.0.1", KEY_ENV) == KEY  # a configured key is enforced on loopback too


def test_make_server_refuses_open_non_loopback(tiny_models):
    with pytest.raises(InputError, match="not loopback"):
        make_server(tiny_models["a"], host="0.0.0.0", port=1)  # refused before the model is loaded


@pytest.mark.parametrize("args, env, fragment", [
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 is not loopback"),
    (["--host", "192.168.1.2", "--api-key-env", KEY_ENV], {}, f"the environment variable {KEY_ENV} is not set"),
    (["--require-api-key"], {}, "--require-api-key is set"),
    ([], {"SAFEMERGE_REQUIRE_API_KEY": "1"}, "--require-api-key is set"),
])
def test_cli_refuses_without_key(tiny_models, capsys, monkeypatch, args, env, fragment):
    monkeypatch.delenv(KEY_ENV, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tiny_models["a"]), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


# ---- over real HTTP: the CLI on 127.0.0.1 with the key required ---------------------------------------------------

LIMIT = 64 * 1024


def _request(port: int, method: str, path: str, body: bytes | None = None, key: str | None = KEY,
             scheme: str = "Bearer", chunked: bool = False) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"{scheme} {key}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if chunked:
            pieces = [body[i:i + 1000] for i in range(0, len(body or b""), 1000)]
            conn.request(method, path, body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(tiny_models):
    """`safemerge serve` as a subprocess on 127.0.0.1, key required, 4 KiB request limit."""
    port = free_port()
    env = dict(os.environ, **{KEY_ENV: KEY})
    proc = subprocess.Popen(
        [sys.executable, "-m", "safemerge.cli", "serve", str(tiny_models["a"]), "--port", str(port), "--name", "tiny",
         "--require-api-key", "--api-key-env", KEY_ENV, "--max-request-bytes", str(LIMIT)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(proc, lambda: _request(port, "GET", "/v1/models")[0] == 200, "server")
        yield port
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert KEY not in out  # the key is never printed or logged


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 4,
        "temperature": 0}


@pytest.mark.slow
def test_api_key_required_on_every_request(served):
    body = json.dumps(CHAT).encode()
    for key, scheme in ((None, "Bearer"), ("wrong", "Bearer"), (KEY + "x", "Bearer"), (KEY, "Basic"), ("", "Bearer")):
        for method, path, data in (("GET", "/v1/models", None), ("POST", "/v1/chat/completions", body)):
            status, headers, payload = _request(served, method, path, data, key=key, scheme=scheme)
            assert status == 401, (key, scheme, path)
            assert headers.get("www-authenticate") == "Bearer"
            assert "Authorization: Bearer" in json.loads(payload)["error"]["message"]
    status, _, payload = _request(served, "POST", "/v1/chat/completions", body)
    assert status == 200 and isinstance(json.loads(payload)["choices"][0]["message"]["content"], str)
    assert _request(served, "GET", "/v1/models", key=KEY, scheme="bearer")[0] == 200  # the scheme is case-blind


@pytest.mark.slow
def test_openai_client_with_and_without_the_key(served):
    import openai

    url = f"http://127.0.0.1:{served}/v1"
    ok = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    reply = ok.chat.completions.create(model="tiny", messages=CHAT["messages"], max_tokens=3, temperature=0)
    assert reply.usage.completion_tokens <= 3
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()


@pytest.mark.slow
def test_request_size_limit(served):
    big = json.dumps(CHAT | {"pad": "x" * LIMIT}).encode()
    status, _, payload = _request(served, "POST", "/v1/chat/completions", big)
    assert status == 413 and "--max-request-bytes" in json.loads(payload)["error"]["message"]
    assert _request(served, "POST", "/v1/chat/completions", big, chunked=True)[0] == 413  # no Content-Length
    small = json.dumps(CHAT).encode()
    assert _request(served, "POST", "/v1/chat/completions", small, chunked=True)[0] == 200  # replayed body
    edge = json.dumps(CHAT | {"pad": "x" * (LIMIT - len(small) - 12)}).encode()
    assert len(edge) <= LIMIT and _request(served, "POST", "/v1/chat/completions", edge)[0] == 200
    assert _request(served, "POST", "/v1/chat/completions", big, key=None)[0] == 401  # the key is checked first


@pytest.mark.slow
@pytest.mark.parametrize("body, status, fragment", [
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 422, "temperature"),  # was a 500
    (b'{"messages": [{"role": "user", "content": "x"}], "top_p": Infinity}', 422, "top_p"),
    (json.dumps({"messages": []}).encode(), 422, "messages"),
    (json.dumps(CHAT | {"max_tokens": 0}).encode(), 422, "max_tokens"),
    (json.dumps(CHAT | {"temperature": 7}).encode(), 422, "temperature"),
    (json.dumps(CHAT | {"seed": 2**64}).encode(), 422, "seed"),
    (json.dumps(CHAT | {"max_tokens": 10**6}).encode(), 400, "context"),
    (json.dumps(CHAT | {"messages": [{"role": "user", "content": "fox " * 6000}]}).encode(), 400, "context"),
    (b"\xff\xfe not json", 400, "parsing the body"),
    (b"[" * 3000, 400, "parsing the body"),
])
def test_bad_request_values_are_4xx(served, body, status, fragment):
    got, _, payload = _request(served, "POST", "/v1/chat/completions", body)
    assert got == status, payload
    assert fragment in payload.decode()
