"""What keeps the pretraining corpus apart from every evaluation dataset.

Names: `trimpi data clevr` names its policies `L<depth>-<Word>` with a word of exactly three
consonant-vowel syllables (`policy.policy_name`). Pretraining policies are named with four or
five syllables, so no pretraining name can equal a ClevrPolicy name, whatever the build's seed.

Seeds: every pretraining draw comes from `np.random.default_rng([STREAM, part, seed, index])`,
a 4-word key whose first word (STREAM) is no ClevrPolicy seed a build uses by default; builds
draw from `[cfg.seed, stream < 100, ...]`, so the keys coincide only for a build run with
`--seed 91750321` and a component stream equal to a pretraining part.

Exclusions: a corpus may also be given dataset directories (`exclude`): any scene whose layout
equals one of theirs and any policy tree equal to one of theirs is skipped (redrawn), so
disjointness from a given evaluation set is checked, not only likely.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trimpi.data.clevr.policy import CONSONANTS, VOWELS
from trimpi.data.clevr.tree import tree_key
from trimpi.data.io import read_json
from trimpi.errors import DataError

STREAM = 91_750_321
# Parts of the key: one generator per item and purpose, so adding a kind changes nothing in the others.
ITEM, SCENE, POLICY, NAME, AUGMENT, OVERRIDE = range(6)
SYLLABLES = (4, 5)  # ClevrPolicy names have exactly 3


def rng_for(part: int, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([STREAM, part, seed, index])


def pretrain_name(rng: np.random.Generator, depth: int) -> str:
    """`L<depth>-<Word>` with a 4- or 5-syllable word: never a ClevrPolicy evaluation name."""
    n = int(rng.integers(SYLLABLES[0], SYLLABLES[1] + 1))
    word = "".join(CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(n))
    return f"L{depth}-{word.capitalize()}"


def name_syllables(name: str) -> int:
    """Syllables of the word of a `L<depth>-<Word>` name (0 when the name has another form)."""
    word = name.partition("-")[2].lower()
    if not word or len(word) % 2 or any(c not in CONSONANTS for c in word[::2]) or any(c not in VOWELS
                                                                                      for c in word[1::2]):
        return 0
    return len(word) // 2


def scene_key(objects: list[dict]) -> str:
    """A scene's layout: attributes and positions (rounded), independent of image size and file name."""
    rows = sorted((o["shape"], o["color"], o["size"], o["material"], round(o["3d_coords"][0], 3),
                   round(o["3d_coords"][1], 3)) for o in objects)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


@dataclass
class Exclusions:
    """Scene layouts, policy trees and policy names the corpus must never contain."""

    scenes: set[str] = field(default_factory=set)
    trees: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    @classmethod
    def from_datasets(cls, roots: list[str | Path]) -> Exclusions:
        """Every scene graph and every decision-tree policy found under the given directories."""
        out = cls()
        for root in roots:
            if not Path(root).is_dir():
                raise DataError(f"{root}: dataset directory to exclude not found")
            for path in sorted(Path(root).rglob("*.json")):
                data = read_json(path)
                scenes = data.get("scenes") if isinstance(data, dict) else None  # a CLEVR release's scenes file
                for scene in (scenes if isinstance(scenes, list) else [data]):
                    if isinstance(scene, dict) and isinstance(scene.get("objects"), list):
                        out.scenes.add(scene_key(scene["objects"]))
                if isinstance(data, dict) and "nodes" in data and "root" in data:
                    out.trees.add(tree_key(data))
                    out.names.add(str(data.get("name", "")))
        return out
