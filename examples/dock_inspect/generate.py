"""Generate the Dock-Inspect example: a folder of crate photos and a CSV that names each photo's action.

    python examples/dock_inspect/generate.py --out runs/dock_inspect/source

Writes OUT/photos/crate-NNNN.png and OUT/inspections.csv (columns crate, note, photo, action): the shape of
data a user brings, with no split column, no reasoning and no scene graphs. The photos are SYNTHETIC
(CLEVR-like scenes rendered by trimpi's ray caster, 160x120); the actions come from the four rules of
policy.md written as code in `decide`. The same seed gives byte-identical output.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from trimpi.data.clevr.render import encode_png, render_numpy
from trimpi.data.clevr.scene import sample_scene
from trimpi.data.io import staged_directory

WIDTH, HEIGHT = 160, 120
NOTES = ("Crate {n} from the north yard.", "Crate {n}, second delivery today.", "Crate {n}; the lid was loose.",
         "Crate {n} for the morning truck.", "Crate {n}, label half torn.")


def decide(objects: list[dict]) -> str:
    """The action under policy.md: the first of the four rules that applies."""
    if any(o["size"] == "large" and o["material"] == "metal" and o["shape"] == "sphere" for o in objects):
        return "REJECT"
    if any(o["color"] == "red" and o["shape"] == "cylinder" for o in objects):
        return "INSPECT"
    return "SHIP" if len(objects) >= 4 else "HOLD"


def generate(out: Path, rows: int = 280, seed: int = 0) -> dict[str, int]:
    """Render `rows` crates and write the CSV; returns the count of each action."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    with staged_directory(out, overwrite=True) as stage:
        (stage / "photos").mkdir()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["crate", "note", "photo", "action"])
        for i in range(rows):
            name = f"crate-{i:04d}"
            scene = sample_scene(rng, WIDTH, HEIGHT, f"{name}.png", i, "train", min_objects=2, max_objects=5,
                                 min_pixels=60)
            (stage / "photos" / f"{name}.png").write_bytes(encode_png(render_numpy(scene, WIDTH, HEIGHT)[0]))
            action = decide(scene["objects"])
            counts[action] = counts.get(action, 0) + 1
            note = NOTES[i % len(NOTES)].format(n=4000 + i)
            writer.writerow([name, f"{note} What should the dock do with it?", f"photos/{name}.png", action])
        (stage / "inspections.csv").write_text(buf.getvalue())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=280)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = generate(args.out, args.rows, args.seed)
    print(f"wrote {args.out}/inspections.csv and {sum(counts.values())} photos; actions: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
