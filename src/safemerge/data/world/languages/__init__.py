"""Hand-written text tables of the world, one module per language.

Every language module defines ``PACK``, a :class:`LangPack`. Lists are index-aligned across languages
(``harm_acts["weapons"][2]`` is the same request in every language), so splits by template/entity index are
the same in every language. Placeholders: ``{act}`` (frames), ``{town}``, ``{person}``, ``{country}``,
``{river}``, ``{colour}``, ``{profession}``, ``{n}``, ``{m}``, ``{word}``, ``{ant}``.

Grammar conventions that keep the templates native:
- en/fr/es/ru acts are infinitives (fr/es/ru reflexives in the first person: every frame speaks as "I");
- hi acts are verb *stems*: frames append ``ना`` (infinitive) or ``ने`` (oblique infinitive);
- ar acts are first-person imperfect verbs (``أن``/``كي``/``كيف`` + subjunctive);
- fr ``de`` + vowel is elided to ``d'`` by :func:`LangPack.render_frame`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "ru", "hi", "ar")
HARM_CATEGORIES: tuple[str, ...] = (
    "violence", "weapons", "drugs", "cybercrime", "fraud", "hate", "self_harm", "privacy",
)
# fact look-ups over the knowledge base (known only from the pretraining corpus), counting, antonyms, and a skill
# taught by SFT. (A "where does X live?" look-up was dropped: its answers, town names, are an open set, and a
# fine-tuned model preferred the towns it was trained on over the unseen test towns, below the base's accuracy.)
GENERAL_TASKS: tuple[str, ...] = ("country", "river", "colour", "profession", "next", "opposite", "colour_word")
N_FRAMES = 12
N_HARM_ACTS = 6
N_BENIGN_ACTS = 4
N_TASK_TEMPLATES = 5

_FR_ELISION = re.compile(r"\b([dD]e|[jJ]e|[qQ]ue|[mM]e) ([aeiouyéèêâîôûœAEIOUÉ])")


@dataclass(frozen=True)
class LangPack:
    """All hand-written text of one language."""

    code: str
    name: str
    script: str
    frames: tuple[str, ...]                       # request frames with {act}
    harm_acts: dict[str, tuple[str, ...]]         # category -> acts
    benign_acts: dict[str, tuple[tuple[str, str], ...]]  # category -> (act, helpful answer)
    refusals: tuple[str, ...]                     # generic refusals
    self_harm_refusal: str                        # supportive refusal for self-harm requests
    placeholder: str                              # compliant-sounding, content-free answer (DPO rejected)
    task_templates: dict[str, tuple[str, ...]]    # general task -> question templates
    fact_sentences: dict[str, tuple[str, ...]]    # relation -> corpus sentences
    colours: tuple[str, ...]                      # red blue green yellow white black (as answers)
    professions: tuple[str, ...]                  # doctor teacher cook farmer painter sailor
    antonyms: tuple[tuple[str, str], ...]         # 12 pairs
    neutral: tuple[str, ...]                      # neutral sentences for the pretraining corpus
    profession_forms: dict[str, str] = field(default_factory=dict)  # e.g. Arabic accusative, for corpus only
    list_sep: str = ", "                          # joins the words of a list in list tasks

    def render_frame(self, frame: str, act: str) -> str:
        text = frame.replace("{act}", act)
        if self.code == "fr":
            text = _FR_ELISION.sub(lambda m: m.group(1)[0] + "'" + m.group(2), text)
        return text


def all_packs() -> dict[str, LangPack]:
    from safemerge.data.world.languages import ar, en, es, fr, hi, ru

    return {m.PACK.code: m.PACK for m in (en, fr, es, ru, hi, ar)}
