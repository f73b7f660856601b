"""Per-example scoring and summaries.

Every completion is scored by `trimpi.data.answers.score_answer` — the very function the RL
accuracy reward returns — by the record's answer type: ClevrPolicy (task "clevr") exact match of
the last \\boxed{} after the reasoning; general questions \\boxed{} match after normalization
(case, whitespace, a trailing period); GTAPolicy (task "gta") tool / argument / overall of
`trimpi.data.gta.metrics`, with the text-similarity scorer named in the summary; and the other
declared types (choice, numeric, judge, module:function).

Each per-example result has a `score` in [0, 1] (correctness, or the GTA overall score);
summaries give the mean `score` and the task's own metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trimpi.data.answers import Judge, Scoring, format_ok, needs_judge, score_answer
from trimpi.data.gta.metrics import score_many
from trimpi.data.gta.scorers import TextScorer
from trimpi.data.schema import Record, load_records
from trimpi.errors import ConfigError
from trimpi.eval.protocols import JUDGE_FLAG, PROTOCOLS

NOT_ANSWER_SCORED = ("referral", "efficiency")  # protocols that do not score answers by their answer type


def score_example(record: Record, text: str, scorer: TextScorer | str, judge: Judge | None = None) -> dict[str, Any]:
    """{"pred", "correct", "score", "format", ...the type's details (GTA "tool", "argument", "overall")}."""
    scored = score_answer(text or "", record, Scoring(scorer, judge))
    return {"pred": scored.pred, "correct": scored.correct, "score": scored.score, **scored.details,
            "format": float(format_ok(text or "", record))}


def check_judge(dataset: Path, protocols: Iterable[str], judge: bool, limit: int | None = None,
                ask: str = JUDGE_FLAG) -> None:
    """Fail before generating when a file the protocols score holds records of answer type 'judge' and no
    judge is given (their scores would fail only after everything was generated)."""
    if judge:
        return
    splits = sorted({PROTOCOLS[p].split for p in protocols if p in PROTOCOLS and p not in NOT_ANSWER_SCORED})
    for split in splits:
        check_unjudged(Path(dataset) / f"{split}.jsonl", limit, ask)


def check_unjudged(path: Path, limit: int | None = None, ask: str = JUDGE_FLAG) -> None:
    """Raise a one-line ConfigError when (the first `limit` records of) `path` hold records of answer type
    'judge', which the caller has no judge for; `ask`: how the message asks for one."""
    if Path(path).is_file() and needs_judge(load_records(path)[:limit]):
        raise ConfigError(f"{path}: records with answer type 'judge' need {ask} (an OpenAI-compatible URL "
                          "or a local model)")


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
