"""The ClevrPolicy build configuration: typed, validated, one-line errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trimpi.errors import ConfigError

DEPTHS = (2, 4, 6)


class ClevrConfig(BaseModel):
    """Every option of `trimpi data clevr`; defaults follow the paper's sizes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depths: list[int] = Field(default=[2], description="tree depths N, each one setting")
    variant: Literal["T", "M"] = Field("T", description="T: text-only policies; M: with attribute crops")
    policies: int = Field(10, ge=1, le=1000, description="policies per depth")
    train_per_policy: int = Field(2000, ge=1, description="training QA pairs per policy (one per pool image)")
    test: int = Field(2000, ge=1, description="test instances per setting, on unseen images")
    cot: int = Field(2500, ge=0, description="reasoning (CoT) examples per setting, drawn from train")
    trace: Literal["full", "compact"] = Field(
        "full", description="gold traces: full (object list, witnesses) or compact (conditions and outcomes only)")
    general: int = Field(500, ge=0, description="general scene questions (forgetting probe)")
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

    @model_validator(mode="after")
    def _consistent(self) -> ClevrConfig:
        bad = [d for d in self.depths if d not in DEPTHS]
        if bad or not self.depths:
            raise ValueError(f"depths: each must be one of {DEPTHS}, got {self.depths}")
        if len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths: repeated value in {self.depths}")
        if self.cot > self.policies * self.train_per_policy:
            raise ValueError(
                f"cot: {self.cot} reasoning examples asked but only "
                f"{self.policies * self.train_per_policy} training records exist"
            )
        if self.general > self.test:
            raise ValueError(f"general: at most one question per test image ({self.test}), got {self.general}")
        if self.min_objects > self.max_objects:
            raise ValueError("min_objects: must not exceed max_objects")
        return self

    @classmethod
    def checked(cls, **values) -> ClevrConfig:
        """Build a config, turning validation failures into a one-line ConfigError."""
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if not field:  # a cross-field check names its field itself
                raise ConfigError(msg) from None
            raise ConfigError(f"{field}: {msg} (got {err.get('input')!r})") from None
