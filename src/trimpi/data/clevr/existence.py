"""Existence labels read from scene graphs, and their balanced accuracy (pure functions).

A label is one attribute value ("a cyan object") or a pair of values of two attribute types
("a cyan cube"); its truth for a scene is whether some object matches. Policy conditions are
such conjunctions, so these are what perception must get right. Used by vision pre-training
(`trimpi.train.perception`), the pretraining corpus and the `perception` evaluation protocol.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from trimpi.data.clevr.tree import ATTRIBUTE_VALUES, exists

Label = tuple[tuple[str, str], ...]


def existence_labels() -> list[Label]:
    """Every single attribute value, then every pair of values of two different attribute types."""
    values = ATTRIBUTE_VALUES
    singles = [((a, v),) for a in values for v in values[a]]
    pairs = [((a, v), (b, w)) for a, b in itertools.combinations(values, 2) for v in values[a] for w in values[b]]
    return singles + pairs


def label_name(label: Label) -> str:
    """"color=cyan" or "color=cyan,shape=cube"."""
    return ",".join(f"{a}={v}" for a, v in label)


def existence_targets(objects: Sequence[dict], labels: Sequence[Label]) -> list[float]:
    """1.0 for each label some object matches (all of its attribute values), else 0.0."""
    return [float(exists(objects, dict(label))) for label in labels]


def label_balanced_accuracies(pred: Sequence[Sequence[bool]], truth: Sequence[Sequence[bool]]) -> list[float]:
    """Per label (column): (true-positive rate + true-negative rate) / 2; NaN for a label whose
    truth has only one class. pred, truth: [n_images][n_labels]. Chance is 0.5 whatever the
    label frequencies, unlike plain accuracy."""
    out = []
    for k in range(len(truth[0]) if truth else 0):
        col = [(bool(p[k]), bool(t[k])) for p, t in zip(pred, truth, strict=True)]
        pos = [p for p, t in col if t]
        neg = [p for p, t in col if not t]
        out.append((sum(pos) / len(pos) + sum(not p for p in neg) / len(neg)) / 2 if pos and neg else math.nan)
    return out


def mean_defined(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan
