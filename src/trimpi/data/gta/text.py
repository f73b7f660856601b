"""Policy text and policy JSON, rendered from the policy data.

Each version rule is stated as one line "- If <conditions>: call <Tool>_v<n>." so the
text states exactly the branches the rule engine evaluates.
"""

from __future__ import annotations

from typing import Any

from trimpi.data.gta.policy import (
    BASE_RULES,
    MATHOCR_RULE,
    OVERRIDE_RULES,
    POLICY_NAME,
    TIPS,
    TOOLS,
    Branch,
    Cond,
    Tool,
)

FIELD_WORDS = {"account_type": "account type", "credits": "credits", "age": "age"}
OP_WORDS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
OVERRIDE_HEADER = "## RULE OVERRIDE"


def cond_text(cond: Cond) -> str:
    """A condition in words: "account type is B or C", "credits > 500", "age < 21"."""
    field = FIELD_WORDS[cond.field]
    if cond.op == "in":
        return f"{field} is {' or '.join(cond.value)}"
    return f"{field} {OP_WORDS[cond.op]} {cond.value}"


def branch_text(tool: str, branch: Branch) -> str:
    """One rule line: "- If credits ≤ 250: call OCR_v5."."""
    conds = " and ".join(cond_text(c) for c in branch.conds)
    return f"- If {conds}: call {tool}_v{branch.version}."


def tool_text(tool: Tool) -> str:
    """A tool's description with its arguments and the names it may be called by."""
    args = "; ".join(f"{a.name}{' (optional)' if a.optional else ''}: {a.description}" for a in tool.args)
    if tool.versions:
        names = ", ".join(f"{tool.name}_v{v}" for v in range(1, tool.versions + 1))
        how = f"Versions: {names} (the version is decided by the rules below)."
    else:
        how = f"Call it as {tool.name} (no versions)."
    return f"### {tool.name}\n{tool.description}\nArguments: {args}\n{how}"


def rules_text(rules: dict[str, tuple[Branch, ...]]) -> str:
    """One section per versioned tool, listing its rule lines."""
    parts = []
    for tool in TOOLS:
        if tool.name in rules:
            lines = "\n".join(branch_text(tool.name, b) for b in rules[tool.name])
            parts.append(f"### {tool.name} version rules\n{lines}")
    return "\n\n".join(parts)


def policy_text(override: bool = False) -> str:
    """The full policy document; with `override`, the changed rules follow under OVERRIDE_HEADER."""
    intro = (
        f"# Policy: {POLICY_NAME}\n"
        "You are a tool-using assistant. For every step, choose exactly one tool call and write it "
        'as JSON: {"name": "<tool name>", "arguments": {...}}. Several tools exist in versions; '
        "the user profile (account type A, B, C or D; credits; age) decides which version the user "
        "is allowed to call. Always call the allowed version, never another one."
    )
    tools = "## Tools\n\n" + "\n\n".join(tool_text(t) for t in TOOLS)
    rules = "## Tool-version rules\n\n" + rules_text(BASE_RULES)
    choice = "## Tool-choice rules\n- " + MATHOCR_RULE
    tips = "## Tips\n" + "\n".join(f"- {t}" for t in TIPS.values())
    text = "\n\n".join([intro, tools, rules, choice, tips])
    if override:
        text += (
            f"\n\n{OVERRIDE_HEADER}\nThe following rules replace the version rules above for the "
            "tools listed here; all other rules stay in force.\n\n" + rules_text(OVERRIDE_RULES)
        )
    return text


def _branch_json(b: Branch) -> dict[str, Any]:
    return {
        "if": [{"field": c.field, "op": c.op, "value": list(c.value) if c.op == "in" else c.value} for c in b.conds],
        "version": b.version,
    }


def policy_json(override: bool = False) -> dict[str, Any]:
    """The policy file content: schema fields (name, text, images) plus the structured policy data."""
    from trimpi.data.gta.policy import rule_set

    return {
        "name": POLICY_NAME,
        "text": policy_text(override),
        "images": [],
        "override": override,
        "tools": [
            {
                "name": t.name,
                "description": t.description,
                "versions": t.versions,
                "arguments": [{"name": a.name, "description": a.description, "optional": a.optional} for a in t.args],
            }
            for t in TOOLS
        ],
        "rules": {tool: [_branch_json(b) for b in branches] for tool, branches in rule_set(override).items()},
        "tool_choice_rules": [MATHOCR_RULE],
        "tips": dict(TIPS),
    }
