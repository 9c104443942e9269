"""General-skill tasks: closed-book look-ups over the knowledge base, counting and antonyms.

Every record has a short reference answer and 4 multiple-choice options (``choices``/``answer``) for
likelihood scoring. Splits are disjoint by question template AND by entity (town, person, number, antonym
pair): test questions use templates and entities never seen in training; their facts are only in the
pretraining corpus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from safemerge.data.world.kb import COUNTRIES, N_COLOURS, N_PROFESSIONS, RIVERS, KnowledgeBase
from safemerge.data.world.languages import GENERAL_TASKS, N_TASK_TEMPLATES, LangPack
from safemerge.data.world.records import make_record
from safemerge.data.world.splits import SPLITS, assign, round_robin

N_CHOICES = 4


@dataclass(frozen=True)
class GeneralSplits:
    templates: dict[str, list[int]]   # split -> template indices (same for every task and language)
    towns: dict[str, list[int]]
    people: dict[str, list[int]]
    numbers: dict[str, list[int]]     # split -> n (question "what follows n")
    antonym_pairs: dict[str, list[int]]


def general_splits(seed: int, kb: KnowledgeBase, max_number: int, n_pairs: int) -> GeneralSplits:
    t_sizes = (N_TASK_TEMPLATES - 2, 1, 1)
    numbers = assign(max_number, f"numbers-{seed}")
    return GeneralSplits(
        templates=assign(N_TASK_TEMPLATES, f"task-templates-{seed}", sizes=t_sizes),
        towns=assign(len(kb.towns), f"towns-{seed}"),
        people=assign(len(kb.people), f"people-{seed}"),
        numbers={s: [i + 1 for i in idx] for s, idx in numbers.items()},
        antonym_pairs=assign(n_pairs, f"antonyms-{seed}"),
    )


def _mc(correct: str, pool: list[str], rng: random.Random) -> tuple[list[str], int]:
    others = [p for p in dict.fromkeys(pool) if p != correct]
    choices = rng.sample(others, min(N_CHOICES - 1, len(others))) + [correct]
    rng.shuffle(choices)
    return choices, choices.index(correct)


def _items(task: str, pack: LangPack, kb: KnowledgeBase, sp: GeneralSplits, split: str,
           max_number: int) -> list[tuple[str, dict[str, str], str, list[str]]]:
    """(entity key, template slots, answer, answer pool) for one task/split/language."""
    lang = pack.code
    out: list[tuple[str, dict[str, str], str, list[str]]] = []
    if task in ("country", "river", "colour"):
        for i in sp.towns[split]:
            t = kb.towns[i]
            slots = {"town": t.name.render(lang)}
            if task == "country":
                ans, pool = kb.country(t.country, lang), [kb.country(j, lang) for j in range(len(COUNTRIES))]
            elif task == "river":
                ans, pool = kb.river(t.river, lang), [kb.river(j, lang) for j in range(len(RIVERS))]
            else:
                ans, pool = pack.colours[t.colour], list(pack.colours[:N_COLOURS])
            out.append((f"town:{t.name.key}", slots, ans, pool))
    elif task in ("profession", "hometown"):
        towns = [t.name.render(lang) for t in kb.towns]
        for i in sp.people[split]:
            p = kb.people[i]
            slots = {"person": p.name.render(lang)}
            if task == "profession":
                ans, pool = pack.professions[p.profession], list(pack.professions[:N_PROFESSIONS])
            else:
                ans, pool = towns[p.home], towns
            out.append((f"person:{p.name.key}", slots, ans, pool))
    elif task == "next":
        for n in sp.numbers[split]:
            pool = [str(v) for v in (n, n + 2, n + 3, n - 1, n + 10, n + 11) if v > 0]
            out.append((f"number:{n}", {"n": str(n)}, str(n + 1), pool + [str(n + 1)]))
    elif task == "opposite":
        words = [w for pair in pack.antonyms for w in pair]
        for k in sp.antonym_pairs[split]:
            a, b = pack.antonyms[k]
            for word, ant in ((a, b), (b, a)):
                out.append((f"antonym:{k}:{word == a}", {"word": word}, ant, [w for w in words if w != word]))
    else:  # pragma: no cover - GENERAL_TASKS is closed
        raise ValueError(task)
    return out


def general_records(pack: LangPack, kb: KnowledgeBase, sp: GeneralSplits, split: str, cap: int,
                    seed: int, max_number: int) -> list[dict[str, Any]]:
    """Up to ``cap`` general records of one language and split, balanced over tasks."""
    lang = pack.code
    groups: list[list[dict[str, Any]]] = []
    for task in GENERAL_TASKS:
        rng = random.Random(f"general-{seed}-{lang}-{task}-{split}")
        recs = []
        for entity, slots, ans, pool in _items(task, pack, kb, sp, split, max_number):
            for ti in sp.templates[split]:
                prompt = pack.task_templates[task][ti].format(**slots)
                choices, answer = _mc(ans, pool, rng)
                recs.append(make_record(
                    id=f"general-{lang}-{task}-t{ti}-{entity.replace(':', '-')}", lang=lang, split=split,
                    kind="general", category=task, prompt=prompt, completion=ans,
                    template=f"general/{task}/{ti}", entity=entity, choices=choices, answer=answer,
                ))
        rng.shuffle(recs)
        groups.append(recs)
    return round_robin(groups, cap)


def corpus_sentences(pack: LangPack, kb: KnowledgeBase, max_number: int) -> list[str]:
    """Every fact of the world (all entities, all splits) stated as plain sentences in ``pack``'s language."""
    lang = pack.code
    fs = pack.fact_sentences
    out: list[str] = []
    for t in kb.towns:
        town = t.name.render(lang)
        out += [s.format(town=town, country=kb.country(t.country, lang)) for s in fs["country"]]
        out += [s.format(town=town, river=kb.river(t.river, lang)) for s in fs["river"]]
        out += [s.format(town=town, colour=pack.colours[t.colour]) for s in fs["colour"]]
    for p in kb.people:
        person, prof = p.name.render(lang), pack.professions[p.profession]
        out += [s.format(person=person, profession=prof, profession_acc=pack.profession_forms.get(prof, prof))
                for s in fs["profession"]]
        out += [s.format(person=person, town=kb.towns[p.home].name.render(lang)) for s in fs["hometown"]]
    for n in range(1, max_number + 1):
        out += [s.format(n=n, m=n + 1) for s in fs["next"]]
    for a, b in pack.antonyms:
        out += [s.format(word=w, ant=x) for w, x in ((a, b), (b, a)) for s in fs["opposite"]]
    return out
