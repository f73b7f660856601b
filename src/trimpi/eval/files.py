"""Result files: predictions_<protocol>.jsonl (one row per example) next to scores.json, written atomically.

scores.json of one dataset:

    {"dataset": "T-d2", "data": "<dir>", "model": "<name>", "options": {...EvalOptions},
     "scorer": "lexical-f1", "judge": null, "versions": {...}, "dtype": ..., "device": ...,
     "protocols": {
       "accuracy":   {"file": "test.jsonl", "policy_in_prompt": false, "n": 200, "score": 0.81,
                      "accuracy": 0.81, "by_task": {...}, "predictions": "predictions_accuracy.jsonl",
                      "seconds": 12.3},
       "override":   {... GTAPolicy: "tool", "argument", "overall", "scorer", "per_tool" ...},
       "referral":   {"method": "exact", "exact", "partial", "precision", "recall", "cites_any", ...}
                     or {"method": "judge", "judge", "judge_prompt", "mean" (0-10), "score" (0-1), "unparsed", ...},
       "forgetting": {"accuracy", "baseline_accuracy", "delta", "relative_change_pct", "baseline_source", ...},
       "efficiency": {"tokens_with_policy", "tokens_without_policy", "token_savings_pct",
                      "prefill_s_with_policy", "prefill_s_without_policy", "prefill_savings_pct",
                      "prefill_n", "prefill_repeats", "device", ...},
       "<name>":     {"skipped": "<reason>"}   (with --protocols all)
     }}

Every summary has "score" in [0, 1] (accuracy, GTA overall, exact referral, judge mean / 10,
token savings / 100). With several datasets, out/scores.json holds the run's metadata and
"datasets": {name: protocols}, and each dataset has its own sub-directory.
"""

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
