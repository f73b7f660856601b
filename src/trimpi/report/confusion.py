"""Per-answer confusion of a method's accuracy predictions, for datasets whose answers are choices.

Rows are the gold answers, columns what the model answered (an option, "other" for an answer that names no
option, "none" for a reply with no answer in it); it shows at a glance a model that always gives one answer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

NONE, OTHER = "none", "other"


def choice_options(data: Path) -> tuple[str, ...] | None:
    """The options of the test split's choice answers (one shared list), or None for any other answer type."""
    from trimpi.data.answers import answer_type_of
    from trimpi.data.schema import load_records

    path = Path(data) / "test.jsonl"
    if not path.is_file():
        return None
    kinds = {answer_type_of(r) for r in load_records(path)}
    if len(kinds) != 1:
        return None
    kind = next(iter(kinds))
    return tuple(kind.options) if kind.name == "choice" and kind.options else None


def confusion(predictions: Path, options: tuple[str, ...]) -> dict[str, Counter]:
    """{gold option: Counter(predicted option | other | none)} from a predictions_accuracy.jsonl file."""
    from trimpi.data.answers import parse_answer_type, unboxed

    kind = parse_answer_type({"type": "choice", "options": list(options)})
    table: dict[str, Counter] = {o: Counter() for o in options}

    def name(text: str | None) -> str:
        if text is None:
            return NONE
        k = kind.index(unboxed(text))
        return OTHER if k is None else options[k]

    for line in predictions.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            table.setdefault(name(row["gold"]), Counter())[name(row.get("pred"))] += 1
    return table


def confusion_markdown(table: dict[str, Counter], options: tuple[str, ...]) -> str:
    """The confusion as a Markdown table: gold answers down, answers given across, with each row's recall."""
    cols = list(options) + [c for c in (OTHER, NONE) if any(t[c] for t in table.values())]
    lines = ["| gold \\ answered | " + " | ".join(cols) + " | right |", "|" + "---|" * (len(cols) + 2)]
    for gold, counts in table.items():
        total = sum(counts.values())
        if total:
            right = f"{counts[gold]}/{total}"
            lines.append(f"| {gold} | " + " | ".join(str(counts[c]) for c in cols) + f" | {right} |")
    return "\n".join(lines)


def method_confusions(run: dict[str, Any], rows: list[dict[str, Any]], data: Path | None) -> dict[str, str]:
    """{method label: confusion table} for every evaluated method, when the answers are choices."""
    options = choice_options(data) if data else None
    if not options:
        return {}
    store = Path(run["out"]) / run.get("store", ".")
    out = {}
    for r in rows:
        protocol = "in_context" if r["method"] == "in_context" else "accuracy"
        path = store / "steps" / r["eval"] / f"predictions_{protocol}.jsonl"
        if path.is_file():
            out[r["label"]] = confusion_markdown(confusion(path, options), options)
    return out
