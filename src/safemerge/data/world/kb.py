"""The world's knowledge base: invented towns and people with attributes, named in every script.

Names are built from consonant-vowel syllables with hand-written spellings in Latin (en/fr/es), Cyrillic (ru),
Devanagari (hi) and Arabic (ar) script, so ``Kalon`` is ``Калон``, ``कालोन`` and ``كالون``. Countries and
rivers are a fixed, hand-transliterated set. Everything is drawn from a seeded RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# syllable -> (latin, cyrillic, devanagari, arabic)
_SYLLABLES: dict[str, tuple[str, str, str, str]] = {
    "ka": ("ka", "ка", "का", "كا"), "lo": ("lo", "ло", "लो", "لو"), "mi": ("mi", "ми", "मि", "مي"),
    "ra": ("ra", "ра", "रा", "را"), "to": ("to", "то", "तो", "تو"), "ne": ("ne", "не", "ने", "ني"),
    "su": ("su", "су", "सु", "سو"), "va": ("va", "ва", "वा", "فا"), "di": ("di", "ди", "दि", "دي"),
    "bo": ("bo", "бо", "बो", "بو"), "ze": ("ze", "зе", "ज़े", "زي"), "pa": ("pa", "па", "पा", "با"),
    "nu": ("nu", "ну", "नु", "نو"), "sa": ("sa", "са", "सा", "سا"), "ri": ("ri", "ри", "रि", "ري"),
    "ta": ("ta", "та", "ता", "تا"), "mo": ("mo", "мо", "मो", "مو"), "le": ("le", "ле", "ले", "لي"),
    "go": ("go", "го", "गो", "غو"), "da": ("da", "да", "दा", "دا"), "ku": ("ku", "ку", "कु", "كو"),
    "fe": ("fe", "фе", "फ़े", "في"), "ho": ("ho", "хо", "हो", "هو"), "ja": ("ja", "я", "या", "يا"),
}
_CODAS: dict[str, tuple[str, str, str, str]] = {
    "n": ("n", "н", "न", "ن"), "r": ("r", "р", "र", "ر"), "l": ("l", "л", "ल", "ل"), "s": ("s", "с", "स", "س"),
}
_SCRIPT_INDEX = {"en": 0, "fr": 0, "es": 0, "ru": 1, "hi": 2, "ar": 3}

COUNTRIES: tuple[dict[str, str], ...] = tuple(
    dict(zip(("latin", "ru", "hi", "ar"), names)) for names in (
        ("Verania", "Верания", "वेरानिया", "فيرانيا"),
        ("Kaldora", "Калдора", "कालडोरा", "كالدورا"),
        ("Nimosa", "Нимоса", "निमोसा", "نيموسا"),
        ("Tessaria", "Тессария", "तेस्सारिया", "تيساريا"),
        ("Zembria", "Зембрия", "ज़ेम्ब्रिया", "زيمبريا"),
        ("Dunavia", "Дунавия", "दुनाविया", "دونافيا"),
    )
)
RIVERS: tuple[dict[str, str], ...] = tuple(
    dict(zip(("latin", "ru", "hi", "ar"), names)) for names in (
        ("Dorna", "Дорна", "डोर्ना", "دورنا"),
        ("Veska", "Веска", "वेस्का", "فيسكا"),
        ("Ilmara", "Ильмара", "इल्मारा", "إلمارا"),
        ("Kavra", "Кавра", "कावरा", "كافرا"),
        ("Olenta", "Олента", "ओलेंटा", "أولينتا"),
        ("Sumba", "Сумба", "सुम्बा", "سومبا"),
    )
)
N_COLOURS = 6
N_PROFESSIONS = 6


def _script_key(lang: str) -> str:
    return "latin" if lang in ("en", "fr", "es") else lang


@dataclass(frozen=True)
class Name:
    """A name as syllable keys; rendered per language by :meth:`render`."""

    syllables: tuple[str, ...]
    coda: str | None

    def render(self, lang: str) -> str:
        idx = _SCRIPT_INDEX[lang]
        text = "".join(_SYLLABLES[s][idx] for s in self.syllables)
        if self.coda:
            text += _CODAS[self.coda][idx]
        return text[0].upper() + text[1:] if idx <= 1 else text

    @property
    def key(self) -> str:
        return self.render("en")


@dataclass(frozen=True)
class Town:
    name: Name
    country: int
    river: int
    colour: int


@dataclass(frozen=True)
class Person:
    name: Name
    profession: int
    home: int  # index into KnowledgeBase.towns


@dataclass(frozen=True)
class KnowledgeBase:
    towns: tuple[Town, ...]
    people: tuple[Person, ...]

    def country(self, idx: int, lang: str) -> str:
        return COUNTRIES[idx][_script_key(lang)]

    def river(self, idx: int, lang: str) -> str:
        return RIVERS[idx][_script_key(lang)]


def _unique_names(rng: random.Random, count: int, n_syl: tuple[int, ...], codas: tuple[str | None, ...],
                  taken: set[str]) -> list[Name]:
    keys = sorted(_SYLLABLES)
    names: list[Name] = []
    while len(names) < count:
        syl = tuple(rng.choice(keys) for _ in range(rng.choice(n_syl)))
        name = Name(syl, rng.choice(codas))
        # no repeated syllable in a row, unique in every script
        if any(a == b for a, b in zip(syl, syl[1:])) or name.key in taken:
            continue
        taken.add(name.key)
        names.append(name)
    return names


def make_kb(seed: int, n_towns: int, n_people: int) -> KnowledgeBase:
    """Draw towns (2-3 syllables + n/r/l coda) and people (2-3 syllables, no coda or -s).

    A person lives in a town of its own split (``splits.entity_splits``): a test person's home town is never the
    answer to a training question.
    """
    from safemerge.data.world.splits import entity_splits

    town_split, people_split = entity_splits(seed, n_towns, n_people)
    home_towns = {i: town_split[split] for split, idx in people_split.items() for i in idx}
    rng = random.Random(f"kb-{seed}")
    taken: set[str] = {c["latin"] for c in COUNTRIES} | {r["latin"] for r in RIVERS}
    town_names = _unique_names(rng, n_towns, (2, 3), ("n", "r", "l"), taken)
    person_names = _unique_names(rng, n_people, (2, 3), (None, None, "s"), taken)
    towns = tuple(
        Town(name, country=i % len(COUNTRIES), river=rng.randrange(len(RIVERS)), colour=rng.randrange(N_COLOURS))
        for i, name in enumerate(town_names)
    )
    people = tuple(
        Person(name, profession=rng.randrange(N_PROFESSIONS), home=rng.choice(home_towns[i]))
        for i, name in enumerate(person_names)
    )
    return KnowledgeBase(towns=towns, people=people)
