"""The rule engine: which versioned tool a profile may call, and why.

Everything is computed from `trimpi.data.gta.policy`; nothing here restates a rule.
"""

from __future__ import annotations

import re
from typing import Any

from trimpi.data.gta.policy import TOOLS_BY_NAME, Branch, Cond, rule_set
from trimpi.errors import DataError

_VERSIONED = re.compile(r"^(?P<tool>[A-Za-z]+)_v(?P<version>\d+)$")


def holds(cond: Cond, profile: dict[str, Any]) -> bool:
    """Whether one condition holds for a profile."""
    value = profile[cond.field]
    if cond.op == "in":
        return value in cond.value
    if cond.op == "<":
        return value < cond.value
    if cond.op == "<=":
        return value <= cond.value
    if cond.op == ">":
        return value > cond.value
    if cond.op == ">=":
        return value >= cond.value
    raise ValueError(f"unknown operator {cond.op!r}")


def matching_branches(tool: str, profile: dict[str, Any], override: bool = False) -> list[Branch]:
    """All branches of `tool`'s version rule whose conditions hold (exactly one for a valid profile)."""
    return [b for b in rule_set(override).get(tool, ()) if all(holds(c, profile) for c in b.conds)]


def select_branch(tool: str, profile: dict[str, Any], override: bool = False) -> Branch | None:
    """The branch deciding `tool`'s version, or None for an unversioned tool."""
    if tool not in TOOLS_BY_NAME:
        raise DataError(f"unknown tool {tool!r}")
    if tool not in rule_set(override):
        return None
    found = matching_branches(tool, profile, override)
    if len(found) != 1:
        raise DataError(f"profile {profile} matches {len(found)} {tool} rules (expected exactly 1)")
    return found[0]


def versioned_name(tool: str, profile: dict[str, Any], override: bool = False) -> str:
    """The tool name the policy allows for this profile, e.g. "OCR_v4"; plain name if unversioned."""
    branch = select_branch(tool, profile, override)
    return tool if branch is None else f"{tool}_v{branch.version}"


def base_tool(name: str) -> str:
    """Strip the version: "OCR_v4" -> "OCR"; an unversioned name is returned unchanged."""
    m = _VERSIONED.match(name)
    return m.group("tool") if m else name


def check_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Validate a profile's fields and types; return it."""
    if profile.get("account_type") not in ("A", "B", "C", "D"):
        raise DataError(f"profile: field 'account_type' must be A, B, C or D, got {profile.get('account_type')!r}")
    for key in ("credits", "age"):
        v = profile.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise DataError(f"profile: field '{key}' must be a non-negative integer, got {v!r}")
    return profile
