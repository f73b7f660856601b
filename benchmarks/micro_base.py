"""The shipped micro base's measured numbers (benchmarks/RESULTS.md), on held-out scenes and never-seen policies.

Builds the evaluation sets (ClevrPolicy T and M at depths 2, 4 and 6 at the demo's image size,
numpy renders; optionally Blender renders and a CLEVR v1.0 release) with seeds the pretraining
corpus never uses and policy names it cannot produce (3 syllables; the corpus's have 4-5), then runs
`trimpi eval` on the base: perception (existence balanced accuracy per value and pair),
in_context (the policy in the prompt) and forgetting (general scene questions, the baseline that
later stages are compared with). Prints a markdown table with chance and per-policy majority.

    .venv/bin/python benchmarks/micro_base.py --model src/trimpi/models/base --out runs/micro-base-eval \\
        [--blender-python .venv-blender/bin/python] [--clevr-dir /data/CLEVR_v1.0] [--limit N] [--dry-run] [--build-only]

Pretraining with `--exclude` on these directories makes their disjointness checked, not only by construction.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

SEED = 2026  # evaluation builds; the pretraining corpus draws from its own stream (trimpi.data.pretrain.split)
SIZE = "160x120"  # the demo's image size


def build_commands(out: Path, blender: str | None, clevr_dir: str | None, test: int) -> dict[str, list[str]]:
    """trimpi data clevr command of each evaluation build, by name."""
    common = ["--depth", "2", "--depth", "4", "--depth", "6", "--policies", "10", "--train-per-policy", "20", "--test", str(test),
              "--image-size", SIZE, "--trace", "compact", "--seed", str(SEED)]
    builds = {f"numpy-{v}": ["data", "clevr", "--variant", v, *common, "--out", str(out / f"numpy-{v}")] for v in "TM"}
    if blender:
        builds["blender-T"] = ["data", "clevr", "--variant", "T", *common, "--renderer", "blender",
                               "--blender-python", blender, "--out", str(out / "blender-T")]
    if clevr_dir:
        builds["clevr-T"] = ["data", "clevr", "--variant", "T", *common, "--clevr-dir", clevr_dir,
                             "--out", str(out / "clevr-T")]
    return builds


def trimpi(args: list[str], dry_run: bool) -> None:
    cmd = [sys.executable, "-m", "trimpi", *args]
    print("$", shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def table(out: Path, builds: list[str]) -> str:
    from trimpi.report.baselines import dataset_lines

    rows = ["| build | setting | single bal. acc. (min) | pair bal. acc. (min) | in-context | chance | majority "
            "| general questions |", "|---|---|---|---|---|---|---|---|"]
    for name in builds:
        for setting in sorted(p for p in (out / name).iterdir() if (p / "test.jsonl").is_file()):
            scores_path = out / "eval" / name / setting.name / "scores.json"
            if not scores_path.is_file():
                continue
            p = json.loads(scores_path.read_text())["protocols"]
            per, ic, fg = p.get("perception", {}), p.get("in_context", {}), p.get("forgetting", {})
            lines = dataset_lines(setting)
            fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            rows.append(f"| {name} | {setting.name} | {fmt(per.get('single_balanced_accuracy'))} "
                        f"({fmt(per.get('single_min'))}) | {fmt(per.get('pair_balanced_accuracy'))} "
                        f"({fmt(per.get('pair_min'))}) | {fmt(ic.get('score'))} | {fmt(lines.get('chance'))} "
                        f"| {fmt(lines.get('majority'))} | {fmt(fg.get('score'))} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="src/trimpi/models/base")
    ap.add_argument("--out", type=Path, default=Path("runs/micro-base-eval"))
    ap.add_argument("--blender-python")
    ap.add_argument("--clevr-dir")
    ap.add_argument("--test", type=int, default=100, help="test instances per setting")
    ap.add_argument("--limit", type=int, help="evaluate the first N records of each file only")
    ap.add_argument("--build-only", action="store_true", help="build the evaluation sets (to --exclude them "
                    "from pretraining), evaluate nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args()
    builds = build_commands(a.out, a.blender_python, a.clevr_dir, a.test)
    for name, args in builds.items():
        if not (a.out / name).is_dir():
            trimpi(args, a.dry_run)
        if a.build_only:
            continue
        trimpi(["eval", "--model", a.model, "--data", str(a.out / name), "--out", str(a.out / "eval" / name),
                "--protocols", "perception,in_context,forgetting", "--max-new-tokens", "320", "--no-progress",
                *(["--limit", str(a.limit)] if a.limit else [])], a.dry_run)
    if not (a.dry_run or a.build_only):
        print(table(a.out, list(builds)))


if __name__ == "__main__":
    main()
