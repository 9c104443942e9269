"""Language values of public datasets -> the two-letter codes safemerge uses.

Datasets name languages in three ways: ISO 639-1 codes (``fr``, PolyGuardPrompts' and MultiJail's columns), ISO
639-3 codes (``fra``, ``arb``: the Aya evaluation suite) and English names (``French``: Aya Red-teaming,
PolyGuardPrompts). Regional or script tags are dropped (``en-US``, ``fra_Latn`` -> ``en``, ``fr``).
"""

from __future__ import annotations

from typing import Any

from safemerge.data.synth import LANGUAGE_NAMES

# ISO 639-1 codes known here: the study's six, the other languages of the adapted datasets, a few common ones
CODES = frozenset({*LANGUAGE_NAMES, "bn", "cs", "jv", "ko", "nl", "pl", "sr", "sv", "sw", "th", "tl", "tr", "vi",
                   "id", "uk", "fa", "he", "el", "ro", "hu", "da", "fi", "no", "ms", "ur", "ta", "te", "yo"})
ISO3 = {"eng": "en", "fra": "fr", "fre": "fr", "spa": "es", "rus": "ru", "hin": "hi", "arb": "ar", "ara": "ar",
        "deu": "de", "ger": "de", "ita": "it", "por": "pt", "zho": "zh", "chi": "zh", "cmn": "zh", "jpn": "ja",
        "kor": "ko", "vie": "vi", "tha": "th", "ben": "bn", "swa": "sw", "swh": "sw", "jav": "jv", "srp": "sr",
        "tgl": "tl", "fil": "tl", "nld": "nl", "dut": "nl", "pol": "pl", "ces": "cs", "cze": "cs", "swe": "sv",
        "tur": "tr", "ind": "id", "ukr": "uk", "pes": "fa", "fas": "fa", "heb": "he", "ell": "el", "ron": "ro",
        "hun": "hu", "dan": "da", "fin": "fi", "nor": "no", "msa": "ms", "zsm": "ms", "urd": "ur", "tam": "ta",
        "tel": "te", "yor": "yo"}
NAMES = {**{name.lower(): code for code, name in LANGUAGE_NAMES.items()},
         "bengali": "bn", "czech": "cs", "javanese": "jv", "korean": "ko", "dutch": "nl", "polish": "pl",
         "serbian": "sr", "swedish": "sv", "swahili": "sw", "thai": "th", "tagalog": "tl", "filipino": "tl",
         "turkish": "tr", "vietnamese": "vi", "indonesian": "id", "ukrainian": "uk", "persian": "fa",
         "hebrew": "he", "greek": "el", "romanian": "ro", "hungarian": "hu", "danish": "da", "finnish": "fi",
         "norwegian": "no", "malay": "ms", "urdu": "ur", "tamil": "ta", "telugu": "te", "yoruba": "yo",
         "mandarin": "zh", "modern standard arabic": "ar"}


def lang_code(value: Any) -> str | None:
    """The two-letter code of a dataset's language value (code, ISO 639-3 code or English name); None if unknown."""
    if not isinstance(value, str):
        return None
    v = " ".join(value.strip().lower().split())
    if v in NAMES:
        return NAMES[v]
    base = v.replace("_", "-").split("-")[0]
    if base in CODES:
        return base
    return ISO3.get(base)
