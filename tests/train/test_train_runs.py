"""Real SFT / DPO runs on tiny checkpoints: outputs, completion-only loss, caching, atomicity, LoRA, DPO."""

from __future__ import annotations

import json
import time

import pytest
import torch
from rich.progress import Progress
from train_helpers import sft_records

from safemerge.train import DPOConfig, LoraSettings, SFTConfig, train_dpo, train_sft
from safemerge.train.cache import finished_run
from safemerge.utils.hashing import hash_file

pytestmark = pytest.mark.slow


def _answer_logprob(model_dir, prompt: str, answer: str) -> float:
    """Summed log-probability of ``answer`` (+ end token) after the chat-formatted ``prompt``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    msgs = [{"role": "user", "content": prompt}]
    p = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": answer}], tokenize=False)
    p_ids, ids = tok(p, add_special_tokens=False).input_ids, tok(full, add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits.log_softmax(-1)[0, :-1]
    target = torch.tensor(ids[1:])
    return float(logp[torch.arange(len(target)), target][len(p_ids) - 1:].sum())


def test_sft_run_writes_a_complete_model_dir(sft_run, tiny_models):
    names = {p.name for p in sft_run.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "train_config.json",
            "loss_log.jsonl"} <= names
    assert not any(n.startswith(".") for n in names)  # no trainer leftovers
    meta = json.loads((sft_run / "train_config.json").read_text())
    assert meta["kind"] == "sft" and meta["n_examples"] == 32 and meta["steps"] == 8
    assert meta["languages"] == ["en", "fr"] and meta["model"] == str(tiny_models["base"].resolve())
    losses = [json.loads(line)["loss"] for line in (sft_run / "loss_log.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    gen = json.loads((sft_run / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 7  # the tokenizer's <|end|>: generation stops after the assistant turn
    rec = sft_records(3)[2]
    assert _answer_logprob(sft_run, rec["prompt"], rec["completion"]) > _answer_logprob(
        tiny_models["base"], rec["prompt"], rec["completion"]) + 5


def test_loss_is_on_the_assistant_reply_only(tiny_models, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safemerge.train.data import sft_row
    from safemerge.train.sft import build_trainer

    tok = AutoTokenizer.from_pretrained(tiny_models["base"])
    net = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
    rec = sft_records(1)[0]
    ds = datasets.Dataset.from_list([sft_row(rec, "r")])
    example = build_trainer(SFTConfig(), net, tok, ds, tmp_path / "t", []).train_dataset[0]
    labels = example["labels"]
    trained = [t for t in labels if t != -100]
    first = labels.index(trained[0])
    assert all(t == -100 for t in labels[:first]) and labels[first:] == example["input_ids"][first:]
    assert tok.decode(trained) == rec["completion"] + "<|end|>"
    assert "<|user|>" + rec["prompt"] in tok.decode(example["input_ids"][:first])


def test_rerun_is_a_cache_hit(sft_run, tiny_models, train_files):
    before = hash_file(sft_run / "model.safetensors"), (sft_run / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    again = train_sft(tiny_models["base"], train_files["sft"], sft_run, SFTConfig(lr=3e-3, epochs=2, batch_size=8))
    assert again == sft_run and time.perf_counter() - start < 30  # no training (it takes far longer)
    assert (hash_file(sft_run / "model.safetensors"), (sft_run / "model.safetensors").stat().st_mtime_ns) == before
    key = json.loads((sft_run / "train_config.json").read_text())["cache_key"]
    assert finished_run(sft_run, key) is not None and finished_run(sft_run, "other-config-key") is None


def test_runs_are_deterministic(tiny_models, train_files, tmp_path):
    cfg = SFTConfig(lr=1e-3, max_steps=2, batch_size=4)
    a = train_sft(tiny_models["base"], train_files["sft"], tmp_path / "a", cfg)
    b = train_sft(tiny_models["base"], train_files["sft"], tmp_path / "b", cfg, force=True)
    assert hash_file(a / "model.safetensors") == hash_file(b / "model.safetensors")
    assert hash_file(a / "model.safetensors") != hash_file(tiny_models["base"] / "model.safetensors")


class _Interrupt(Progress):
    """A progress display whose user presses Ctrl-C after the first optimizer step."""

    def update(self, task_id, **kw):  # type: ignore[no-untyped-def]
        if kw.get("completed") == 1:
            raise KeyboardInterrupt
        super().update(task_id, **kw)


def test_interrupted_run_leaves_nothing(tiny_models, train_files, tmp_path):
    with pytest.raises(KeyboardInterrupt), _Interrupt(disable=True) as progress:
        train_sft(tiny_models["base"], train_files["sft"], tmp_path / "out", SFTConfig(max_steps=3, batch_size=4),
                  progress=progress)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary sibling


def test_lora_saves_merged_weights_and_the_adapter(tiny_models, train_files, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    cfg = SFTConfig(lr=1e-2, max_steps=2, batch_size=4, lora=LoraSettings(r=4, save_adapter=True))
    out = train_sft(tiny_models["base"], train_files["sft"], tmp_path / "lora", cfg)
    assert (out / "adapter" / "adapter_config.json").is_file()
    with safe_open(out / "model.safetensors", "pt") as f, safe_open(tiny_models["base"] / "model.safetensors",
                                                                      "pt") as g:
        assert set(f.keys()) == set(g.keys())  # plain weights, no lora_A/lora_B
        q = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(f.get_tensor(q), g.get_tensor(q))
        emb = "model.embed_tokens.weight"
        assert torch.equal(f.get_tensor(emb), g.get_tensor(emb))  # not a LoRA target: frozen
    AutoModelForCausalLM.from_pretrained(out)


def test_dpo_prefers_chosen_over_the_starting_model(sft_run, train_files, tmp_path):
    rec = sft_records(5)[4]

    def margin(model_dir) -> float:
        return _answer_logprob(model_dir, rec["prompt"], rec["completion"]) - _answer_logprob(
            model_dir, rec["prompt"], "no no no")

    out = train_dpo(sft_run, train_files["dpo"], tmp_path / "dpo", DPOConfig(lr=1e-3, epochs=1, batch_size=8))
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["kind"] == "dpo" and meta["model_hash"] != meta["data_hash"]
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert log[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    assert log[-1]["rewards/margins"] > 0
    assert margin(out) > margin(sft_run)
