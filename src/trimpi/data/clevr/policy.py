"""ClevrPolicy policies: names, the verbalized policy document, and the saved policy JSON."""

from __future__ import annotations

import numpy as np

from trimpi.data.clevr.tree import Conjunction, is_leaf
from trimpi.data.schema import IMAGE_MARKER

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
CROP_ATTRIBUTES = ("color", "shape", "material")  # size is never shown as a crop
CROP_PROBABILITY = 0.5

INSTRUCTION = (
    "You are a visual assistant. For every image you are given, you must decide the response "
    "required by the policy named in the request. Each policy below is a set of conditions about "
    "the objects in the image. Start at Condition 1. A condition asks whether the image contains at "
    "least one object with all the stated properties; depending on the answer, it sends you to "
    "another condition or gives the response. Sections are not listed in the order you visit them."
)


def policy_name(rng: np.random.Generator, depth: int, taken: set[str]) -> str:
    """A unique pronounceable name such as `L6-Surinu`."""
    while True:
        syllables = rng.integers(3, 4)
        word = "".join(
            CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))]
            for _ in range(syllables)
        )
        name = f"L{depth}-{word.capitalize()}"
        if name not in taken:
            taken.add(name)
            return name


def describe(conj: Conjunction, crop_attrs: frozenset[str] = frozenset()) -> str:
    """English noun phrase for a conjunction; attributes in `crop_attrs` point at an image instead."""
    words = [conj[a] for a in ("size", "color", "material") if a in conj and a not in crop_attrs]
    noun = conj["shape"] if "shape" in conj and "shape" not in crop_attrs else "object"
    phrase = " ".join(words + [noun])
    clauses = []
    if "shape" in crop_attrs:
        clauses.append(f"with the shape shown in {IMAGE_MARKER}")
    if "color" in crop_attrs:
        clauses.append(f"of the color shown in {IMAGE_MARKER}")
    if "material" in crop_attrs:
        clauses.append(f"made of the material shown in {IMAGE_MARKER}")
    phrase = " ".join([phrase] + clauses)
    article = "an" if phrase[0] in "aeiou" else "a"
    return f"{article} {phrase}"


def _goto(ref: str) -> str:
    return f"the response is {ref}" if is_leaf(ref) else f"go to Condition {ref}"


def section_order(rng: np.random.Generator, node_ids: list[str]) -> list[str]:
    """Condition 1 first, the rest in a seeded shuffled order (following needs multi-hop jumps)."""
    rest = [n for n in node_ids if n != "1"]
    return ["1"] + [rest[i] for i in rng.permutation(len(rest))]


def choose_crops(rng: np.random.Generator, tree: dict, variant: str) -> dict[str, frozenset[str]]:
    """For variant M, which attribute of each condition is shown as an image crop."""
    crops: dict[str, frozenset[str]] = {}
    for node_id, node in tree["nodes"].items():
        shown = [a for a in CROP_ATTRIBUTES if a in node["if_exists"]]
        if variant == "M" and shown and rng.random() < CROP_PROBABILITY:
            crops[node_id] = frozenset({shown[rng.integers(len(shown))]})
        else:
            crops[node_id] = frozenset()
    return crops


def verbalize(name: str, tree: dict, order: list[str], crops: dict[str, frozenset[str]]) -> tuple[str, list[tuple[str, str]]]:
    """The policy document and the (attribute, value) of each image marker, in text order."""
    lines = [INSTRUCTION, "", f"Policy: {name}", ""]
    images: list[tuple[str, str]] = []
    for node_id in order:
        node = tree["nodes"][node_id]
        conj = node["if_exists"]
        shown = crops.get(node_id, frozenset())
        images.extend((a, conj[a]) for a in ("shape", "color", "material") if a in shown)
        lines.append(
            f"Condition {node_id}: Is there {describe(conj, shown)} in the image? "
            f"If yes, {_goto(node['yes'])}. If no, {_goto(node['no'])}."
        )
    return "\n".join(lines), images


def crop_filename(attribute: str, value: str) -> str:
    return f"images/{attribute}-{value}.png"


def policy_json(name: str, depth: int, variant: str, tree: dict, text: str, images: list[tuple[str, str]]) -> dict:
    """The saved form: enough to re-check every answer without trimpi."""
    return {
        "name": name,
        "depth": depth,
        "variant": variant,
        "text": text,
        "images": [crop_filename(a, v) for a, v in images],
        "root": tree["root"],
        "nodes": tree["nodes"],
    }
