"""The LLM judge of policy referral (0–10), for policies without an exact reference path.

(The judge of free-form answers, answer type "judge", is `trimpi.generation.judge.AnswerJudge`:
RL rewards use it too.)

The referral judge sees the policy text, the query, the correct answer and the response, and
rates how correctly the response refers to and applies the policy. Its reply must end with
"Score: N"; replies without a readable score in [0, 10] are counted as unparsed and left out
of the mean.
"""

from __future__ import annotations

from typing import Any

from trimpi.data.schema import Policy, Record
from trimpi.generation.client import ChatClient
from trimpi.generation.judge import parse_score, text_only

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


def judge_messages(policy: Policy, record: Record, response: str) -> list[dict[str, Any]]:
    """A one-turn, text-only conversation asking the judge for a 0–10 rating."""
    text = JUDGE_TEMPLATE.format(policy=policy.text, query=record.query, answer=record.answer, response=response)
    text = text_only(text)
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


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
    """Mean rating (0–10) over parsed replies, its 0–1 `score`, how many replies were unreadable, and the
    judge and prompt template that gave them."""
    values = [r["judge_score"] for r in rows if r["judge_score"] is not None]
    mean = sum(values) / len(values) if values else 0.0
    return {
        "method": "judge",
        "judge": judge,
        "judge_prompt": JUDGE_TEMPLATE,
        "n": len(rows),
        "scale": 10,
        "mean": mean,
        "score": mean / 10,
        "unparsed": len(rows) - len(values),
    }
