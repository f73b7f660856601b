"""The ClevrPolicy build configuration: typed, validated, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trimpi.errors import ConfigError

DEPTHS = (2, 4, 6)
COT, GENERAL = 2500, 500  # the paper's sizes; smaller when the training set or the test split is


class FieldError(ValueError):
    """A cross-field check that failed, naming the field to blame (the caller decides how to spell it)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ClevrConfig(BaseModel):
    """Every option of `trimpi data clevr`; defaults follow the paper's sizes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depths: list[int] = Field(default=[2], description="tree depths N, each one setting")
    variant: Literal["T", "M"] = Field("T", description="T: text-only policies; M: with attribute crops")
    policies: int = Field(10, ge=1, le=1000, description="policies per depth")
    train_per_policy: int = Field(2000, ge=1, description="training QA pairs per policy (one per pool image)")
    test: int = Field(2000, ge=1, description="test instances per setting, on unseen images")
    cot: int = Field(COT, ge=0, description="reasoning (CoT) examples per setting, drawn from train "
                     f"(default {COT}, or all training records if fewer)")
    trace: Literal["full", "compact"] = Field(
        "full", description="gold traces: full (object list, witnesses) or compact (conditions and outcomes only)")
    general: int = Field(GENERAL, ge=0, description="general scene questions, one per test image (forgetting "
                         f"probe; default {GENERAL}, or one per test image if fewer)")
    width: int = Field(320, ge=16, le=4096)
    height: int = Field(240, ge=16, le=4096)
    renderer: Literal["numpy", "blender"] = "numpy"
    blender_python: str | None = Field(None, description="interpreter with bpy for renderer=blender")
    clevr_dir: str | None = Field(None, description="CLEVR v1.0 release used instead of rendering")
    min_objects: int = Field(3, ge=1, le=10)
    max_objects: int = Field(10, ge=1, le=10)
    crop_size: int = Field(64, ge=16, le=512, description="side of the variant-M attribute crops")
    seed: int = 0
    workers: int = Field(2, ge=1, le=256)

    @model_validator(mode="before")
    @classmethod
    def _adaptive_defaults(cls, values: Any) -> Any:
        """Defaults that would contradict another option shrink to fit it (given values are kept)."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if values.get("general") is None:
            test = values.get("test", cls.model_fields["test"].default)
            values["general"] = min(GENERAL, test) if isinstance(test, int) else GENERAL
        if values.get("cot") is None:
            n = values.get("policies", cls.model_fields["policies"].default)
            m = values.get("train_per_policy", cls.model_fields["train_per_policy"].default)
            values["cot"] = min(COT, n * m) if isinstance(n, int) and isinstance(m, int) else COT
        return values

    @model_validator(mode="after")
    def _consistent(self) -> ClevrConfig:
        bad = [d for d in self.depths if d not in DEPTHS]
        if bad or not self.depths:
            raise FieldError("depths", f"each must be one of {DEPTHS}, got {self.depths}")
        if len(set(self.depths)) != len(self.depths):
            raise FieldError("depths", f"repeated value in {self.depths}")
        if self.cot > self.policies * self.train_per_policy:
            raise FieldError("cot", f"{self.cot} reasoning examples asked but only "
                                    f"{self.policies * self.train_per_policy} training records exist")
        if self.general > self.test:
            raise FieldError("general", f"at most one question per test image ({self.test}), got {self.general}")
        if self.min_objects > self.max_objects:
            raise FieldError("min_objects", "must not exceed max_objects")
        return self

    @classmethod
    def checked(cls, name: Callable[[str], str] = str, **values) -> ClevrConfig:
        """Build a config, turning validation failures into a one-line ConfigError.

        `name(field)` spells a field the way the user wrote it: a CLI flag, a recipe key."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(describe(e, name)) from None


def describe(e: ValidationError, name: Callable[[str], str] = str) -> str:
    """The first problem of a ClevrConfig validation error as one line starting with the field's name."""
    err = e.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return f"{name(cause.field)}: {cause}"
    field = str(err["loc"][0]) if err["loc"] else ""
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{name(field)}: unknown option"
    return f"{name(field)}: {msg} (got {err.get('input')!r})"
