"""Pretraining of the world's tiny base model: a plain causal-LM loop on CPU over ``corpus/pretrain.txt``.

The corpus is plain multilingual text (facts of the world as sentences, counting, neutral text), never the
instruction data: the base knows the world but not the chat format or the tasks. Deterministic given the
seed and the thread count.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from safemerge.utils.atomic import atomic_write_jsonl, make_readable
from safemerge.utils.progress import make_progress


def pack_blocks(token_ids: list[list[int]], eos_id: int, block_size: int) -> Any:
    """Concatenate documents (each followed by ``eos_id``) and cut into ``[n_blocks, block_size]`` rows."""
    import torch

    flat = [t for doc in token_ids for t in (*doc, eos_id)]
    n = len(flat) // block_size
    if n == 0:
        flat = flat * (block_size // max(1, len(flat)) + 1)
        n = len(flat) // block_size
    return torch.tensor(flat[: n * block_size], dtype=torch.long).view(n, block_size)


def build_llama(vocab_size: int, cfg: Any, seed: int, pad_id: int, bos_id: int, eos_id: int) -> Any:
    """A freshly initialised fp32 LlamaForCausalLM of shape ``cfg`` (a ``BaseModelConfig``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        initializer_range=0.02,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(torch.float32)


def pretrain(corpus: str | os.PathLike, tokenizer: Any, out_dir: str | os.PathLike, model_cfg: Any,
             train_cfg: Any, seed: int = 0, show_progress: bool = True) -> dict[str, Any]:
    """Pretrain a tiny Llama on the lines of ``corpus`` and save it (+ tokenizer) to ``out_dir``.

    ``model_cfg`` is a ``BaseModelConfig``, ``train_cfg`` a ``PretrainConfig`` (steps, batch, block, lr,
    warmup, weight decay, threads). Writes ``loss_log.jsonl``; returns a summary (params, final loss, seconds).
    """
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(train_cfg.threads)
    try:
        lines = [ln for ln in Path(corpus).read_text(encoding="utf-8").splitlines() if ln.strip()]
        ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
        blocks = pack_blocks(ids, tokenizer.eos_token_id, train_cfg.block_size)
        model = build_llama(len(tokenizer), model_cfg, seed, tokenizer.pad_token_id, tokenizer.bos_token_id,
                            tokenizer.eos_token_id)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": train_cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=train_cfg.lr, betas=(0.9, 0.98))

        def lr_at(step: int) -> float:
            if step < train_cfg.warmup_steps:
                return (step + 1) / max(1, train_cfg.warmup_steps)
            progress = (step - train_cfg.warmup_steps) / max(1, train_cfg.steps - train_cfg.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        gen = torch.Generator().manual_seed(seed)
        log: list[dict[str, Any]] = []
        order = torch.randperm(len(blocks), generator=gen)
        pos = 0
        with make_progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task("pretraining base", total=train_cfg.steps)
            for step in range(train_cfg.steps):
                if pos + train_cfg.batch_size > len(order):
                    order, pos = torch.randperm(len(blocks), generator=gen), 0
                batch = blocks[order[pos: pos + train_cfg.batch_size]]
                pos += train_cfg.batch_size
                loss = model(input_ids=batch, labels=batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if step % 10 == 0 or step == train_cfg.steps - 1:
                    log.append({"step": step, "loss": round(loss.item(), 5), "lr": sched.get_last_lr()[0]})
                progress.advance(task)
        model.eval()
        out = Path(out_dir)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        atomic_write_jsonl(out / "loss_log.jsonl", log)
        make_readable(out)
        return {
            "params": sum(p.numel() for p in model.parameters()),
            "corpus_tokens": int(sum(len(x) + 1 for x in ids)),
            "blocks": len(blocks),
            "tokens_seen": train_cfg.steps * train_cfg.batch_size * train_cfg.block_size,
            "final_loss": log[-1]["loss"],
            "seconds": round(time.perf_counter() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2),
        }
    finally:
        torch.set_num_threads(prev_threads)
