"""Reading an answer out of model text: the reasoning block, \\boxed{} and JSON tool calls.

One definition each, used by RL rewards, evaluation and the teacher filter alike. The answer is
always read *after* the reasoning: whatever a <think>…</think> block contains is ignored. A tool
call is the *last* JSON call after the reasoning (`trimpi.data.gta.metrics.parse_tool_call`): a
model that corrects itself is scored on its final call, and a call quoted inside the reasoning
never counts. Model text is only parsed (string scans, `json`), never executed.
"""

from __future__ import annotations

import re

from trimpi.data.gta.metrics import parse_tool_call

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOXED = "\\boxed{"
_REASONING = re.compile(re.escape(THINK_OPEN) + r"\s*\S.*?" + re.escape(THINK_CLOSE), re.DOTALL)

__all__ = ["THINK_CLOSE", "THINK_OPEN", "after_think", "extract_boxed", "has_reasoning", "parse_tool_call",
           "unboxed"]


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in text (nested braces allowed), or None."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def after_think(text: str) -> str:
    """The part of text after the last </think> (all of it when there is none)."""
    k = text.rfind(THINK_CLOSE)
    return text if k < 0 else text[k + len(THINK_CLOSE) :]


def has_reasoning(text: str) -> bool:
    """True when text holds a non-empty <think>…</think> block."""
    return _REASONING.search(text) is not None


def unboxed(answer: str) -> str:
    """A gold answer without its \\boxed{} wrapper ("\\boxed{Case 3}" and "Case 3" both give "Case 3")."""
    boxed = extract_boxed(answer)
    return boxed if boxed is not None else answer
