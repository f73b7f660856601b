"""The judge of free-form answers (answer type "judge"): a chat model rates a reply 0–10.

Shared by evaluation and RL rewards, so a judged record's reward is its evaluation score.

    judge = make_answer_judge("http://localhost:8000/v1", "judge", data)   # or a local model: ("path/to/ckpt", None)
    score_answer(completion, record, Scoring(judge=judge))
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from trimpi.data.schema import IMAGE_MARKER, PolicyStore, Record
from trimpi.generation.client import ChatClient, make_client

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])")


def text_only(prompt: str) -> str:
    """A judge prompt for a text-only conversation: image markers (from policies with pictures) become [image];
    a bare marker would make a processor ask for an image."""
    return prompt.replace(IMAGE_MARKER, "[image]")


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
        text = text_only(ANSWER_TEMPLATE.format(policy=policy, query=record.query, answer=record.answer,
                                                rubric=rubric or DEFAULT_RUBRIC, response=response))
        return [{"role": "user", "content": [{"type": "text", "text": text}]}]

    def __call__(self, record: Record, response: str, rubric: str | None) -> tuple[float | None, str]:
        reply = self.client.complete([self.messages(record, response, rubric)], max_tokens=self.max_tokens)[0]
        rating = parse_score(reply)
        return (None if rating is None else rating / 10, reply)


def make_answer_judge(spec: str, model: str | None, data: str | Path, api_key_env: str | None = None,
                      **load_kwargs) -> AnswerJudge:
    """The judge of answer type "judge" on dataset `data`, asking the client of `trimpi eval --judge SPEC
    --judge-model MODEL` (an OpenAI-compatible URL serving `model`, its key from `api_key_env`, or a local
    model loaded with `load_kwargs`)."""
    return AnswerJudge(make_client(spec, model, api_key_env=api_key_env, **load_kwargs), PolicyStore(data))
