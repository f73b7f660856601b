"""Gold forward reasoning traces for ClevrPolicy, and reading cited conditions back out of text.

A full trace lists the objects, then every visited condition in order as
`Condition <id>: <question> <Yes|No> ...` with the object that answers it, and ends with the
response. A compact trace (for small models) has no object list and no witnesses. Policy-referral
scoring (`cited_conditions`) reads the same pattern back from any model output.
"""

from __future__ import annotations

import re

from trimpi.data.clevr.policy import describe
from trimpi.data.clevr.tree import matches, trace

# "Condition 1.2: Is there a red cube? No, ..." — the outcome must answer the question directly, so a
# restated policy line ("... in the image? If yes, go to ...") cites nothing.
CITATION = re.compile(r"Condition\s+(\d+(?:\.\d+)*)\s*:[^\n?]*\?\s*(Yes|No)\b", re.IGNORECASE)


def object_phrase(obj: dict) -> str:
    return f"{obj['size']} {obj['color']} {obj['material']} {obj['shape']}"


def inventory(objects: list[dict]) -> str:
    listed = ", ".join(object_phrase(o) for o in objects)
    return f"The image shows {len(objects)} objects: {listed}."


TRACE_STYLES = ("full", "compact")


def gold_trace(name: str, tree: dict, objects: list[dict], style: str = "full") -> tuple[str, str]:
    """(reasoning text, leaf label) for a scene: cites each visited condition id and its outcome.
    style "full" also lists every object and names the object that answers each condition."""
    if style not in TRACE_STYLES:
        raise ValueError(f"trace style must be one of {TRACE_STYLES}, got {style!r}")
    full = style == "full"
    lines = [f"I follow Policy {name}, starting at Condition 1."] + ([inventory(objects)] if full else [])
    path, leaf = trace(tree, objects)
    for ref, found in path:
        node = tree["nodes"][ref]
        conj = node["if_exists"]
        question = f"Is there {describe(conj)}?"
        if not full:
            evidence = "Yes." if found else "No."
        elif found:
            witness = next(o for o in objects if matches(o, conj))
            evidence = f"Yes, the {object_phrase(witness)}."
        else:
            evidence = "No, none of the objects matches."
        nxt = node["yes" if found else "no"]
        step = f"the response is {nxt}." if nxt.startswith("Case ") else f"go to Condition {nxt}."
        lines.append(f"Condition {ref}: {question} {evidence} So {step}")
    return "\n".join(lines), leaf


def cited_conditions(text: str) -> list[tuple[str, bool]]:
    """The (condition id, claimed outcome) pairs a reasoning text cites, in order."""
    return [(m.group(1), m.group(2).lower() == "yes") for m in CITATION.finditer(text or "")]
