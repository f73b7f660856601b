"""How long `trimpi data import` takes for N records with one distinct image each (default 10,000).

    .venv/bin/python benchmarks/import_speed.py [--records 10000] [--size 160x120] [--workers 2]
    .venv/bin/python benchmarks/import_speed.py --checks-overhead [--repeats 3]

Writes a JSONL file and N PNG photos (coloured shapes on a gradient, 160x120 by default) into a
temporary directory, then imports them twice: copying the images and linking them. Every image
is decoded with PIL and hashed either way. Prints one JSON line per mode: wall seconds, records/s.

`--checks-overhead` measures what the trust rule's checks cost instead (`trimpi.trust`: every image and
scene path resolved and kept inside its folder, answer types checked for code, the output's ownership
checked): copy-mode imports with the checks on and with them replaced by plain path resolution (the code
before them), alternated `--repeats` times in one process; prints the median of each and the overhead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

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


@contextmanager
def checks_off():
    """The import without the trust rule's checks: paths resolved as before them, ownership not asked."""
    import trimpi.data.imports.media as media
    import trimpi.data.imports.policy_doc as policy_doc
    import trimpi.data.io as io

    def resolve(root, rel, where, base=None):
        return (Path(base or root) / rel).resolve()

    with mock.patch.object(media, "inside", resolve), mock.patch.object(policy_doc, "inside", resolve), \
            mock.patch.object(io, "is_owned", lambda d: True):
        yield


def checks_overhead(src: Path, tmp: Path, args) -> None:
    """Copy-mode imports with the checks on and off, alternated; medians and the overhead."""
    times: dict[str, list[float]] = {"on": [], "off": []}
    for k in range(args.repeats):
        for mode in ("on", "off") if k % 2 == 0 else ("off", "on"):
            opts = ImportOptions(examples=[src / "examples.jsonl"], policies=[str(src / "policy.md")],
                                 images="copy", workers=args.workers)
            out = tmp / f"out-{mode}-{k}"
            start = time.perf_counter()
            if mode == "on":
                import_dataset(opts, out)
            else:
                with checks_off():
                    import_dataset(opts, out)
            times[mode].append(time.perf_counter() - start)
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    print(json.dumps({"records": args.records, "mode": "copy", "workers": args.workers, "repeats": args.repeats,
                      "checks_on_s": round(on, 2), "checks_off_s": round(off, 2),
                      "overhead_s": round(on - off, 2), "overhead_pct": round(100 * (on - off) / off, 1),
                      "runs_on_s": [round(t, 2) for t in times["on"]],
                      "runs_off_s": [round(t, 2) for t in times["off"]]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checks-overhead", action="store_true", help="Time the trust checks (on vs off) instead.")
    ap.add_argument("--repeats", type=int, default=3, help="Imports per setting with --checks-overhead.")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        src = make_source(Path(tmp) / "src", args.records, width, height)
        made = time.perf_counter() - t0
        if args.checks_overhead:
            checks_overhead(src, Path(tmp), args)
            return
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
