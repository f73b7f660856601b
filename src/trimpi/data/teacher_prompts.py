"""Teacher prompts for reasoning traces, and the parsing of the teacher's reply.

The teacher sees a record rendered *with* its policy (`render_messages`), followed by one
instruction block:

- forward: reason inside <think>…</think>, then answer in the dataset's format;
- reverse: the correct answer is given; explain why it is correct, reasoning as if it had
  been found, then repeat it in the dataset's format.

The reply is split into the reasoning (between <think> and the last </think>) and the
answer part after it. Nothing in a reply is ever executed: it is only searched as text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from trimpi.data.schema import THINK_CLOSE, THINK_OPEN, Placement, Policy, Record, render_messages

MODES = ("forward", "reverse")

BOXED_FORMAT = "the final response as \\boxed{...}, e.g. \\boxed{Case 1}"
JSON_FORMAT = 'exactly one tool call as JSON: {"name": "<tool name>", "arguments": {...}}'

FORWARD_INSTRUCTION = """Follow the policy above to answer. First reason step by step inside {open} and {close}: \
name each policy section or rule you use, state what you check in the image(s) or the request and what you \
find, and where that leads. After {close}, give {format}."""

REVERSE_INSTRUCTION = """The correct answer to this request is:
{gold}

Explain, step by step and following the policy above, why this is the correct answer. Write the explanation \
inside {open} and {close}: name each policy section or rule you use, state what you check in the image(s) or \
the request and what you find, and where that leads, ending at this answer. Reason as if you had found the \
answer yourself: do not say that it was given to you. After {close}, give {format}."""

# Phrases by which a reverse-mode explanation reveals that it was handed the answer.
LEAK_PHRASES = (
    "given answer", "provided answer", "answer provided", "gold answer", "reference answer",
    "expected answer", "answer was given", "answer is given", "we are told the answer", "i was told",
    "as stated in the prompt",
)


def answer_format(record: Record) -> str:
    """How the teacher must write the answer: a JSON tool call (task "gta") or \\boxed{...}."""
    return JSON_FORMAT if record.task == "gta" else BOXED_FORMAT


def instruction(record: Record, mode: str) -> str:
    """The instruction appended to the user turn for `mode` ("forward" or "reverse")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    template = FORWARD_INSTRUCTION if mode == "forward" else REVERSE_INSTRUCTION
    return template.format(open=THINK_OPEN, close=THINK_CLOSE, format=answer_format(record), gold=record.response)


def teacher_messages(
    record: Record, root: str | Path, policy: Policy | None, mode: str, placement: Placement = "system"
) -> list[dict[str, Any]]:
    """The record with its policy in context and the teacher instruction after the query."""
    messages = render_messages(record, root, policy, placement=placement)
    messages[-1]["content"].append({"type": "text", "text": "\n\n" + instruction(record, mode)})
    return messages


def split_reply(text: str) -> tuple[str | None, str, str | None]:
    """(reasoning, answer part, problem) of a teacher reply.

    The reasoning runs from the first <think> (or the start, when a chat template opened the
    block itself) to the last </think>. `problem` is "no_think" without a closing tag,
    "bad_think" for nested or repeated think tags, "empty_reasoning" for a blank block.
    """
    text = text or ""
    close = text.rfind(THINK_CLOSE)
    if close < 0:
        return None, text, "no_think"
    open_at = text.find(THINK_OPEN)
    start = open_at + len(THINK_OPEN) if 0 <= open_at < close else 0
    reasoning = text[start:close].strip()
    answer = text[close + len(THINK_CLOSE):]
    if THINK_OPEN in reasoning or THINK_CLOSE in reasoning:
        return None, answer, "bad_think"
    if not reasoning:
        return None, answer, "empty_reasoning"
    return reasoning, answer, None


def gold_marker(record: Record) -> str:
    """The text a trace must end at: the answer label, or the tool name of a GTA call."""
    if record.task == "gta":
        from trimpi.data.gta.metrics import parse_tool_call

        call = parse_tool_call(record.answer) or {}
        return str(call.get("name") or record.answer)
    return record.answer


def ends_at_gold(reasoning: str, record: Record, tail_chars: int = 400) -> bool:
    """Whether the end of the reasoning (its last `tail_chars`) names the gold answer (word-bounded)."""
    marker = gold_marker(record).strip()
    if not marker:
        return False
    pattern = r"(?<![\w])" + re.escape(marker) + r"(?![\w])"
    return re.search(pattern, reasoning[-tail_chars:], re.IGNORECASE) is not None


def leaks_given_answer(reasoning: str) -> bool:
    """Whether the reasoning says it was handed the answer (reverse mode)."""
    low = " ".join(reasoning.lower().split())
    return any(p in low for p in LEAK_PHRASES)
