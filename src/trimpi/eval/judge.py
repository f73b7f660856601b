"""LLM judges: policy referral (0–10) for policies without an exact reference path, and the
judge of free-form answers (answer type "judge", `AnswerJudge`).

The referral judge sees the policy text, the query, the correct answer and the response, and
rates how correctly the response refers to and applies the policy. Its reply must end with
"Score: N"; replies without a readable score in [0, 10] are counted as unparsed and left out
of the mean.
"""

from __future__ import annotations

import re
from typing import Any

from trimpi.data.schema import IMAGE_MARKER, Policy, PolicyStore, Record
from trimpi.eval.client import ChatClient

JUDGE_TEMPLATE = """You are grading whether an assistant's response refers to a policy correctly.

### Policy
{policy}

### User query
{query}

### Correct answer
{answer}

### Assistant response
{response}

Rate from 0 to 10 how correctly the response refers to the policy: 10 means it names exactly \
the policy rules that apply to this query and applies them correctly; 0 means it cites no rule \
or only wrong ones. Reply with a one-sentence justification, then a last line "Score: N"."""

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])")


def judge_messages(policy: Policy, record: Record, response: str) -> list[dict[str, Any]]:
    """A one-turn, text-only conversation asking the judge for a 0–10 rating."""
    text = JUDGE_TEMPLATE.format(policy=policy.text, query=record.query, answer=record.answer, response=response)
    text = text.replace(IMAGE_MARKER, "[image]")  # the judge sees no images: a bare marker would ask for one
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def parse_score(reply: str) -> float | None:
    """The rating in [0, 10]: the last "Score: N", else the last number of the last line; else None."""
    found = _SCORE.findall(reply or "")
    if not found:
        lines = [line for line in (reply or "").strip().splitlines() if line.strip()]
        found = _NUMBER.findall(lines[-1]) if lines else []
    if not found:
        return None
    value = float(found[-1])
    return value if 0.0 <= value <= 10.0 else None


def judge_rows(
    client: ChatClient, items: list[tuple[Record, Policy, str]], max_tokens: int = 256
) -> list[dict[str, Any]]:
    """Ask the judge about each (record, policy, response); one row per item with the reply and score."""
    replies = client.complete([judge_messages(p, r, text) for r, p, text in items], max_tokens=max_tokens)
    return [
        {"judge_reply": reply, "judge_score": parse_score(reply)}
        for reply in replies
    ]


def summarize_judge(rows: list[dict[str, Any]], judge: str) -> dict[str, Any]:
    """Mean rating (0–10) over parsed replies, its 0–1 `score`, and how many replies were unreadable."""
    values = [r["judge_score"] for r in rows if r["judge_score"] is not None]
    mean = sum(values) / len(values) if values else 0.0
    return {
        "method": "judge",
        "judge": judge,
        "n": len(rows),
        "scale": 10,
        "mean": mean,
        "score": mean / 10,
        "unparsed": len(rows) - len(values),
    }


ANSWER_TEMPLATE = """You are grading an assistant's free-form answer under a policy.

### Policy
{policy}

### User query
{query}

### Reference answer
{answer}

### Rubric
{rubric}

### Assistant response
{response}

Rate from 0 to 10 how well the response answers the query as the policy requires, following the \
rubric: 10 means fully correct and compliant; 0 means wrong or non-compliant. Reply with a \
one-sentence justification, then a last line "Score: N"."""
DEFAULT_RUBRIC = "Judge correctness against the reference answer and compliance with the policy."


class AnswerJudge:
    """The judge of answer type "judge" (`trimpi.data.answers.Judge`): a chat model rates a reply
    0–10, given the record's policy (when it has one), the reference answer and the rubric; the
    score is the rating / 10, or None when the reply holds no readable rating."""

    prompt = ANSWER_TEMPLATE

    def __init__(self, client: ChatClient, store: PolicyStore | None = None, max_tokens: int = 256):
        self.client, self.store, self.max_tokens = client, store, max_tokens
        self.name = client.name

    def messages(self, record: Record, response: str, rubric: str | None) -> list[dict[str, Any]]:
        policy = self.store.get(record).text if self.store is not None and record.policy_path else "(none)"
        text = ANSWER_TEMPLATE.format(policy=policy, query=record.query, answer=record.answer,
                                      rubric=rubric or DEFAULT_RUBRIC, response=response)
        return [{"role": "user", "content": [{"type": "text", "text": text}]}]

    def __call__(self, record: Record, response: str, rubric: str | None) -> tuple[float | None, str]:
        reply = self.client.complete([self.messages(record, response, rubric)], max_tokens=self.max_tokens)[0]
        rating = parse_score(reply)
        return (None if rating is None else rating / 10, reply)
