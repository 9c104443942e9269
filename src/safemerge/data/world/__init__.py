"""The built-in multilingual world: data, tokenizer and tiny pretrained base model (see ARCHITECTURE.md).

``build_world(out_dir, WorldConfig.tiny())`` for tests, ``default_world()`` for the study (cached).
"""

from safemerge.data.world.build import KINDS, World, build_world, default_world, world_key
from safemerge.data.world.config import WorldConfig
from safemerge.data.world.languages import GENERAL_TASKS, HARM_CATEGORIES, LANGUAGES

__all__ = [
    "GENERAL_TASKS", "HARM_CATEGORIES", "KINDS", "LANGUAGES", "World", "WorldConfig", "build_world",
    "default_world", "world_key",
]
