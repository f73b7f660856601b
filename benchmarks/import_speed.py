"""How long `trimpi data import` takes for N records with one distinct image each (default 10,000).

    .venv/bin/python benchmarks/import_speed.py [--records 10000] [--size 160x120] [--workers 2]

Writes a JSONL file and N PNG photos (coloured shapes on a gradient, 160x120 by default) into a
temporary directory, then imports them twice: copying the images and linking them. Every image
is decoded with PIL and hashed either way. Prints one JSON line per mode: wall seconds, records/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trimpi.data.imports import ImportOptions, import_dataset


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = np.linspace(60, 200, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    im = Image.fromarray(base)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 6))):
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        r = int(rng.integers(6, 20))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + r, y + r], fill=fill)
    return im


def make_source(root: Path, n: int, width: int, height: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True)
    (root / "policy.md").write_text("# Policy\nApprove small items, reject large ones.\n")
    with (root / "examples.jsonl").open("w") as f:
        for i in range(n):
            photo(rng, width, height).save(root / "photos" / f"{i:05d}.png")
            f.write(json.dumps({"id": f"ex{i}", "query": f"Request {i}: approve?", "images": [f"photos/{i:05d}.png"],
                                "answer": "approve" if i % 2 else "reject"}) + "\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        src = make_source(Path(tmp) / "src", args.records, width, height)
        made = time.perf_counter() - t0
        for mode in ("copy", "link"):
            opts = ImportOptions(examples=[src / "examples.jsonl"], policies=[str(src / "policy.md")],
                                 images=mode, workers=args.workers)
            start = time.perf_counter()
            manifest = import_dataset(opts, Path(tmp) / f"out-{mode}")
            wall = time.perf_counter() - start
            print(json.dumps({"records": args.records, "images": manifest["images"], "size": args.size,
                              "mode": mode, "workers": args.workers, "wall_s": round(wall, 2),
                              "records_per_s": round(args.records / wall, 1), "source_build_s": round(made, 1),
                              "machine": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
