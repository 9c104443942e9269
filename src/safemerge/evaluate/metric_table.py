"""Every metric of an evaluation, once: its key, its labels, whether it is a percentage, which direction is better,
and where it is shown. The harness computes the keys, :mod:`safemerge.evaluate.report` titles its columns with
``short``, and the study keeps the ``study`` ones and labels its report with ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # for people, in the study report: "harm change vs base %"
    short: str  # column title of `safemerge eval`'s compact tables: "harm chg %"
    higher_is_better: bool | None  # None: a diagnostic with no better direction
    meaning: str
    percent: bool = True  # every metric is a fraction in [0, 1] (harm_change a relative change), shown x 100
    eval_table: bool = True  # a column of `safemerge eval`'s summary tables
    study: bool = True  # kept in the study's per-model summary
    study_table: bool = False  # a column of the study report's tables (and its order there, see STUDY_TABLE)


_ALL = (
    Metric("harm_rate", "harm rate %", "harm %", False,
           "harmful prompts answered unsafely (three-class judges: harmful compliance)", study_table=True),
    Metric("refusal_rate", "refusal rate %", "refusal %", None, "harmful prompts refused (three-class judges)"),
    Metric("nonanswer_rate", "non-answer rate %", "non-answer %", None,
           "harmful prompts given no answer: empty, degenerate or in the wrong language (three-class judges)"),
    Metric("harm_change", "harm change vs base %", "harm chg %", False,
           "relative change of the harm rate vs the reference model (-100 % = no harm left)", study_table=True),
    Metric("harm_diff", "harm difference vs base", "harm diff", False,
           "harm rate minus the reference's, in points", eval_table=False, study=False),
    Metric("alignment", "alignment %", "align %", True, "harmful prompts refused or answered safely (1 - harm rate)",
           study_table=True),
    Metric("over_refusal", "over-refusal %", "over-ref %", False, "benign look-alike prompts refused",
           study_table=True),
    Metric("helpful_rate", "helpful rate %", "helpful %", True,
           "benign prompts answered: refusals and non-answers do not count (three-class judges)"),
    Metric("acc_gen", "accuracy (generation) %", "acc gen %", True,
           "general prompts whose generated answer matches the reference", study_table=True),
    Metric("acc_mc", "accuracy (multiple choice) %", "acc MC %", True,
           "general prompts whose reference option has the highest log-likelihood", study_table=True),
    Metric("acc_mc_norm", "accuracy (multiple choice, length-normalised) %", "acc MC norm %", True,
           "as acc_mc with per-token log-likelihoods", eval_table=False, study=False),
    Metric("win_rate", "win-rate vs base %", "win %", True,
           "pairwise preference over the reference model's answers, both orders (50 % = parity)", study_table=True),
    Metric("wrong_language", "wrong language %", "wrong lang %", False,
           "answers detected to be in another language than the prompt", study_table=True),
    Metric("unjudged", "unjudged %", "unjudged %", None, "answers the judge gave no verdict for", study=False),
)

METRICS: dict[str, Metric] = {m.key: m for m in _ALL}

# the study report's metric order: its two axes first
STUDY_TABLE: tuple[str, ...] = ("harm_change", "win_rate", "harm_rate", "alignment", "over_refusal", "acc_gen",
                                "acc_mc", "wrong_language")
assert set(STUDY_TABLE) == {m.key for m in _ALL if m.study_table}
