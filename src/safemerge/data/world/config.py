"""WorldConfig: everything that determines a built world (same config -> same bytes)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from safemerge.utils.config import FrozenStrictModel
from safemerge.data.world.languages import LANGUAGES
from safemerge.errors import ConfigError, config_error_from_validation

PRESETS = ("default", "tiny")


class SplitSizes(FrozenStrictModel):
    """Maximum number of records per language in each split (fewer if the templates x entities run out)."""

    train: int = Field(ge=1)
    val: int = Field(ge=1)
    test: int = Field(ge=1)


class BaseModelConfig(FrozenStrictModel):
    """Shape of the tiny Llama base model."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(3, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    max_position_embeddings: int = Field(256, ge=32)

    @model_validator(mode="after")
    def _heads_divide(self) -> BaseModelConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must be divisible by num_heads and num_heads by num_kv_heads")
        return self


class PretrainConfig(FrozenStrictModel):
    """Plain causal-LM pretraining of the base model on the world's corpus (CPU, fp32)."""

    steps: int = Field(600, ge=1)
    batch_size: int = Field(16, ge=1)
    block_size: int = Field(96, ge=16)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    threads: int = Field(1, ge=1, description="torch CPU threads (fixed for reproducibility; at this model size "
                         "1 thread does about twice the steps per CPU-second of 2)")


class WorldConfig(FrozenStrictModel):
    """The built-in multilingual world. ``WorldConfig()`` is the study's default, ``WorldConfig.tiny()`` for tests."""

    preset: str = "default"
    seed: int = 0
    languages: tuple[str, ...] = LANGUAGES
    n_towns: int = Field(24, ge=3, le=400)
    n_people: int = Field(24, ge=3, le=400)
    max_number: int = Field(40, ge=6, le=999)
    general: SplitSizes = SplitSizes(train=240, val=42, test=54)
    harmful: SplitSizes = SplitSizes(train=168, val=16, test=48)
    benign: SplitSizes = SplitSizes(train=112, val=16, test=24)
    vocab_size: int = Field(3000, ge=300, le=65536)
    model: BaseModelConfig = BaseModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    corpus_repeats: int = Field(2, ge=1, le=50, description="shuffled passes over the fact sentences in the corpus")

    @field_validator("languages", mode="before")
    @classmethod
    def _check_languages(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in value if v not in LANGUAGES]
        if unknown:
            raise ValueError(f"unknown language code(s) {unknown}; choose from {', '.join(LANGUAGES)}")
        if not value:
            raise ValueError("give at least one language")
        if len(set(value)) != len(value):
            raise ValueError("languages must not repeat")
        return tuple(value)

    @field_validator("preset")
    @classmethod
    def _check_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
        return value

    @classmethod
    def tiny(cls, **overrides: Any) -> WorldConfig:
        """A few hundred records and a very small model: builds in seconds (for other parts' tests)."""
        base: dict[str, Any] = dict(
            preset="tiny",
            n_towns=8,
            n_people=8,
            max_number=20,
            general=SplitSizes(train=24, val=6, test=8),
            harmful=SplitSizes(train=16, val=6, test=8),
            benign=SplitSizes(train=8, val=4, test=6),
            vocab_size=600,
            model=BaseModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                                  intermediate_size=64, max_position_embeddings=128),
            pretrain=PretrainConfig(steps=20, batch_size=8, block_size=64, lr=3e-3, warmup_steps=2, threads=1),
            corpus_repeats=1,
        )
        base.update(overrides)
        return cls.make(**base)

    @classmethod
    def make(cls, source: str = "WorldConfig", **values: Any) -> WorldConfig:
        """Validate ``values``; a bad value raises a one-line :class:`ConfigError` naming the key."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise config_error_from_validation(exc, source) from None

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> WorldConfig:
        """``default`` or ``tiny``, with optional overrides (e.g. ``seed``)."""
        if name == "default":
            return cls.make(**overrides)
        if name == "tiny":
            return cls.tiny(**overrides)
        raise ConfigError(f"--preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
