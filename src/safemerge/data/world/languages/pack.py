"""The type of a language's text tables: :class:`LangPack` (one instance per language module, ``PACK``).

Conventions of the tables (placeholders, grammar) are described in :mod:`safemerge.data.world.languages`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
