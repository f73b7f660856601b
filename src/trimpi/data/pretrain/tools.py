"""GTA-style tool-version items: a random tool policy in context, a user profile, the allowed tool name.

The policies keep GTAPolicy's form (tools with versions; per tool, rule branches on the profile's
account type, credits and age) but each draws its own version numbers for the branches — never
GTAPolicy's own assignment nor its override's — and its own name, so the base learns to read a
tool policy in context without learning GTAPolicy. The answer is the versioned tool name the
rules allow (no argument filling). A tool with few branches often keeps GTAPolicy's versions for
itself (two branches: one of two orders); the policy as a whole never does.
"""

from __future__ import annotations

import numpy as np

from trimpi.data.gta.policy import BASE_RULES, OVERRIDE_RULES, Branch
from trimpi.data.gta.profiles import profile_text, sample_profile
from trimpi.data.gta.rules import holds
from trimpi.data.gta.text import rules_text
from trimpi.data.pretrain.split import pretrain_name

INTRO = (
    "# Policy: {name}\n"
    "You are a tool-using assistant. Several tools exist in versions; the user profile (account type A, B, C or D; "
    "credits; age) decides which version the user is allowed to call. Always call the allowed version, never "
    "another one."
)
QUESTION = "User profile: {profile}. The next step needs the tool {tool}. Which tool name may this user call?"


def _assignment(rules: dict[str, tuple[Branch, ...]]) -> dict[str, tuple[int, ...]]:
    return {tool: tuple(b.version for b in branches) for tool, branches in rules.items()}


GTA_ASSIGNMENTS = [_assignment(BASE_RULES), _assignment({**BASE_RULES, **OVERRIDE_RULES})]


def random_rules(rng: np.random.Generator) -> dict[str, tuple[Branch, ...]]:
    """GTAPolicy's branches with the versions of each tool permuted, never GTAPolicy's (or its override's)."""
    while True:
        rules = {tool: tuple(Branch(b.conds, int(v)) for b, v in
                             zip(branches, rng.permutation([b.version for b in branches]), strict=True))
                 for tool, branches in BASE_RULES.items()}
        if _assignment(rules) not in GTA_ASSIGNMENTS:
            return rules


def allowed(rules: dict[str, tuple[Branch, ...]], tool: str, profile: dict) -> str:
    """The versioned name the rules allow for the profile (the first branch whose conditions hold)."""
    branch = next(b for b in rules[tool] if all(holds(c, profile) for c in b.conds))
    return f"{tool}_v{branch.version}"


def tool_item(rng: np.random.Generator, key: str) -> tuple[str, str, str, dict]:
    """(policy text, question, answer, meta) of one tool-version item; `key` seeds the profile."""
    rules = random_rules(rng)
    name = "Tools-" + pretrain_name(rng, 0).split("-", 1)[1]
    tool = sorted(rules)[int(rng.integers(len(rules)))]
    profile = sample_profile(f"pretrain:{key}")
    text = INTRO.format(name=name) + "\n\n## Tool-version rules\n\n" + rules_text(rules)
    return text, QUESTION.format(profile=profile_text(profile), tool=tool), allowed(rules, tool, profile), {
        "name": name, "tool": tool, "profile": profile}
