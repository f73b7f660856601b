"""Synthetic user profiles: account type, credits, age.

Half of the draws land on or next to a rule threshold (credits 250/500/750, age 21/60),
so that training data exercises every boundary of the rules; the rest are uniform.
Sampling is deterministic given the string key (no process-dependent hashing).
"""

from __future__ import annotations

import random
from typing import Any

from trimpi.data.gta.policy import ACCOUNT_TYPES, rule_set

CREDIT_RANGE = (0, 1000)
AGE_RANGE = (13, 80)


def thresholds(field: str) -> list[int]:
    """Every numeric threshold the (base and override) rules use for `field`."""
    found = {
        c.value
        for override in (False, True)
        for branches in rule_set(override).values()
        for b in branches
        for c in b.conds
        if c.field == field and c.op != "in"
    }
    return sorted(found)


def _draw(rng: random.Random, field: str, lo: int, hi: int) -> int:
    if rng.random() < 0.5:
        t = rng.choice(thresholds(field))
        return max(lo, min(hi, t + rng.choice((-1, 0, 1))))
    return rng.randint(lo, hi)


def sample_profile(key: str) -> dict[str, Any]:
    """A profile drawn from a generator seeded by `key` (e.g. "0:train:12:3:1")."""
    rng = random.Random(key)
    return {
        "account_type": rng.choice(ACCOUNT_TYPES),
        "credits": _draw(rng, "credits", *CREDIT_RANGE),
        "age": _draw(rng, "age", *AGE_RANGE),
    }


def profile_text(profile: dict[str, Any]) -> str:
    """The profile in words: "account type B; credits 620; age 34"."""
    return f"account type {profile['account_type']}; credits {profile['credits']}; age {profile['age']}"
