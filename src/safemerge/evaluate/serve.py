"""A small OpenAI-compatible server around a local HF causal LM (``safemerge serve``).

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming; greedy when ``temperature``
is 0 or absent, sampled otherwise with optional ``seed``; ``max_tokens``/``max_completion_tokens``; ``stop``).
Requests are served one at a time (a lock around the model). Meant for judges and demos on loopback.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from safemerge.evaluate.generate import chat_prompt, load_model


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False


def create_app(model_dir: str | os.PathLike, name: str | None = None, device: str | None = None,
               default_max_tokens: int = 256) -> Any:
    """A FastAPI app serving ``model_dir`` under the model id ``name`` (default: the directory name)."""
    import torch
    from fastapi import FastAPI, HTTPException

    lm = load_model(model_dir, device=device)
    model_id = name or Path(model_dir).name
    lock = threading.Lock()
    app = FastAPI(title="safemerge serve", version="1")
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
        text = chat_prompt(tok, [{"role": m.role, "content": m.content or ""} for m in req.messages])
        max_new = req.max_completion_tokens or req.max_tokens or default_max_tokens
        sample = bool(req.temperature)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, do_sample=sample, eos_token_id=eos,
                                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0])
        kwargs |= dict(temperature=req.temperature, top_p=req.top_p or 1.0) if sample else dict(
            temperature=None, top_p=None, top_k=None)
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(lm.model.device)
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
                log_level: str = "warning") -> Any:
    """A ``uvicorn.Server`` (not started) for ``model_dir``; ``server.run()`` blocks, tests run it in a thread."""
    import uvicorn

    app = create_app(model_dir, name=name)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
