"""General-skill tasks: closed-book look-ups over the knowledge base, counting, antonyms and a list skill.

Every record has a short reference answer and 4 multiple-choice options (``choices``/``answer``) for
likelihood scoring. Splits are disjoint by question template AND by entity (town, person, number, antonym
pair, word list): test questions use templates and entities never seen in training. Look-up facts are only in
the pretraining corpus. Look-up options are the entity's own attributes of other relations (a town's river and
flag colour for "which country?"): the base model associates all of them with the entity, a fine-tuned model has
learnt which relation a question asks for. Next-number and antonym options are answers of the same split, which
no training question has. The list skill (which word of a list is a colour) is an instruction only fine-tuning
teaches; test lists use words no training list has.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from safemerge.data.world.kb import N_COLOURS, N_PROFESSIONS, KnowledgeBase
from safemerge.data.world.languages import GENERAL_TASKS, N_TASK_TEMPLATES, LangPack
from safemerge.data.world.records import make_record
from safemerge.data.world.splits import assign, entity_splits, round_robin

N_CHOICES = 4


@dataclass(frozen=True)
class GeneralSplits:
    templates: dict[str, list[int]]   # split -> template indices (same for every task and language)
    towns: dict[str, list[int]]
    people: dict[str, list[int]]
    numbers: dict[str, list[int]]     # split -> n (question "what follows n")
    antonym_pairs: dict[str, list[int]]
    words: dict[str, list[int]]       # split -> indices into word_bank() that are not colours (list tasks)
    seed: int = 0


def general_splits(seed: int, kb: KnowledgeBase, max_number: int, n_pairs: int) -> GeneralSplits:
    t_sizes = (N_TASK_TEMPLATES - 2, 1, 1)
    town_split, people_split = entity_splits(seed, len(kb.towns), len(kb.people))
    numbers = assign(max_number, f"numbers-{seed}")
    return GeneralSplits(
        templates=assign(N_TASK_TEMPLATES, f"task-templates-{seed}", sizes=t_sizes),
        # a quarter of the entities are test entities: enough test questions per task to measure (the fine-tuning
        # only needs the training entities to learn the question format)
        towns=town_split,
        people=people_split,
        numbers={s: [i + 1 for i in idx] for s, idx in numbers.items()},
        antonym_pairs=assign(n_pairs, f"antonyms-{seed}", test_frac=0.25),
        words={s: [N_COLOURS + i for i in idx] for s, idx in assign(N_PROFESSIONS + 2 * n_pairs,
                                                                      f"words-{seed}").items()},
        seed=seed,
    )


def word_bank(pack: LangPack) -> list[str]:
    """The words of list tasks: colours, then professions, then the antonym words (same order in every language)."""
    return [*pack.colours[:N_COLOURS], *pack.professions[:N_PROFESSIONS], *(w for pair in pack.antonyms for w in pair)]


N_LISTS = {"train": 48, "val": 12, "test": 12}   # word lists per split
LIST_LEN = 4


def word_lists(words: list[int], split: str, seed: int) -> list[list[int]]:
    """Distinct lists of word-bank indices, each with exactly one colour and ``LIST_LEN - 1`` words of ``words``."""
    rng = random.Random(f"lists-{seed}-colour_word-{split}")
    out: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    while len(out) < N_LISTS[split]:
        items = [rng.randrange(N_COLOURS), *rng.sample(words, LIST_LEN - 1)]
        rng.shuffle(items)
        if tuple(items) not in seen:
            seen.add(tuple(items))
            out.append(items)
    return out


def _mc(correct: str, pool: list[str], rng: random.Random, related: tuple[str, ...] = (),
        fallback: list[str] | None = None) -> tuple[list[str], int]:
    """4 options: the answer and 3 distractors: the entity's ``related`` attributes if given, else drawn from
    ``pool``, topped up from ``fallback`` where ``pool`` is too small (tiny worlds)."""
    if related:
        others = [p for p in dict.fromkeys(related) if p != correct][: N_CHOICES - 1]
    else:
        others = [p for p in dict.fromkeys(pool) if p != correct]
        others = rng.sample(others, min(N_CHOICES - 1, len(others)))
        spare = [p for p in dict.fromkeys(fallback or []) if p != correct and p not in others]
        others += rng.sample(spare, min(N_CHOICES - 1 - len(others), len(spare)))
    choices = others + [correct]
    rng.shuffle(choices)
    return choices, choices.index(correct)


Item = tuple[str, dict[str, str], str, list[str], tuple[str, ...], list[str]]


def _items(task: str, pack: LangPack, kb: KnowledgeBase, sp: GeneralSplits, split: str,
           max_number: int) -> list[Item]:
    """(entity key, slots, answer, same-kind option pool, options related to the entity, fallback pool) per item.

    Look-up options are the entity's own attributes of OTHER relations (a town's river and flag colour for "which
    country?"): the base model associates all of them with the entity; only a model that follows the question picks
    the asked relation. Next and opposite draw options from the same split's answers, which no training question has.
    """
    lang = pack.code
    out: list[Item] = []
    if task in ("country", "river", "colour"):
        for i in sp.towns[split]:
            t = kb.towns[i]
            attrs = {"country": kb.country(t.country, lang), "river": kb.river(t.river, lang),
                     "colour": pack.colours[t.colour]}
            # options: the town's own attributes of the other relations and the profession of someone living there
            # (or a fixed one): every option goes with the town, only the asked relation picks the answer
            residents = [pack.professions[p.profession] for p in kb.people if p.home == i] or [pack.professions[0]]
            related = (*(v for k, v in attrs.items() if k != task), residents[0])
            out.append((f"town:{t.name.key}", {"town": t.name.render(lang)}, attrs[task], [], related, []))
    elif task == "profession":
        for i in sp.people[split]:
            p = kb.people[i]
            home = kb.towns[p.home]
            related = (home.name.render(lang), pack.colours[home.colour], kb.river(home.river, lang))
            out.append((f"person:{p.name.key}", {"person": p.name.render(lang)}, pack.professions[p.profession], [],
                        related, []))
    elif task == "next":
        # distractors: the answers of the split's other questions (numbers no training question has as answer)
        answers = [str(m + 1) for m in sp.numbers[split]]
        for n in sp.numbers[split]:
            near = [str(v) for v in (n + 2, n - 1, n + 3, n) if v > 0]
            out.append((f"number:{n}", {"n": str(n)}, str(n + 1), answers, (), near))
    elif task == "opposite":
        words = [w for k in sp.antonym_pairs[split] for w in pack.antonyms[k]]
        every = [w for pair in pack.antonyms for w in pair]
        for k in sp.antonym_pairs[split]:
            a, b = pack.antonyms[k]
            for word, ant in ((a, b), (b, a)):
                out.append((f"antonym:{k}:{word == a}", {"word": word}, ant, [w for w in words if w != word], (),
                            [w for w in every if w != word]))
    elif task == "colour_word":
        bank = word_bank(pack)
        for items in word_lists(sp.words[split], split, sp.seed):
            words = [bank[i] for i in items]
            ans = next(w for i, w in zip(items, words) if i < N_COLOURS)
            key = "-".join(map(str, items))
            out.append((f"list:{key}", {"words": pack.list_sep.join(words)}, ans, words, (), []))
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
        for entity, slots, ans, pool, related, fallback in _items(task, pack, kb, sp, split, max_number):
            for ti in sp.templates[split]:
                prompt = pack.task_templates[task][ti].format(**slots)
                choices, answer = _mc(ans, pool, rng, related, fallback)
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
