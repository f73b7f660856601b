"""The `perception` protocol: does the model see the attribute values that policy conditions ask about?

For every distinct test image with a scene graph and every existence label (each single
attribute value, each pair of values of two attribute types; `data.clevr.existence`), the
model is asked "Is there a cyan cube?" and answers yes when the first token of "Yes." is more
likely than the first token of "No." as the start of its reply (one forward pass, no sampling).
The truth comes from the scene graph. Reported per label: balanced accuracy (mean of the
true-positive and true-negative rates, chance 0.5 whatever the label's frequency); summarized
as the mean and the minimum over single values and over value pairs. Works on any ClevrPolicy
directory, including one built from a CLEVR v1.0 release with `--clevr-dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trimpi.data.clevr.existence import (
    Label,
    existence_labels,
    existence_targets,
    label_balanced_accuracies,
    label_name,
    mean_defined,
)
from trimpi.data.io import read_json
from trimpi.errors import ConfigError, DataError
from trimpi.generation.yesno import question, says_yes, yes_margins  # noqa: F401 - re-exported

TARGETS = {"single": 0.97, "pair": 0.93}  # the shipped base's goals (see benchmarks/RESULTS.md)


def scene_images(dataset: Path, records) -> list[tuple[str, list[dict]]]:
    """(absolute image path, scene-graph objects) of each distinct single-image record with a scene."""
    seen, out = set(), []
    for r in records:
        if not r.scene or len(r.images) != 1 or r.images[0] in seen:
            continue
        seen.add(r.images[0])
        out.append((str(dataset / r.images[0]), read_json(dataset / r.scene)["objects"]))
    if not out:
        raise DataError(f"{dataset / 'test.jsonl'}: no single-image record with a scene graph (perception needs one)")
    return out


def perception_scores(predicted: list[list[bool]], objects: list[list[dict]],
                      labels: list[Label]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-label rows and the summary, from predictions [n_images][n_labels] and the scene graphs."""
    truth = [[t > 0.5 for t in existence_targets(o, labels)] for o in objects]
    accs = label_balanced_accuracies(predicted, truth)
    rows = []
    for k, (label, acc) in enumerate(zip(labels, accs, strict=True)):
        positives = sum(t[k] for t in truth)
        rows.append({"label": label_name(label), "kind": "single" if len(label) == 1 else "pair",
                     "positives": positives, "negatives": len(truth) - positives,
                     "balanced_accuracy": None if acc != acc else round(acc, 4)})
    summary: dict[str, Any] = {"images": len(objects), "labels": len(labels)}
    for kind in ("single", "pair"):
        vals = [r["balanced_accuracy"] for r in rows if r["kind"] == kind and r["balanced_accuracy"] is not None]
        summary[f"{kind}_balanced_accuracy"] = round(mean_defined(vals), 4) if vals else None
        summary[f"{kind}_min"] = min(vals) if vals else None
        summary[f"{kind}_scored_labels"] = len(vals)
        summary[f"{kind}_target"] = TARGETS[kind]
        summary[f"{kind}_below_target"] = sum(v < TARGETS[kind] for v in vals)
    if summary["single_balanced_accuracy"] is None and summary["pair_balanced_accuracy"] is None:
        raise DataError(f"perception: no attribute value is both present and absent among the {len(objects)} test "
                        "images; evaluate more test scenes")
    summary["per_value"] = {r["label"]: r["balanced_accuracy"] for r in rows if r["kind"] == "single"}
    single = summary["single_balanced_accuracy"]
    summary["score"] = single if single is not None else summary["pair_balanced_accuracy"]
    return rows, summary


def run_perception(model, processor, dataset: Path, records, batch_size: int = 32,
                   progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The protocol on a dataset's test records: per-label rows and the summary."""
    if model is None:
        raise ConfigError("perception needs the model's scores (an in-process model, not a generation-only engine)")
    images = scene_images(Path(dataset), records)
    labels = existence_labels()
    qs = [(img, question(label)) for img, _ in images for label in labels]
    flat = says_yes(model, processor, qs, batch_size, progress)
    predicted = [flat[i * len(labels):(i + 1) * len(labels)] for i in range(len(images))]
    return perception_scores(predicted, [o for _, o in images], labels)
