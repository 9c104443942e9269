"""safemerge: build capable and safe multilingual LLMs by merging fine-tuned experts.

Pipeline folders: data -> train -> merge -> search -> evaluate -> study.
"""

__version__ = "0.1.0"

LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "ru", "hi", "ar")

__all__ = ["LANGUAGES", "__version__"]
