"""One scorer per answer type, shared by RL rewards, evaluation and the teacher filter.

    from trimpi.data.answers import Scoring, format_ok, score_answer
    scored = score_answer(completion, record)        # Scored(score in [0, 1], pred, details)
    score_answer(completion, record, Scoring("lexical", judge=my_judge))
    format_ok(completion, record)                     # <think>…</think> then an answer of the record's type

The reward's accuracy term *is* `score_answer(...).score` and the evaluation's per-example score
is the same number, so training optimises the metric the report shows. A record's answer type
is its `answer_type` field, or its task's default (clevr → clevr, gta → tool_call, else exact);
see `types` for the types and their options.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from trimpi.data.answers.extract import (
    THINK_CLOSE,
    THINK_OPEN,
    after_think,
    extract_boxed,
    has_reasoning,
    parse_tool_call,
    unboxed,
)
from trimpi.data.answers.types import (
    ANSWER_TYPES,
    DEFAULT_TEXT_SCORER,
    AnswerType,
    CustomAnswer,
    Judge,
    Scored,
    Scoring,
    load_function,
    parse_answer_type,
)

__all__ = [
    "ANSWER_TYPES", "DEFAULT_TEXT_SCORER", "THINK_CLOSE", "THINK_OPEN", "AnswerType", "CustomAnswer", "Judge", "Scored",
    "Scoring", "after_think", "answer_type_of", "check_custom_code", "extract_boxed", "format_ok", "has_reasoning",
    "load_function", "needs_judge", "parse_answer_type", "parse_tool_call", "score_answer", "unboxed",
]


@functools.lru_cache(maxsize=256)
def _cached(key: str, task: str) -> AnswerType:
    return parse_answer_type(json.loads(key), task)


def answer_type_of(record: Any) -> AnswerType:
    """The record's answer type (declared, or its task's default); parsed once per distinct spec."""
    return _cached(json.dumps(getattr(record, "answer_type", None), sort_keys=True), record.task)


def score_answer(text: str, record: Any, scoring: Scoring | None = None) -> Scored:
    """Score one completion against the record's gold answer by the record's answer type."""
    return answer_type_of(record).score(text or "", record, scoring or Scoring())


def format_ok(text: str, record: Any) -> bool:
    """The expected shape: a non-empty <think>…</think> block, then an answer of the record's type after it."""
    text = text or ""
    return has_reasoning(text) and answer_type_of(record).extract(text) is not None


def needs_judge(records: list[Any]) -> bool:
    """True when some record is scored by a judge (so the caller must wire one in)."""
    return any(answer_type_of(r).name == "judge" for r in records)


def check_custom_code(records: list[Any], where: str) -> None:
    """Refuse, before any model loads, records whose answer type names Python code the user did not
    trust (`trimpi.trust`); the error names the first such record and what to pass."""
    from trimpi.trust import require_trusted

    for r in records:
        kind = answer_type_of(r)
        if isinstance(kind, CustomAnswer):
            require_trusted(kind.spec, f"{where}: record {r.id}: field 'answer_type':")
