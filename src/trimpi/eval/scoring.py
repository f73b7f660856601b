"""Per-example scoring and summaries.

- ClevrPolicy (task "clevr"): exact match of the last \\boxed{} answer after the reasoning.
- General questions (task "general" and any other boxed task): \\boxed{} match after
  normalization (case, whitespace, a trailing period).
- GTAPolicy (task "gta"): tool / argument / overall of `trimpi.data.gta.metrics`, with the
  text-similarity scorer named in the summary.

Each per-example result has a `score` in [0, 1] (correctness, or the GTA overall score);
summaries give the mean `score` and the task's own metrics.
"""

from __future__ import annotations

import json
from typing import Any

from trimpi.data.gta.metrics import parse_tool_call, score_many, score_tool_call
from trimpi.data.gta.scorers import TextScorer
from trimpi.data.schema import Record
from trimpi.train.rl.rewards import after_think, extract_boxed, format_reward


def normalize_answer(text: str) -> str:
    """Lowercase, single spaces, no surrounding whitespace or trailing period."""
    return " ".join(str(text).split()).lower().rstrip(".").strip()


def gold_answer(record: Record) -> str:
    """The record's answer without a \\boxed{} wrapper."""
    boxed = extract_boxed(record.answer)
    return boxed if boxed is not None else record.answer


def boxed_prediction(text: str) -> str | None:
    """The content of the last \\boxed{} after the reasoning, or None."""
    return extract_boxed(after_think(text or ""))


def score_boxed(record: Record, text: str) -> dict[str, Any]:
    """{"pred", "correct", "score"}: exact for task "clevr", normalized for the others."""
    pred = boxed_prediction(text)
    gold = gold_answer(record)
    if pred is None:
        correct = False
    elif record.task == "clevr":
        correct = pred.strip() == gold.strip()
    else:
        correct = normalize_answer(pred) == normalize_answer(gold)
    return {"pred": pred, "correct": correct, "score": float(correct)}


def score_gta(record: Record, text: str, scorer: TextScorer) -> dict[str, Any]:
    """{"pred", "tool", "argument", "overall", "score"} of the predicted tool call."""
    parts = score_tool_call(text or "", record.answer, scorer)
    call = parse_tool_call(text or "")
    return {"pred": json.dumps(call, sort_keys=True) if call else None, **parts, "score": parts["overall"]}


def score_example(record: Record, text: str, scorer: TextScorer) -> dict[str, Any]:
    """Score one completion by the record's task; `format` is 1 for <think>…</think> then the answer."""
    scores = score_gta(record, text, scorer) if record.task == "gta" else score_boxed(record, text)
    return {**scores, "format": format_reward([text or ""], [record])[0]}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(rows: list[dict[str, Any]], scorer: TextScorer) -> dict[str, Any]:
    """Mean score over prediction rows, with per-task metrics under `by_task`.

    Rows need "task", "score", and for task "gta" "completion" and "gold"; "format" and
    "truncated" give the share of well-formed and of length-cut completions.
    """
    by_task: dict[str, dict[str, Any]] = {}
    for task in sorted({r["task"] for r in rows}):
        sub = [r for r in rows if r["task"] == task]
        if task == "gta":
            by_task[task] = score_many([r["completion"] for r in sub], [r["gold"] for r in sub], scorer)
        else:
            by_task[task] = {"n": len(sub), "accuracy": _mean([r["score"] for r in sub])}
    summary: dict[str, Any] = {
        "n": len(rows),
        "score": _mean([r["score"] for r in rows]),
        "format_rate": _mean([float(r.get("format", 0.0)) for r in rows]),
        "truncated_rate": _mean([float(r.get("truncated", False)) for r in rows]),
        "by_task": by_task,
    }
    if len(by_task) == 1:
        only = next(iter(by_task.values()))
        summary.update({k: v for k, v in only.items() if k != "n"})
    return summary
