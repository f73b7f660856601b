"""Reference lines a score is read against: chance, the per-policy majority, and in-context.

chance     answering each test record with a uniformly random case of its policy (ClevrPolicy)
majority   answering each test record with its policy's most frequent training answer
in-context the base model with the policy in its prompt (the run's in_context method)

Chance and majority come from the dataset's files; datasets without per-policy cases (GTAPolicy)
have neither.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from trimpi.data.io import read_json

LABELS = {"chance": "chance (a random case of the policy)", "majority": "always the policy's most frequent case",
          "in_context": "in-context (policy in the prompt)"}


def policy_cases(policy: dict[str, Any]) -> set[str]:
    """The response labels (leaves) of a decision-tree policy: the edge targets that are not nodes."""
    nodes = policy.get("nodes") or {}
    return {n[edge] for n in nodes.values() for edge in ("yes", "no") if edge in n and n[edge] not in nodes}


def _case_test(data: Path):
    """Test records of a ClevrPolicy-style dataset (every answer a case), or None."""
    from trimpi.data.schema import load_records

    if not (data / "train.jsonl").is_file() or not (data / "test.jsonl").is_file():
        return None
    test = load_records(data / "test.jsonl")
    if not test or not all(r.answer.startswith("Case") for r in test):
        return None
    return test


def chance_accuracy(data: Path) -> float | None:
    """Expected accuracy of a uniformly random case of each test record's policy; None without cases."""
    test = _case_test(Path(data))
    if test is None:
        return None
    sizes: dict[str, int] = {}
    for r in test:
        if r.policy_path not in sizes:
            sizes[r.policy_path] = len(policy_cases(read_json(Path(data) / r.policy_path))) or 1
    return sum(1 / sizes[r.policy_path] for r in test) / len(test)


def majority_accuracy(data: Path) -> float | None:
    """Accuracy of answering each test record with its policy's most frequent training answer
    (ClevrPolicy); None for datasets without per-policy cases."""
    from trimpi.data.schema import load_records

    test = _case_test(Path(data))
    if test is None:
        return None
    counts: dict[str, Counter] = {}
    for r in load_records(Path(data) / "train.jsonl"):
        counts.setdefault(r.policy, Counter())[r.answer] += 1
    hits = sum(counts.get(r.policy, Counter({"": 1})).most_common(1)[0][0] == r.answer for r in test)
    return hits / len(test)


def dataset_lines(data: Path | None) -> dict[str, float]:
    """Chance and majority of a dataset directory (those it has)."""
    if data is None or not Path(data).is_dir():
        return {}
    lines = {"chance": chance_accuracy(Path(data)), "majority": majority_accuracy(Path(data))}
    return {k: v for k, v in lines.items() if v is not None}


def reference_lines(run: dict[str, Any]) -> dict[str, float]:
    """A loaded run's reference lines: chance and majority of its dataset, and its in-context score."""
    data = ((run["done"].get(run.get("data")) or {}).get("result") or {}).get("dataset")
    lines = dataset_lines(Path(data) if data else None)
    info = run["methods"].get("in_context")
    if info:
        protocol = ((run["done"].get(info["eval"]) or {}).get("result") or {}).get("protocols", {}).get("in_context")
        if protocol and protocol.get("score") is not None:
            lines["in_context"] = protocol["score"]
    return lines
