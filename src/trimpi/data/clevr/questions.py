"""General scene questions that no policy governs (counting, existence, attribute queries).

They measure forgetting: a model that internalized policies should still answer them.
"""

from __future__ import annotations

import numpy as np

from trimpi.data.clevr.policy import describe
from trimpi.data.clevr.tree import ATTRIBUTE_TYPES, ATTRIBUTE_VALUES, exists, matches

KINDS = ("count", "exist", "query")
INSTRUCTION = "Answer the question about the image with a single word or number."


def _random_conj(rng: np.random.Generator, n_attrs: int) -> dict[str, str]:
    types = [ATTRIBUTE_TYPES[i] for i in sorted(rng.choice(len(ATTRIBUTE_TYPES), n_attrs, replace=False))]
    return {t: ATTRIBUTE_VALUES[t][rng.integers(len(ATTRIBUTE_VALUES[t]))] for t in types}


def _plural(conj: dict[str, str]) -> str:
    phrase = describe(conj).split(" ", 1)[1]
    return phrase + ("es" if phrase.endswith("s") else "s")


def _unique_description(obj: dict, objects: list[dict], skip: str) -> dict[str, str] | None:
    """The shortest conjunction (without attribute `skip`) that picks out `obj` alone."""
    types = [t for t in ATTRIBUTE_TYPES if t != skip]
    for size in range(1, len(types) + 1):
        for start in range(len(types) - size + 1):
            conj = {t: obj[t] for t in types[start : start + size]}
            if sum(matches(o, conj) for o in objects) == 1:
                return conj
    return None


def general_question(rng: np.random.Generator, objects: list[dict]) -> tuple[str, str, str]:
    """(kind, question, answer) for one scene."""
    kind = KINDS[rng.integers(len(KINDS))]
    if kind == "query":
        for i in rng.permutation(len(objects)):
            attr = ATTRIBUTE_TYPES[rng.integers(len(ATTRIBUTE_TYPES))]
            conj = _unique_description(objects[i], objects, skip=attr)
            if conj is not None:
                target = describe(conj).split(" ", 1)[1]
                return kind, f"What is the {attr} of the {target}?", objects[i][attr]
        kind = "count"
    conj = _random_conj(rng, int(rng.integers(1, 3)))
    if kind == "count":
        n = sum(matches(o, conj) for o in objects)
        return kind, f"How many {_plural(conj)} are there?", str(n)
    return kind, f"Is there {describe(conj)}?", "yes" if exists(objects, conj) else "no"
