"""Random decision-tree policies for ClevrPolicy, their evaluation on scene graphs, and leaf counts.

Semantics (SPEC §2): a node asks whether *there exists an object* matching a conjunction of
attribute values. Along *yes* edges the conjunction grows by one new attribute type; a *no*
edge starts a fresh one-attribute conjunction. A conjunction never holds an attribute type
twice, so a *yes* child of a node that already tests all four types is a leaf. Conditions whose
outcome is already implied by the answers on the path to them are never drawn.

The saved form is plain JSON so that anyone can re-check answers without this code:
    {"root": "1", "nodes": {"1": {"if_exists": {"color": "cyan"}, "yes": "1.1", "no": "Case 4"}, ...}}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": ("cube", "sphere", "cylinder"),
    "color": ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"),
    "size": ("small", "large"),
    "material": ("rubber", "metal"),
}
ATTRIBUTE_TYPES = tuple(ATTRIBUTE_VALUES)
Conjunction = dict[str, str]
MAX_DRAWS = 64


def matches(obj: dict, conj: Conjunction) -> bool:
    return all(obj.get(attr) == value for attr, value in conj.items())


def exists(objects: list[dict], conj: Conjunction) -> bool:
    return any(matches(o, conj) for o in objects)


@dataclass(frozen=True)
class Facts:
    """What the answers on a path imply: conjunctions known to be present / absent."""

    present: tuple[tuple[tuple[str, str], ...], ...] = ()
    absent: tuple[tuple[tuple[str, str], ...], ...] = ()

    def add(self, conj: Conjunction, outcome: bool) -> Facts:
        item = tuple(sorted(conj.items()))
        if outcome:
            return Facts(self.present + (item,), self.absent)
        return Facts(self.present, self.absent + (item,))

    def decides(self, conj: Conjunction) -> bool:
        """True when the outcome of `conj` already follows from the facts."""
        items = set(conj.items())
        if any(set(p) >= items for p in self.present):  # a present object matches a superset
            return True
        return any(set(a) <= items for a in self.absent)  # a more general conjunction is absent


def _draw_attribute(rng: np.random.Generator, exclude: set[str]) -> tuple[str, str]:
    types = [t for t in ATTRIBUTE_TYPES if t not in exclude]
    attr = types[rng.integers(len(types))]
    values = ATTRIBUTE_VALUES[attr]
    return attr, values[rng.integers(len(values))]


def _draw_condition(rng: np.random.Generator, base: Conjunction, facts: Facts) -> Conjunction | None:
    """A conjunction extending `base` by one new attribute type whose outcome is still open."""
    if len(base) == len(ATTRIBUTE_TYPES):
        return None
    for _ in range(MAX_DRAWS):
        attr, value = _draw_attribute(rng, exclude=set(base))
        conj = {**base, attr: value}
        if not facts.decides(conj):
            return dict(sorted(conj.items(), key=lambda kv: ATTRIBUTE_TYPES.index(kv[0])))
    return None


def random_tree(rng: np.random.Generator, depth: int) -> dict:
    """Draw a tree of at most `depth` decision levels; leaves are labelled `Case k` in random order."""
    nodes: dict[str, dict] = {}
    leaves: list[tuple[str, str]] = []  # (node id, "yes"/"no") whose edge ends in a leaf

    def grow(node_id: str, conj: Conjunction, level: int, facts: Facts) -> None:
        nodes[node_id] = {"if_exists": conj}
        for branch, suffix in (("yes", "1"), ("no", "2")):
            child_facts = facts.add(conj, branch == "yes")
            child = None
            if level < depth:
                base = conj if branch == "yes" else {}
                child = _draw_condition(rng, base, child_facts)
            if child is None:
                leaves.append((node_id, branch))
            else:
                grow(f"{node_id}.{suffix}", child, level + 1, child_facts)

    root = _draw_condition(rng, {}, Facts())
    assert root is not None
    grow("1", root, 1, Facts())
    labels = rng.permutation(len(leaves)) + 1
    for (node_id, branch), k in zip(leaves, labels, strict=True):
        nodes[node_id][branch] = f"Case {int(k)}"
    for node_id, node in nodes.items():
        for branch, suffix in (("yes", "1"), ("no", "2")):
            node.setdefault(branch, f"{node_id}.{suffix}")
    ordered = {k: {"if_exists": v["if_exists"], "yes": v["yes"], "no": v["no"]} for k, v in nodes.items()}
    return {"root": "1", "nodes": ordered}


def is_leaf(ref: str) -> bool:
    return ref.startswith("Case ")


def leaf_labels(tree: dict) -> list[str]:
    return sorted(
        (ref for n in tree["nodes"].values() for ref in (n["yes"], n["no"]) if is_leaf(ref)),
        key=lambda s: int(s.split()[1]),
    )


def walk(tree: dict, present) -> tuple[list[tuple[str, bool]], str]:
    """Walk the tree answering each condition with `present(conjunction) -> bool`: the visited
    (node id, outcome) pairs and the leaf label reached."""
    path: list[tuple[str, bool]] = []
    ref = tree["root"]
    while not is_leaf(ref):
        node = tree["nodes"][ref]
        outcome = bool(present(node["if_exists"]))
        path.append((ref, outcome))
        ref = node["yes" if outcome else "no"]
    return path, ref


def trace(tree: dict, objects: list[dict]) -> tuple[list[tuple[str, bool]], str]:
    """Walk the tree on a scene: the visited (node id, outcome) pairs and the leaf label reached."""
    return walk(tree, lambda conj: exists(objects, conj))


def decide(tree: dict, objects: list[dict]) -> str:
    return trace(tree, objects)[1]


def tree_depth(tree: dict) -> int:
    return max(len(node_id.split(".")) for node_id in tree["nodes"])


def tree_key(tree: dict) -> str:
    """What makes two saved decision trees the same procedure: root and nodes (not name or text)."""
    blob = json.dumps({"root": tree["root"], "nodes": tree["nodes"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
