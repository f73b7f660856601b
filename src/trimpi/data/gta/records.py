"""Turn one reference tool call + a profile into a schema.Record (query, gold call, rationale)."""

from __future__ import annotations

import json
from typing import Any

from trimpi.data.gta.loader import Call, Item
from trimpi.data.gta.policy import MATHOCR_RULE, POLICY_NAME, TIPS, TOOLS_BY_NAME, Branch
from trimpi.data.gta.profiles import profile_text
from trimpi.data.gta.rules import base_tool, select_branch, versioned_name
from trimpi.data.gta.text import FIELD_WORDS, OP_WORDS, branch_text
from trimpi.data.schema import Record

INSTRUCTION = (
    f"Instruction: following Policy {POLICY_NAME}, choose the tool call for the next step. "
    'Answer with exactly one tool call as JSON: {"name": "<tool name>", "arguments": {...}}.'
)

_PURPOSE = {
    "OCR": "read the text in {image}",
    "ImageDescription": "describe the content of {image}",
    "RegionAttributeDescription": "describe the region {bbox} of {image} ({attribute})",
    "TextToBbox": "locate {text} in {image}",
    "DrawBox": "draw a box at {bbox} on {image}",
    "AddText": "write the text '{text}' on {image}",
    "GoogleSearch": "search the web for '{query}'",
    "Calculator": "compute {expression}",
    "Solver": "solve the problem with a short program",
    "Plot": "draw the requested chart",
    "MathOCR": "read the mathematical expression in {image}",
    "CountGivenObject": "count the objects described as '{text}' in {image}",
    "TextToImage": "generate an image of {keywords}",
    "ImageStylization": "restyle {image} ({instruction})",
}


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "the given input"


def canonical_call(name: str, arguments: dict[str, Any]) -> str:
    """The gold call as JSON: name first, arguments in the tool's declared order, extras sorted."""
    tool = TOOLS_BY_NAME.get(base_tool(name))
    order = [a.name for a in tool.args] if tool else []
    keys = [k for k in order if k in arguments] + sorted(k for k in arguments if k not in order)
    return json.dumps({"name": name, "arguments": {k: arguments[k] for k in keys}}, ensure_ascii=False)


def purpose(call: Call) -> str:
    """What the step is for: the reference 'thought' if given, else a template from the arguments."""
    if call.thought:
        text = " ".join(str(call.thought).split()).rstrip(".")
        return text[:1].lower() + text[1:]
    return _PURPOSE[call.tool].format_map(_Missing({k: str(v) for k, v in call.arguments.items()}))


def history_text(calls: list[Call], profile: dict[str, Any], override: bool) -> str:
    """Earlier calls (with the versions this profile is allowed) and their results."""
    if not calls:
        return "Interaction history so far: none (this is the first step)."
    lines = ["Interaction history so far:"]
    for i, c in enumerate(calls, 1):
        lines.append(f"{i}. Call: {canonical_call(versioned_name(c.tool, profile, override), c.arguments)}")
        result = (c.result or "(no result)").replace("\n", "\n   ")
        lines.append(f"   Result: {result}")
    return "\n".join(lines)


def query_text(item: Item, step: int, profile: dict[str, Any], override: bool) -> str:
    """The user turn without the policy: policy name, profile, images, query, history, instruction."""
    images = ", ".join(f"{i + 1}. {p}" for i, p in enumerate(item.images)) or "none"
    return "\n".join(
        [
            f"Policy: {POLICY_NAME}",
            f"User profile: {profile_text(profile)}.",
            f"Image files (in the order shown): {images}",
            f"User query: {item.query}",
            history_text(item.calls[:step], profile, override),
            INSTRUCTION,
        ]
    )


def _why(branch: Branch, profile: dict[str, Any]) -> str:
    """How the profile satisfies each condition of the deciding rule ("credits 620 > 250; ...")."""
    parts = []
    for c in branch.conds:
        value = profile[c.field]
        if c.op == "in":
            parts.append(f"account type {value} is {' or '.join(c.value)}")
        else:
            parts.append(f"{FIELD_WORDS[c.field]} {value} {OP_WORDS[c.op]} {c.value}")
    return "; ".join(parts)


def _tips(item: Item, step: int, call: Call) -> list[str]:
    notes = []
    if call.tool == "MathOCR":
        notes.append(f"The image holds a mathematical expression, and the policy says: {MATHOCR_RULE}")
    if call.tool == "ImageDescription" and len(item.images) > 1:
        notes.append(f"The query has several images; the policy says: {TIPS['describe_first']}")
    if call.tool == "RegionAttributeDescription":
        notes.append(f"The region comes from the earlier TextToBbox result, as the policy says: {TIPS['bbox_first']}")
    if call.tool == "GoogleSearch" and "k" in call.arguments:
        kind = "closed" if str(call.arguments["k"]) == "1" else "open-ended"
        notes.append(f"This is a {kind} question, and the policy says: {TIPS['search_k']}")
    if "image" in call.arguments:
        notes.append(f"The image argument is the exact file name {call.arguments['image']}, as the policy says.")
    return notes


def reasoning_text(item: Item, step: int, profile: dict[str, Any], override: bool = False) -> str:
    """The gold rationale: the step's purpose, the tool, the deciding rule with the profile fields, the call."""
    call = item.calls[step]
    name = versioned_name(call.tool, profile, override)
    lines = [f"Step {step + 1}: the purpose is to {purpose(call)}. The tool for this is {call.tool}."]
    lines += _tips(item, step, call)
    branch = select_branch(call.tool, profile, override)
    if branch is None:
        lines.append(f"{call.tool} has no versions, so it is called as {call.tool}.")
    else:
        lines.append(
            f"The user profile is {profile_text(profile)}. The {call.tool} version rule that applies is "
            f'"{branch_text(call.tool, branch)[2:]}" because {_why(branch, profile)}. So the call is {name}.'
        )
    lines.append(f"Call: {canonical_call(name, call.arguments)}")
    return "\n".join(lines)


def make_record(
    item: Item,
    step: int,
    profile: dict[str, Any],
    *,
    split: str,
    index: int,
    policy_path: str,
    override: bool = False,
    with_reasoning: bool = False,
    image_prefix: str = "images/",
) -> Record:
    """One single-step instance as a schema.Record."""
    call = item.calls[step]
    name = versioned_name(call.tool, profile, override)
    gold = canonical_call(name, call.arguments)
    branch = select_branch(call.tool, profile, override)
    return Record(
        id=f"gta-{split}-{item.id}-s{step + 1}-p{index}",
        task="gta",
        split=split,
        policy=POLICY_NAME,
        policy_path=policy_path,
        images=[image_prefix + p for p in item.images],
        query=query_text(item, step, profile, override),
        answer=gold,
        response=gold,
        reasoning=reasoning_text(item, step, profile, override) if with_reasoning else None,
        meta={
            "profile": dict(profile),
            "query_id": item.id,
            "step": step + 1,
            "n_steps": len(item.calls),
            "tool": call.tool,
            "purpose": purpose(call),
            "rule": branch_text(call.tool, branch)[2:] if branch else None,
            "override": override,
        },
    )
