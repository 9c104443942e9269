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

from safemerge import LANGUAGES  # the world has a pack for each
from safemerge.data.world.languages.pack import LangPack  # the type of every language's PACK

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

__all__ = ["GENERAL_TASKS", "HARM_CATEGORIES", "LANGUAGES", "N_BENIGN_ACTS", "N_FRAMES", "N_HARM_ACTS",
           "N_TASK_TEMPLATES", "LangPack", "all_packs"]


def all_packs() -> dict[str, LangPack]:
    from safemerge.data.world.languages import ar, en, es, fr, hi, ru

    return {m.PACK.code: m.PACK for m in (en, fr, es, ru, hi, ar)}
