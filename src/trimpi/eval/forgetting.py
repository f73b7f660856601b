"""Forgetting: accuracy on general questions after internalization vs before.

The baseline comes from a second model evaluated on the same general_test.jsonl, or from the
scores.json of an earlier `trimpi eval` run (its `forgetting` result for the same dataset).

Hook for other general-ability sets: any directory holding a general_test.jsonl of records
with task "general" and a \\boxed{} answer (e.g. an external benchmark converted to the
record schema) is evaluated with `trimpi eval --data DIR --protocols forgetting`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trimpi.data.io import read_json
from trimpi.errors import DataError


def compare(after: float, before: float | None, source: str | None = None) -> dict[str, Any]:
    """Accuracy after, before, their difference (after − before) and the relative change in percent."""
    out: dict[str, Any] = {"baseline_accuracy": before, "delta": None, "relative_change_pct": None,
                           "baseline_source": source}
    if before is not None:
        out["delta"] = after - before
        out["relative_change_pct"] = 100.0 * (after - before) / before if before > 0 else None
    return out


def protocols_of(scores: dict[str, Any], dataset: str) -> dict[str, Any] | None:
    """The protocol results for `dataset` inside a scores.json (single- or multi-dataset form)."""
    if "protocols" in scores and scores.get("dataset") in (dataset, None):
        return scores["protocols"]
    datasets = scores.get("datasets") or {}
    if dataset in datasets:
        return datasets[dataset]
    if len(datasets) == 1 and "protocols" not in scores:
        return next(iter(datasets.values()))
    return scores.get("protocols")


def baseline_from_file(path: str | Path, dataset: str) -> float:
    """The forgetting accuracy recorded for `dataset` in an earlier scores.json."""
    path = Path(path)
    results = protocols_of(read_json(path), dataset) or {}
    value = (results.get("forgetting") or {}).get("accuracy")
    if value is None:
        raise DataError(f"{path}: no 'forgetting' accuracy for dataset '{dataset}'")
    return float(value)
