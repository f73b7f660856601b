"""Scene-graph captions for the perception warm-up, and their parsing for attribute accuracy.

A caption lists the objects left to right: "3 objects: a small red metal cube, a large blue
rubber sphere, a small gray rubber cylinder." (CLEVR schema: objects[*].{size,color,material,
shape,pixel_coords}).
"""

from __future__ import annotations

import re
from collections import Counter

from trimpi.data.clevr.tree import ATTRIBUTE_VALUES as VALUES

ATTRIBUTES = ("size", "color", "material", "shape")  # caption word order
SIZES, COLORS, MATERIALS, SHAPES = (VALUES[a] for a in ATTRIBUTES)
CAPTION_PROMPT = "Describe the objects from left to right."


def _norm_material(value: str) -> str:
    return {"metallic": "metal", "matte": "rubber"}.get(value, value)


def _norm_shape(value: str) -> str:
    return {"ball": "sphere", "block": "cube"}.get(value, value)


def scene_objects(scene: dict) -> list[dict]:
    """Objects sorted left to right (by pixel x), with normalized attribute names."""
    objs = sorted(scene.get("objects", []), key=lambda o: (o.get("pixel_coords") or [0])[0])
    return [{"size": o["size"], "color": o["color"], "material": _norm_material(o["material"]),
             "shape": _norm_shape(o["shape"])} for o in objs]


def caption(scene: dict) -> str:
    objs = scene_objects(scene)
    words = ", ".join(f"a {o['size']} {o['color']} {o['material']} {o['shape']}" for o in objs)
    return f"{len(objs)} objects: {words}."


_OBJECT = re.compile(r"an? (\w+) (\w+) (\w+) (\w+)")


def parse_caption(text: str) -> list[dict]:
    """Objects named in a caption, in order (best effort on malformed text)."""
    return [dict(zip(ATTRIBUTES, m.groups(), strict=True)) for m in _OBJECT.finditer(text)]


def attribute_scores(predicted: str, scene: dict) -> dict[str, float]:
    """Per-attribute hits over the scene's objects (position-matched), count correctness, and
    order-free `<attr>_set` scores (multiset overlap of the attribute's values)."""
    truth, pred = scene_objects(scene), parse_caption(predicted)
    scores = {a: 0.0 for a in ATTRIBUTES}
    for i, obj in enumerate(truth):
        if i < len(pred):
            for a in ATTRIBUTES:
                scores[a] += float(pred[i][a] == obj[a])
    n = max(len(truth), 1)
    out = {a: v / n for a, v in scores.items()}
    out["count"] = float(len(pred) == len(truth))
    for a in ATTRIBUTES:  # order-free: shared values of the attribute's multisets / the larger list
        t, p = Counter(o[a] for o in truth), Counter(o[a] for o in pred)
        out[f"{a}_set"] = sum((t & p).values()) / max(len(truth), len(pred), 1)
    return out


QUESTIONS = {
    "How many objects are there?": "count",
    "Which colors are there?": "color",
    "Which shapes are there?": "shape",
    "Which materials are there?": "material",
    "Which sizes are there?": "size",
}


def question_answer(scene: dict, kind: str) -> str:
    """Answer to a whole-image question: the object count, or the attribute's distinct values
    in vocabulary order (a canonical order the image determines, unlike the caption's layout)."""
    objs = scene_objects(scene)
    if kind == "count":
        return f"{len(objs)} objects."
    if kind not in ATTRIBUTES:
        raise ValueError(f"unknown question kind {kind!r}")
    present = {o[kind] for o in objs}
    return ", ".join(v for v in VALUES[kind] if v in present) + "."


def existence_question(rng, scene: dict, max_types: int = 2) -> tuple[str, str]:
    """A yes/no question worded like a policy condition ("Is there a large sphere?"), balanced:
    half the time the 1..max_types attribute values come from an object of the scene ("Yes."),
    otherwise they are drawn until no object matches ("No."; "Yes." if 20 draws all match).
    rng: a random.Random."""
    from trimpi.data.clevr.policy import describe
    from trimpi.data.clevr.tree import exists

    objs = scene_objects(scene)

    def draw(source: dict | None) -> dict:
        types = rng.sample(ATTRIBUTES, rng.randint(1, max_types))
        return {t: source[t] if source else rng.choice(VALUES[t]) for t in types}

    conj = draw(rng.choice(objs)) if rng.random() < 0.5 and objs else None
    for _ in range(20 if conj is None else 0):
        conj = draw(None)
        if not exists(objs, conj):
            break
    return f"Is there {describe(conj)}?", "Yes." if exists(objs, conj) else "No."


def caption_vocabulary() -> list[str]:
    """Texts covering every caption word (so a dataset-trained tokenizer encodes captions compactly)."""
    lines = [CAPTION_PROMPT]
    for s in SIZES:
        for c in COLORS:
            for m in MATERIALS:
                lines += [f"a {s} {c} {m} {shape}" for shape in SHAPES]
    return lines + [f"{n} objects:" for n in range(1, 11)]
