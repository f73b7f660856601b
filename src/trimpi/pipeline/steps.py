"""Content-addressed steps: a step's key is a hash of (kind, config, its inputs' keys).

A step lives in OUT/steps/<kind>-<hash>/ and is finished when its `done.json` exists; that
marker is written atomically, last. A directory without it is an interrupted step.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.io import read_json, write_json

DONE = "done.json"


def content_hash(kind: str, config: dict[str, Any], inputs: list[str]) -> str:
    """12 hex digits of sha256 over the canonical JSON of (kind, config, input hashes)."""
    blob = json.dumps({"kind": kind, "config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Step:
    """One unit of work: build data, make a base model, train a stage, or evaluate a model."""

    kind: str  # data | base | warmup | cpt | sft | rl | eval
    config: dict[str, Any]
    inputs: list[Step] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # methods this step serves (for the plan)

    @property
    def hash(self) -> str:
        return content_hash(self.kind, self.config, [s.hash for s in self.inputs])

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.hash}"

    def dir(self, out: Path) -> Path:
        return Path(out) / "steps" / self.id


MODEL_KINDS = ("base", "warmup", "cpt", "sft", "rl")


def status(step: Step, out: Path) -> str:
    """done, partial (directory without done.json) or todo."""
    d = step.dir(out)
    if (d / DONE).is_file():
        return "done"
    return "partial" if d.exists() else "todo"


def read_done(step: Step, out: Path) -> dict[str, Any]:
    return read_json(step.dir(out) / DONE)


def mark_done(step: Step, out: Path, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Write done.json (atomically, last): the step's identity, its result and its wall time."""
    record = {"id": step.id, "kind": step.kind, "hash": step.hash, "config": step.config,
              "inputs": [s.id for s in step.inputs], "result": finite(result), "seconds": round(seconds, 3)}
    write_json(step.dir(out) / DONE, record)
    return record


def finite(value: Any) -> Any:
    """`value` with NaN / infinite floats replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def clear_partial(step: Step, out: Path) -> None:
    """Remove an interrupted step's directory (steps that cannot resume restart from nothing)."""
    shutil.rmtree(step.dir(out), ignore_errors=True)
