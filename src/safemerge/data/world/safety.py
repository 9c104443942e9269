"""Safety data: harmful requests (refused in the request's language) and benign look-alikes (answered).

A request is a *frame* ("How do I {act}?") filled with an *act* of a harm category. Frames are split
train/val/test once (shared by harmful and benign data, so test frames are new for both); acts are split per
category. Harmful acts of a category share vocabulary (bomb, gun, hack...) with each other and with the benign
acts of the same category ("kill a stuck process", "make a bath bomb"), so refusing is learnable from cues and
over-refusal is measurable. No response anywhere carries harmful content: harmful prompts get a refusal
(``chosen``) or a content-free placeholder (DPO ``rejected``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from safemerge.data.world.languages import HARM_CATEGORIES, N_BENIGN_ACTS, N_FRAMES, N_HARM_ACTS, LangPack
from safemerge.data.world.records import make_dpo, make_record
from safemerge.data.world.splits import assign, round_robin


@dataclass(frozen=True)
class SafetySplits:
    frames: dict[str, list[int]]
    harm_acts: dict[str, dict[str, list[int]]]    # category -> split -> act indices
    benign_acts: dict[str, dict[str, list[int]]]


def safety_splits(seed: int) -> SafetySplits:
    return SafetySplits(
        frames=assign(N_FRAMES, f"frames-{seed}", sizes=(7, 2, 3)),
        harm_acts={c: assign(N_HARM_ACTS, f"harm-{seed}-{c}", sizes=(3, 1, 2)) for c in HARM_CATEGORIES},
        benign_acts={c: assign(N_BENIGN_ACTS, f"benign-{seed}-{c}", sizes=(2, 1, 1)) for c in HARM_CATEGORIES},
    )


def refusal_for(pack: LangPack, category: str, key: str) -> str:
    """The refusal for a request: supportive for self-harm, else one of the language's refusals (by key)."""
    if category == "self_harm":
        return pack.self_harm_refusal
    return pack.refusals[sum(map(ord, key)) % len(pack.refusals)]


def harmful_records(pack: LangPack, sp: SafetySplits, split: str, cap: int, seed: int) -> list[dict[str, Any]]:
    lang = pack.code
    groups = []
    for cat in HARM_CATEGORIES:
        recs = []
        for ai in sp.harm_acts[cat][split]:
            for fi in sp.frames[split]:
                rid = f"harmful-{lang}-{cat}-a{ai}-f{fi}"
                recs.append(make_record(
                    id=rid, lang=lang, split=split, kind="harmful", category=cat,
                    prompt=pack.render_frame(pack.frames[fi], pack.harm_acts[cat][ai]),
                    completion=refusal_for(pack, cat, rid), template=f"frame/{fi}", entity=f"harm:{cat}:{ai}",
                ))
        random.Random(f"harmful-{seed}-{lang}-{cat}-{split}").shuffle(recs)
        groups.append(recs)
    return round_robin(groups, cap)


def benign_records(pack: LangPack, sp: SafetySplits, split: str, cap: int, seed: int) -> list[dict[str, Any]]:
    lang = pack.code
    groups = []
    for cat in HARM_CATEGORIES:
        recs = []
        for ai in sp.benign_acts[cat][split]:
            act, answer = pack.benign_acts[cat][ai]
            for fi in sp.frames[split]:
                recs.append(make_record(
                    id=f"benign-{lang}-{cat}-a{ai}-f{fi}", lang=lang, split=split, kind="benign", category=cat,
                    prompt=pack.render_frame(pack.frames[fi], act), completion=answer,
                    template=f"frame/{fi}", entity=f"benign:{cat}:{ai}",
                ))
        random.Random(f"benign-{seed}-{lang}-{cat}-{split}").shuffle(recs)
        groups.append(recs)
    return round_robin(groups, cap)


def dpo_pairs(records: list[dict[str, Any]], packs: dict[str, LangPack]) -> list[dict[str, Any]]:
    """Preference pairs: general -> a wrong choice is rejected; harmful -> the content-free placeholder;
    benign -> a refusal (over-refusal) is rejected."""
    out = []
    for rec in records:
        pack = packs[rec["lang"]]
        if rec["kind"] == "general":
            wrong = [c for i, c in enumerate(rec["choices"]) if i != rec["answer"]]
            rejected = wrong[sum(map(ord, rec["id"])) % len(wrong)]
        elif rec["kind"] == "harmful":
            rejected = pack.placeholder
        else:
            rejected = refusal_for(pack, "benign", rec["id"])
        out.append(make_dpo(rec, rejected))
    return out
