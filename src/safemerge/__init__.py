"""safemerge: build capable and safe multilingual LLMs by merging fine-tuned experts.

Pipeline folders: data -> train -> merge -> search -> evaluate -> study.
"""

__version__ = "0.1.0"

LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "ru", "hi", "ar")  # the papers' six languages: the one list
DEFAULT_SAFETY_FRACTION = 0.15  # paper A's reference data mixture: 15 % safety data (mixtures, monolingual experts, DPO)

__all__ = ["DEFAULT_SAFETY_FRACTION", "LANGUAGES", "__version__"]
