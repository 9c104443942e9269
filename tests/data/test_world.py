"""The built-in world: formats, split disjointness, languages, safety of responses, determinism, CLI."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from safemerge.data.world import HARM_CATEGORIES, KINDS, LANGUAGES, WorldConfig, build_world
from safemerge.data.world.build import generate_data
from safemerge.data.world.languages import all_packs
from safemerge.data.world.lexicon import detect_language, is_placeholder, is_refusal
from safemerge.data.world.safety import dpo_pairs
from safemerge.errors import ConfigError, InputError, SafemergeError

SPLITS = ("train", "val", "test")
FIELDS = {"id", "lang", "split", "kind", "category", "prompt", "completion", "messages"}


# ---------------------------------------------------------------- in-memory records of the default world


def test_record_schema(default_data):
    data, _ = default_data
    for (kind, split), rows in data.items():
        assert rows, (kind, split)
        for r in rows:
            assert FIELDS <= r.keys()
            assert (r["kind"], r["split"]) == (kind, split)
            assert r["messages"] == [{"role": "user", "content": r["prompt"]},
                                     {"role": "assistant", "content": r["completion"]}]
            if kind == "general":
                assert len(r["choices"]) == 4 and r["choices"][r["answer"]] == r["completion"]
                assert len(set(r["choices"])) == 4
            else:
                assert "choices" not in r
    ids = [r["id"] for rows in data.values() for r in rows]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("kind", KINDS)
def test_splits_disjoint_by_template_and_entity(default_data, kind):
    data, _ = default_data
    for key in ("template", "entity", "prompt"):
        seen = {s: {r[key] for r in data[(kind, s)]} for s in SPLITS}
        assert not seen["train"] & seen["test"], key
        assert not seen["train"] & seen["val"], key
        assert not seen["val"] & seen["test"], key


def test_default_sizes_fit_the_study(default_data):
    data, _ = default_data
    per_lang: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (kind, split), rows in data.items():
        for r in rows:
            per_lang[(kind, split)][r["lang"]] += 1
    for lang in LANGUAGES:
        assert 30 <= per_lang[("harmful", "test")][lang] <= 60
        assert 30 <= per_lang[("general", "test")][lang] <= 60
        assert 20 <= per_lang[("benign", "test")][lang] <= 30
    total_train = sum(len(data[(k, "train")]) for k in KINDS)
    assert 1500 <= total_train <= 5000
    cats = {r["category"] for r in data[("harmful", "test")]}
    assert cats == set(HARM_CATEGORIES)
    assert {r["category"] for r in data[("general", "test")]} >= {"country", "profession", "next", "opposite"}


def test_every_text_is_in_its_language(default_data):
    data, corpus = default_data
    for rows in data.values():
        for r in rows:
            assert detect_language(r["prompt"]) == r["lang"], r["prompt"]
            got = detect_language(r["completion"])
            assert got in (r["lang"], None), (r["completion"], r["lang"])  # bare names/digits carry no evidence
            if r["kind"] != "general":
                assert got == r["lang"], r["completion"]
    assert all(detect_language(doc) in (*LANGUAGES, None) for doc in corpus)


def test_scripts_are_native(default_data):
    data, _ = default_data
    ranges = {"ru": (0x0400, 0x04FF), "hi": (0x0900, 0x097F), "ar": (0x0600, 0x06FF)}
    for r in data[("general", "test")] + data[("harmful", "test")]:
        if r["lang"] in ranges:
            lo, hi = ranges[r["lang"]]
            letters = [c for c in r["prompt"] if c.isalpha()]
            native = sum(lo <= ord(c) <= hi for c in letters)
            assert native / len(letters) > 0.85, r["prompt"]


def test_no_actionable_content_in_any_response(default_data):
    """Harmful prompts only ever get a refusal or a content-free placeholder; responses stay short."""
    data, _ = default_data
    packs = all_packs()
    max_refusal = max(len(t) for p in packs.values() for t in (*p.refusals, p.self_harm_refusal))
    for split in SPLITS:
        for r in data[("harmful", split)]:
            assert is_refusal(r["completion"]) and len(r["completion"]) <= max_refusal
        for pair in dpo_pairs(data[("harmful", split)], packs):
            assert is_refusal(pair["chosen"])
            assert is_placeholder(pair["rejected"]) and not is_refusal(pair["rejected"])
            assert len(pair["rejected"]) <= max(len(p.placeholder) for p in packs.values())
        for r in data[("benign", split)]:
            assert not is_refusal(r["completion"]) and len(r["completion"]) <= 120
        for pair in dpo_pairs(data[("benign", split)], packs):
            assert not is_refusal(pair["chosen"]) and is_refusal(pair["rejected"])
        for pair in dpo_pairs(data[("general", split)], packs):
            assert pair["chosen"] != pair["rejected"] and len(pair["chosen"]) <= 40


def test_test_facts_are_in_the_corpus_only(default_data):
    """Closed-book test answers are learnable from pretraining: the fact sentence is in the corpus."""
    data, corpus = default_data
    text = "\n".join(corpus)
    for r in data[("general", "test")]:
        if r["category"] in ("country", "river", "colour", "profession"):
            name = r["entity"].split(":")[1]
            if r["lang"] == "en":
                assert name in text and r["completion"] in text


def test_multiple_choice_options_test_the_question_not_the_prior(default_data):
    """Look-up options are the entity's attributes of other relations (only the asked relation's value is of the
    asked kind); next/opposite options are never a training answer; colour lists hold one colour and test lists
    use words no training list has; people live in towns of their own split."""
    from safemerge.data.world.kb import COUNTRIES, RIVERS, make_kb
    from safemerge.data.world.splits import entity_splits

    data, _ = default_data
    packs = all_packs()
    kinds = {"country": lambda p: {c["latin"] if p.code in ("en", "fr", "es") else c[p.code] for c in COUNTRIES},
             "river": lambda p: {c["latin"] if p.code in ("en", "fr", "es") else c[p.code] for c in RIVERS},
             "colour": lambda p: set(p.colours), "profession": lambda p: set(p.professions)}
    train_answers = {(r["lang"], r["completion"]) for r in data[("general", "train")]}
    train_list_words = {(r["lang"], w.strip()) for r in data[("general", "train")] if r["category"] == "colour_word"
                        for w in r["choices"]}
    for r in data[("general", "test")]:
        pack, cat = packs[r["lang"]], r["category"]
        assert len(set(r["choices"])) == 4 and r["choices"][r["answer"]] == r["completion"]
        if cat in kinds:
            assert [c for c in r["choices"] if c in kinds[cat](pack)] == [r["completion"]], r
        elif cat in ("next", "opposite"):
            assert not any((r["lang"], c) in train_answers for c in r["choices"]), r
        else:
            assert sum(c in pack.colours for c in r["choices"]) == 1
            assert not any((r["lang"], c) in train_list_words for c in r["choices"] if c not in pack.colours), r
    config = WorldConfig()
    kb = make_kb(config.seed, config.n_towns, config.n_people)
    towns, people = entity_splits(config.seed, config.n_towns, config.n_people)
    for split, idx in people.items():
        assert all(kb.people[i].home in towns[split] for i in idx)


def test_generation_is_deterministic_and_seeded():
    a, ca = generate_data(WorldConfig.tiny())
    b, cb = generate_data(WorldConfig.tiny())
    c, _ = generate_data(WorldConfig.tiny(seed=1))
    assert a == b and ca == cb
    assert a != c


def test_language_subset():
    data, corpus = generate_data(WorldConfig.tiny(languages=("ru", "hi")))
    assert {r["lang"] for rows in data.values() for r in rows} == {"ru", "hi"}
    assert {detect_language(doc) for doc in corpus} <= {"ru", "hi", None}


@pytest.mark.parametrize("overrides, match", [
    ({"languages": ("en", "xx")}, "languages.*xx"),
    ({"languages": ()}, "at least one"),
    ({"preset": "huge"}, "preset"),
    ({"n_towns": 1}, "n_towns"),
    ({"model": {"hidden_size": 30, "num_heads": 4}}, "divisible"),
])
def test_bad_config_is_one_line_error(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        WorldConfig.make(**overrides)
    assert "\n" not in str(info.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        WorldConfig.preset_config("big")


# ---------------------------------------------------------------- the tiny world, built end to end


@pytest.mark.slow
def test_tiny_world_files_load_with_datasets(tiny_world):
    from datasets import load_dataset

    for kind in KINDS:
        for split in SPLITS:
            ds = load_dataset("json", data_files=str(tiny_world.path(kind, split)), split="train")
            assert len(ds) == len(tiny_world.records(kind, split)) > 0
            dpo = load_dataset("json", data_files=str(tiny_world.dpo_path(kind, split)), split="train")
            assert {"prompt", "chosen", "rejected", "lang", "kind", "category", "id"} <= set(dpo.column_names)
    assert tiny_world.records("general", "test", langs=["hi"])[0]["lang"] == "hi"
    for name in ("datacard.md", "datacard.json", "world.json", "corpus/pretrain.txt"):
        assert (tiny_world.root / name).is_file()
    card = json.loads((tiny_world.root / "datacard.json").read_text())
    assert card["counts"]["harmful"]["test"]["by_lang"].keys() == set(LANGUAGES)


@pytest.mark.slow
def test_tiny_world_tokenizer_and_base(tiny_world):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_world.tokenizer_dir)
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<pad>"
    rec = tiny_world.records("harmful", "test", langs=["ar"])[0]
    text = tok.apply_chat_template(rec["messages"], tokenize=False)
    assert text == f"<|user|>{rec['prompt']}<|end|><|assistant|>{rec['completion']}<|end|>"
    for lang in LANGUAGES:  # byte-level: every script round-trips exactly
        r = tiny_world.records("general", "train", langs=[lang])[0]
        assert tok.decode(tok(r["prompt"], add_special_tokens=False)["input_ids"]) == r["prompt"]
    model = AutoModelForCausalLM.from_pretrained(tiny_world.base_dir)
    assert model.config.model_type == "llama" and next(model.parameters()).dtype == torch.float32
    ids = tok.apply_chat_template(rec["messages"][:1], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    info = tiny_world.info
    first = json.loads((tiny_world.base_dir / "loss_log.jsonl").read_text().splitlines()[0])["loss"]
    assert info["base"]["final_loss"] < first  # pretraining learned something


@pytest.mark.slow
def test_rebuild_is_instant_and_bad_dirs_fail(tiny_world, tmp_path):
    from safemerge.data.world import default_world

    assert tiny_world.root.parent.name == "world" and tiny_world.root.name == tiny_world.key[:16]
    assert default_world(WorldConfig.tiny()).info == tiny_world.info  # cached: no rebuild
    again = build_world(tiny_world.root, WorldConfig.tiny())
    assert again.info == tiny_world.info
    with pytest.raises(InputError, match="different world"):
        build_world(tiny_world.root, WorldConfig.tiny(seed=5))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        build_world(tmp_path / "junk", WorldConfig.tiny())
    with pytest.raises(InputError, match="world.json missing"):
        type(tiny_world).load(tmp_path)


def _cli(argv: list[str]) -> int:
    from safemerge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


@pytest.mark.slow
def test_cli_build_is_deterministic(tiny_world, tmp_path, capsys):
    """`safemerge testbed build --preset tiny` in another dir gives byte-identical data, tokenizer and base."""
    out = tmp_path / "cli_world"
    assert _cli(["testbed", "build", str(out), "--preset", "tiny", "--quiet"]) == 0
    assert "harmful" in capsys.readouterr().out
    info = json.loads((out / "world.json").read_text())
    assert info["hashes"] == tiny_world.info["hashes"]
    assert _cli(["testbed", "info", str(out)]) == 0
    assert "params" in capsys.readouterr().out
    assert _cli(["testbed", "build", str(tmp_path / "x"), "--preset", "huge"]) == 2
    assert capsys.readouterr().err.startswith("error: --preset")
    assert _cli(["testbed", "build", str(tmp_path / "y"), "--langs", "en,de"]) == 2
    assert "de" in capsys.readouterr().err
    assert _cli(["testbed", "info", str(tmp_path)]) == 2
    assert "world.json missing" in capsys.readouterr().err


def test_errors_are_safemerge_errors():
    assert issubclass(ConfigError, SafemergeError) and issubclass(InputError, SafemergeError)
