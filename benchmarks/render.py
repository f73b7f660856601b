"""Rendering benchmark: the numpy ray caster against Blender Cycles (16 spp, denoised) on the same scenes.

    python benchmarks/render.py [--scenes 5] [--pool 50] [--blender-python .venv-blender/bin/python] [--record]
    python benchmarks/render.py --no-blender [--scenes 5] [--pool 50]

Prints a markdown table; with --record, replaces the "Rendering" section of benchmarks/RESULTS.md.
`--no-blender` times the numpy renderer only (no bpy interpreter needed) and says so in its output;
it cannot be recorded, since the section's comparison would be missing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trimpi.data.clevr import blender_render as br
from trimpi.data.clevr.render import render_numpy, render_pool
from trimpi.data.clevr.scene import sample_scene
from trimpi.errors import TrimpiError

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"nproc {len(os.sched_getaffinity(0))}, {model}, load average at start {load}"


def scenes(n: int, width: int, height: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, width, height, f"bench_{i:06d}.png", i, "bench") for i in range(n)]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_numpy(batch: list[dict], width: int, height: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image of render_numpy in this process (one core), after a warm-up render."""
    render_numpy(batch[0], width, height)
    start, cpu = time.perf_counter(), time.process_time()
    for s in batch:
        render_numpy(s, width, height)
    return (time.perf_counter() - start) / len(batch), (time.process_time() - cpu) / len(batch)


def time_blender(batch: list[dict], width: int, height: int, python: str, out: Path) -> tuple[float, float, float]:
    """(steady wall s/image between finished renders, wall s/image with start-up, CPU s/image with start-up)."""
    import json

    job = out / "job.json"
    job.write_text(json.dumps(br.make_job(batch, [out / f"b{i}.png" for i in range(len(batch))], width, height)))
    start, cpu = time.perf_counter(), child_cpu()
    proc = subprocess.Popen([python, str(br.SCRIPT), str(job)], stdout=subprocess.PIPE, text=True)
    stamps = [time.perf_counter() for line in proc.stdout if line.startswith("rendered ")]
    if proc.wait() != 0 or len(stamps) != len(batch):
        sys.exit(f"Blender rendering failed (exit {proc.returncode})")
    total = (stamps[-1] - start) / len(batch)
    steady = (stamps[-1] - stamps[0]) / (len(batch) - 1) if len(batch) > 1 else total
    return steady, total, (child_cpu() - cpu) / len(batch)


def time_pool(batch: list[dict], width: int, height: int, workers: int, out: Path) -> tuple[float, float]:
    """(wall, CPU) s/image of render_pool (render + PNG + atomic write, worker start-up included)."""
    start, cpu = time.perf_counter(), time.process_time() + child_cpu()
    render_pool(batch, [out / f"w{workers}_{i}.png" for i in range(len(batch))], width, height,
                workers=workers, progress=False)
    return (time.perf_counter() - start) / len(batch), (time.process_time() + child_cpu() - cpu) / len(batch)


def record(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Rendering\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def blender_rows(same: list[dict], width: int, height: int, python: str, out: Path, np_s: float,
                 np_cpu: float) -> tuple[list[tuple], float]:
    """The Blender rows of the table and Blender's steady wall seconds per image."""
    steady, total, cpu = time_blender(same, width, height, python, out)
    return [("Blender Cycles 16 spp + denoise (steady, between images)", len(same), f"{steady:.2f}", "",
             f"{steady / np_s:.0f}x slower"),
            ("Blender Cycles 16 spp + denoise (incl. start-up)", len(same), f"{total:.2f}", f"{cpu:.2f}",
             f"{total / np_s:.0f}x slower (CPU: {cpu / np_cpu:.0f}x)")], steady


def measure(args, width: int, height: int, python: str | None) -> tuple[list[tuple], float | None]:
    """Every row of the table, and Blender's steady wall s/image (None without Blender)."""
    batch = scenes(max(args.scenes, args.pool), width, height, args.seed)
    same = batch[:args.scenes]
    with tempfile.TemporaryDirectory(prefix="trimpi-bench-") as tmp:
        np_s, np_cpu = time_numpy(same, width, height)
        rows = [("numpy ray caster (render only, in process)", args.scenes, f"{np_s:.4f}", f"{np_cpu:.4f}", "1")]
        bl_steady = None
        if python is not None:
            more, bl_steady = blender_rows(same, width, height, python, Path(tmp), np_s, np_cpu)
            rows += more
        for workers in (1, 2):
            wall, cpu = time_pool(batch[:args.pool], width, height, workers, Path(tmp))
            rows.append((f"numpy render_pool, {workers} worker{'s' if workers > 1 else ''} (render + PNG + write)",
                         args.pool, f"{wall:.4f}", f"{cpu:.4f}", ""))
    return rows, (bl_steady / np_s if bl_steady is not None else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=5, help="scenes rendered by both renderers")
    ap.add_argument("--pool", type=int, default=50, help="images for the render_pool worker timings")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blender-python", default=None, help="bpy interpreter (default .venv-blender/bin/python)")
    ap.add_argument("--no-blender", action="store_true", help="time the numpy renderer only (no bpy needed)")
    ap.add_argument("--record", action="store_true", help="update the Rendering section of benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.no_blender and (args.record or args.blender_python):
        sys.exit("--no-blender leaves Blender out: it takes neither --record nor --blender-python")
    width, height = (int(v) for v in args.size.split("x"))
    try:
        python = None if args.no_blender else br.resolve_blender_python(args.blender_python)
    except TrimpiError as e:
        sys.exit(f"{e} (or pass --no-blender to time the numpy renderer only)")
    rows, speedup = measure(args, width, height, python)
    table = "| renderer | images | wall s / image | CPU s / image | vs numpy (wall) |\n|---|---|---|---|---|\n"
    table += "".join(f"| {' | '.join(str(c) for c in r)} |\n" for r in rows)
    cmd = "python benchmarks/render.py " + " ".join(sys.argv[1:])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versus = ("- Blender not run (--no-blender): no comparison" if speedup is None else
              f"- numpy renderer is **{speedup:.0f}x** faster than Blender per image (target >= 50x)")
    which = "the numpy renderer" if speedup is None else "both renderers"
    section = (f"## Rendering\n\n{width}x{height}, the same {args.scenes} sampled scenes (seed {args.seed}) for {which}"
               f"; worker timings over {args.pool} scenes.\n\n- command: `{cmd.strip()}`\n- date: {when}\n"
               f"- machine: {machine()} (a shared machine: wall times include waiting for the CPU; CPU times do not)\n"
               f"{versus}\n\n{table}\n")
    print(section)
    if args.record:
        record(section)
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
