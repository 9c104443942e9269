"""A small OpenAI-compatible server around a local HF causal LM (``safemerge serve``).

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming; greedy when ``temperature``
is 0 or absent, sampled otherwise with optional ``seed``; ``max_tokens``/``max_completion_tokens``; ``stop``).
Requests are served one at a time (a lock around the model). Meant for judges and demos on loopback.

Off loopback (any ``host`` outside 127.0.0.0/8, ::1 and ``localhost``) an API key is required: every request must
send ``Authorization: Bearer <key>`` (compared in constant time), else 401. Request bodies larger than
``max_request_bytes`` (default 1 MiB) are refused with 413 before they are read or parsed. Request values are
validated (422 / 400 with the reason): ``max_tokens`` >= 1, ``temperature`` in [0, 2], ``top_p`` in (0, 1], a
non-empty ``messages`` list, and prompt + ``max_tokens`` within the server's token budget (the model's
``max_position_embeddings`` or :data:`MIN_TOKEN_BUDGET`, whichever is larger), so that no request can make the
server work unboundedly.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safemerge.errors import InputError
from safemerge.evaluate.generate import chat_prompt, load_model

DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: far above any chat request a judge sends
MIN_TOKEN_BUDGET = 4096  # prompt + answer tokens per request, for models declaring a shorter context (tiny test
# models declare 256 and are asked judge prompts longer than that; RoPE models run past it)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface: ``localhost``, 127.0.0.0/8 or ::1 (brackets allowed)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def api_key_from_env(host: str, api_key_env: str | None, require: bool = False) -> str | None:
    """The API key the server requires (read from the environment variable ``api_key_env``), or None for an
    open loopback server. A key is required off loopback and with ``require``; one-line :class:`InputError`
    when it is required but not configured, or when ``api_key_env`` names an unset/empty variable."""
    needed = require or not is_loopback(host)
    if not api_key_env:
        if not needed:
            return None
        why = "--require-api-key is set" if require else f"--host {host} is not loopback"
        raise InputError(f"{why}: the server needs an API key; pass --api-key-env NAME, the environment variable "
                         "holding the key clients send as 'Authorization: Bearer <key>'")
    key = os.environ.get(api_key_env, "")
    if not key.strip():
        raise InputError(f"--api-key-env {api_key_env}: the environment variable {api_key_env} is not set or empty; "
                         "export it with the API key")
    return key


class RequestGuard:
    """ASGI middleware in front of the app: API-key check (constant time) and request size limit (413 before the
    body is parsed; by Content-Length, or while reading a chunked body)."""

    def __init__(self, app: Any, api_key: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.app = app
        self._key_digest = hashlib.sha256(api_key.encode("utf-8")).digest() if api_key else None
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.lower(), v)
        limit = self.max_request_bytes
        length = headers.get(b"content-length")
        if self._key_digest is not None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = hashlib.sha256(token.strip()).digest()
            # hashing first makes the comparison independent of the key's length too
            if not (hmac.compare_digest(given, self._key_digest) and scheme.lower() == b"bearer"):
                if length is None or (length.strip().isdigit() and int(length) <= limit):
                    await _drain(receive, limit)  # so that the client reads the 401 instead of a reset connection
                await _reject(send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'",
                              "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
        if length is not None:
            if not length.strip().isdigit():
                await _reject(send, 400, "invalid Content-Length header", "invalid_request_error")
                return
            if int(length) > limit:
                await _reject(send, 413, f"request body of {int(length)} bytes exceeds the server's limit of "
                              f"{limit} bytes (--max-request-bytes)", "request_too_large")
                return
        elif b"transfer-encoding" in headers:  # chunked: read at most `limit` bytes, then hand the body on
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body += message.get("body", b"")
                if len(body) > limit:
                    await _reject(send, 413, f"request body exceeds the server's limit of {limit} bytes "
                                  "(--max-request-bytes)", "request_too_large")
                    return
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


async def _drain(receive: Any, limit: int) -> None:
    """Read and drop a request body, at most ``limit`` bytes of it."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _reject(send: Any, status: int, message: str, code: str,
                  extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": code, "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False


def create_app(model_dir: str | os.PathLike, name: str | None = None, device: str | None = None,
               default_max_tokens: int = 256, api_key: str | None = None,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, token_budget: int | None = None,
               dtype: str | None = None) -> Any:
    """A FastAPI app serving ``model_dir`` under the model id ``name`` (default: the directory name), loaded on
    ``device`` in ``dtype`` (default auto for both: :mod:`safemerge.utils.device`).

    ``api_key``: require ``Authorization: Bearer <api_key>`` on every request (401 otherwise);
    ``max_request_bytes``: refuse larger bodies with 413 before reading them; ``token_budget``: prompt + answer
    tokens per request (default: the model's ``max_position_embeddings`` or :data:`MIN_TOKEN_BUDGET`, whichever is
    larger); longer prompts and larger ``max_tokens`` are refused with 400."""
    import torch
    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    if max_request_bytes < 1:
        raise InputError(f"--max-request-bytes {max_request_bytes}: give a positive number of bytes")
    lm = load_model(model_dir, device=device, dtype=dtype)
    model_id = name or Path(model_dir).name
    lock = threading.Lock()
    app = FastAPI(title="safemerge serve", version="1")
    app.add_middleware(RequestGuard, api_key=api_key, max_request_bytes=max_request_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Any, exc: RequestValidationError) -> Any:
        # FastAPI's own handler echoes the offending input, and a NaN / Infinity there (valid in Python's JSON
        # parser, not in its strict encoder) turned a 422 into a 500; report location + message only
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        text = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return JSONResponse(status_code=422, content={"error": {"message": f"invalid request: {text}",
                                                                "type": "invalid_request_error", "code": 422},
                                                      "detail": errors})
    context = token_budget or max(getattr(lm.model.config, "max_position_embeddings", None) or 0, MIN_TOKEN_BUDGET)
    tok = lm.tokenizer
    eos = [i for i in {tok.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)}
           if isinstance(i, int)]

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "safemerge"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        if req.stream:
            raise HTTPException(400, "stream=true is not supported by safemerge serve")
        if req.n != 1:
            raise HTTPException(400, "only n=1 is supported")
        if req.model not in (None, model_id):
            raise HTTPException(404, f"model {req.model!r} not found; this server serves {model_id!r}")
        try:
            text = chat_prompt(tok, [{"role": m.role, "content": m.content or ""} for m in req.messages])
        except Exception as exc:  # noqa: BLE001 - the chat template refused these messages (roles, order, ...)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise HTTPException(400, f"the model's chat template cannot format these messages ({first})") from None
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        n_prompt = int(enc["input_ids"].shape[1])
        asked = req.max_completion_tokens or req.max_tokens
        max_new = asked or default_max_tokens
        if n_prompt >= context:
            raise HTTPException(400, f"the prompt has {n_prompt} tokens; this server's context is {context} tokens")
        if asked is not None and n_prompt + asked > context:
            raise HTTPException(400, f"prompt ({n_prompt} tokens) + max_tokens ({asked}) exceeds this server's "
                                f"context of {context} tokens; lower max_tokens")
        max_new = min(max_new, context - n_prompt)
        sample = bool(req.temperature)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, do_sample=sample, eos_token_id=eos,
                                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0])
        kwargs |= dict(temperature=req.temperature, top_p=req.top_p or 1.0) if sample else dict(
            temperature=None, top_p=None, top_k=None)
        enc = enc.to(lm.model.device)
        with lock, torch.inference_mode():
            if sample and req.seed is not None:
                torch.manual_seed(req.seed)
            out = lm.model.generate(**enc, **kwargs)[0, enc["input_ids"].shape[1]:].tolist()
        finish = "stop" if (out and out[-1] in eos) or len(out) < max_new else "length"
        content = tok.decode(out, skip_special_tokens=True)
        stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        for s in stops:
            if s and s in content:
                content, finish = content[: content.index(s)], "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": int(enc["input_ids"].shape[1]), "completion_tokens": len(out),
                      "total_tokens": int(enc["input_ids"].shape[1]) + len(out)},
        }

    return app


def make_server(model_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
                log_level: str = "warning", api_key: str | None = None,
                max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, default_max_tokens: int = 256,
                token_budget: int | None = None, device: str | None = None, dtype: str | None = None) -> Any:
    """A ``uvicorn.Server`` (not started) for ``model_dir`` on ``device`` in ``dtype`` (default auto);
    ``server.run()`` blocks, tests run it in a thread.

    Off loopback an ``api_key`` is required (:class:`InputError` otherwise)."""
    import uvicorn

    if api_key is None and not is_loopback(host):
        raise InputError(f"--host {host} is not loopback: the server needs an API key; pass --api-key-env NAME")
    app = create_app(model_dir, name=name, api_key=api_key, max_request_bytes=max_request_bytes,
                     default_max_tokens=default_max_tokens, token_budget=token_budget, device=device, dtype=dtype)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
