"""Result files: predictions_<protocol>.jsonl (one row per example) next to scores.json, written atomically."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from trimpi.data.io import write_json, write_jsonl

SCORES = "scores.json"


def predictions_path(out: Path, protocol: str) -> Path:
    return Path(out) / f"predictions_{protocol}.jsonl"


def write_predictions(out: Path, protocol: str, rows: list[dict[str, Any]]) -> Path:
    path = predictions_path(out, protocol)
    write_jsonl(path, rows)
    return path


def write_scores(out: Path, scores: dict[str, Any]) -> Path:
    path = Path(out) / SCORES
    write_json(path, scores)
    return path


def versions() -> dict[str, str]:
    """Versions of trimpi, Python, torch and transformers, recorded with every result."""
    import torch
    import transformers

    import trimpi

    return {
        "trimpi": trimpi.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
