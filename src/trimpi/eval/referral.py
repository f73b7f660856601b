"""Policy referral for ClevrPolicy, scored exactly against the decision-tree path.

A response's citations are the (condition id, claimed outcome) pairs read by
`trimpi.data.clevr.cot.cited_conditions` ("Condition 1.2: ... Yes"). The reference is the
path `trimpi.data.clevr.tree.trace` walks on the scene graph. Per response:

- exact:     1 when the citations equal the path (same ids, same outcomes, same order)
- precision: matched / cited,  recall: matched / path length  (matched counts pairs, as multisets)
- partial:   F1 of precision and recall (0 when nothing matches)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from trimpi.data.clevr.cot import cited_conditions
from trimpi.data.clevr.tree import trace
from trimpi.data.io import read_json
from trimpi.data.schema import PolicyStore, Record
from trimpi.errors import DataError

Path_ = list[tuple[str, bool]]


def tree_path(record: Record, root: Path, store: PolicyStore) -> Path_:
    """The (condition id, outcome) pairs the record's policy tree visits on its scene."""
    policy = store.get(record).raw
    if "nodes" not in policy or "root" not in policy:
        raise DataError(f"{record.policy_path}: not a ClevrPolicy tree (no 'root'/'nodes') for exact referral")
    if not record.scene:
        raise DataError(f"record {record.id}: no 'scene' to trace the policy on")
    objects = read_json(Path(root) / record.scene)["objects"]
    return trace(policy, objects)[0]


def referral_match(cited: Path_, path: Path_) -> dict[str, float]:
    """exact / precision / recall / partial (F1) of cited pairs against the tree path."""
    matched = sum((Counter(cited) & Counter(path)).values())
    precision = matched / len(cited) if cited else 0.0
    recall = matched / len(path) if path else 0.0
    partial = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"exact": float(cited == path), "precision": precision, "recall": recall, "partial": partial}


def score_referral(record: Record, text: str, root: Path, store: PolicyStore) -> dict[str, Any]:
    """One response's citations, the tree path and their match."""
    cited = cited_conditions(text)
    path = tree_path(record, root, store)
    return {
        "cited": [[c, o] for c, o in cited],
        "path": [[c, o] for c, o in path],
        **referral_match(cited, path),
    }


def summarize_referral(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of exact / partial / precision / recall, and the share of responses citing anything."""
    n = len(rows)

    def mean(key: str) -> float:
        return sum(float(r[key]) for r in rows) / n if n else 0.0

    return {
        "method": "exact",
        "n": n,
        "score": mean("exact"),
        "exact": mean("exact"),
        "partial": mean("partial"),
        "precision": mean("precision"),
        "recall": mean("recall"),
        "cites_any": sum(1 for r in rows if r["cited"]) / n if n else 0.0,
    }
