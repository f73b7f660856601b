"""Reference lines a score is read against: chance, the per-policy majority, and in-context.

chance     answering each test record with a uniformly random case of its policy (ClevrPolicy) or a
           uniformly random option (answer type "choice")
majority   answering each test record with its policy's most frequent training answer, scored by the
           record's own answer type (so it is what a model that ignored the query would score)
in-context the base model with the policy in its prompt (the run's in_context method)

Chance and majority come from the dataset's files and need discrete answers (answer types clevr, exact,
choice, numeric); datasets of tool calls or judged replies (GTAPolicy) have neither, and majority needs a
training split with answers too.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trimpi.data.io import read_json

LABELS = {"chance": "chance (a random answer of the policy)", "majority": "always the policy's most frequent answer",
          "in_context": "in-context (policy in the prompt)"}
DISCRETE = ("clevr", "exact", "choice", "numeric")  # answer types a fixed answer can be scored under


def policy_cases(policy: dict[str, Any]) -> set[str]:
    """The response labels (leaves) of a decision-tree policy: the edge targets that are not nodes."""
    nodes = policy.get("nodes") or {}
    return {n[edge] for n in nodes.values() for edge in ("yes", "no") if edge in n and n[edge] not in nodes}


def _discrete(data: Path, split: str):
    """The split's records when every one has a discrete answer type (and there is at least one), else None."""
    from trimpi.data.answers import answer_type_of
    from trimpi.data.schema import load_records

    path = data / f"{split}.jsonl"
    if not path.is_file():
        return None
    records = load_records(path)
    if not records or not all(answer_type_of(r).name in DISCRETE for r in records):
        return None
    return records


def record_chance(record: Any, case_count: Callable[[str], int]) -> float | None:
    """The chance of a uniformly random answer being right: 1 / cases of a ClevrPolicy tree (`case_count` of
    its policy path), 1 / options of a choice question; None when the answers are not a known finite set."""
    from trimpi.data.answers import answer_type_of

    kind = answer_type_of(record)
    if kind.name == "clevr" and record.policy_path:
        return 1 / case_count(record.policy_path)
    if kind.name == "choice" and kind.options:
        return 1 / len(kind.options)
    return None


def chance_accuracy(data: Path) -> float | None:
    """Expected accuracy of a uniformly random answer to each test record; None unless every record has a
    finite answer set."""
    test = _discrete(Path(data), "test")
    if test is None:
        return None

    @functools.cache
    def case_count(policy_path: str) -> int:  # each policy file read once
        return len(policy_cases(read_json(Path(data) / policy_path))) or 1

    chances = [record_chance(r, case_count) for r in test]
    return None if None in chances else sum(chances) / len(chances)


def majority_answers(data: Path) -> dict[str | None, str]:
    """Each policy's most frequent training answer (what the majority line always answers); {} without one."""
    from trimpi.data.answers import unboxed

    train = _discrete(Path(data), "train")
    counts: dict[str | None, Counter] = {}
    for r in train or []:
        counts.setdefault(r.policy, Counter())[unboxed(r.answer)] += 1
    return {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for p, c in counts.items()}


def test_size(data: Path | None) -> int | None:
    """Records in the dataset's test split (the n of its reference lines)."""
    path = Path(data) / "test.jsonl" if data else None
    if path is None or not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def majority_accuracy(data: Path) -> float | None:
    """Accuracy of answering each test record with its policy's most frequent training answer, scored by
    the record's answer type; None without discrete answers or a training split."""
    from trimpi.data.answers import answer_type_of, unboxed

    test, train = _discrete(Path(data), "test"), _discrete(Path(data), "train")
    if test is None or train is None:
        return None
    always = majority_answers(data)
    hits = sum(answer_type_of(r).match(always[r.policy], unboxed(r.answer)) for r in test if r.policy in always)
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
