"""The shipped micro base's measured numbers (benchmarks/RESULTS.md), on held-out scenes and never-seen policies.

Builds the evaluation sets (ClevrPolicy T and M at depths 2, 4 and 6 at the demo's image size,
numpy renders; optionally Blender renders and a CLEVR v1.0 release) with seeds the pretraining
corpus never uses and policy names it cannot produce (3 syllables; the corpus's have 4-5), then runs
`trimpi eval` on the base: perception (existence balanced accuracy per value and pair; once per build,
on its depth-2 setting's test scenes, which every depth shares), in_context (the policy in the prompt)
and forgetting (general scene questions, the baseline that later stages are compared with) on every
setting. Prints a markdown table with chance and per-policy majority. With `--run` (the pretraining run
directory, which still holds the perception head that export drops) it also prints, on the same test
scenes, the language model's and the head's balanced accuracy per attribute kind and their AUCs.

    .venv/bin/python benchmarks/micro_base.py --model src/trimpi/models/base --out runs/micro-base-eval \\
        [--run runs/micro-base] [--blender-python .venv-blender/bin/python] [--clevr-dir /data/CLEVR_v1.0] \\
        [--limit N] [--dry-run] [--build-only]

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
KINDS = ("color", "shape", "size", "material")


def build_commands(out: Path, blender: str | None, clevr_dir: str | None, test: int) -> dict[str, list[str]]:
    """trimpi data clevr command of each evaluation build, by name."""
    common = ["--depth", "2", "--depth", "4", "--depth", "6", "--policies", "10", "--train-per-policy", "20",
              "--test", str(test), "--image-size", SIZE, "--trace", "compact", "--seed", str(SEED)]
    builds = {f"numpy-{v}": ["data", "clevr", "--variant", v, *common, "--out", str(out / f"numpy-{v}")] for v in "TM"}
    if blender:  # Blender costs ~1.4 CPU-s an image: depth 2 only, one training pair per policy
        builds["blender-T"] = ["data", "clevr", "--variant", "T", "--depth", "2", "--policies", "10",
                               "--train-per-policy", "1", "--test", str(test), "--image-size", SIZE, "--trace",
                               "compact", "--seed", str(SEED), "--renderer", "blender", "--blender-python", blender,
                               "--out", str(out / "blender-T")]
    if clevr_dir:
        builds["clevr-T"] = ["data", "clevr", "--variant", "T", *common, "--clevr-dir", clevr_dir,
                             "--out", str(out / "clevr-T")]
    return builds


def trimpi(args: list[str], dry_run: bool) -> None:
    cmd = [sys.executable, "-m", "trimpi", *args]
    print("$", shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def settings(build: Path) -> list[Path]:
    return sorted(p for p in build.iterdir() if (p / "test.jsonl").is_file())


def table(out: Path, builds: list[str]) -> str:
    from trimpi.report.baselines import dataset_lines

    rows = ["| build | setting | single bal. acc. (min) | pair bal. acc. (min) | in-context | chance | majority "
            "| general questions |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"
    for name in builds:
        perception = out / "eval" / name / "perception" / "scores.json"
        per = json.loads(perception.read_text())["protocols"].get("perception", {}) if perception.is_file() else {}
        for setting in settings(out / name):
            scores_path = out / "eval" / name / setting.name / "scores.json"
            if not scores_path.is_file():
                continue
            p = json.loads(scores_path.read_text())["protocols"]
            ic, fg = p.get("in_context", {}), p.get("forgetting", {})
            lines = dataset_lines(setting)
            shown = per if setting.name.endswith("-d2") else {}
            rows.append(f"| {name} | {setting.name} | {fmt(shown.get('single_balanced_accuracy'))} "
                        f"({fmt(shown.get('single_min'))}) | {fmt(shown.get('pair_balanced_accuracy'))} "
                        f"({fmt(shown.get('pair_min'))}) | {fmt(ic.get('score'))} | {fmt(lines.get('chance'))} "
                        f"| {fmt(lines.get('majority'))} | {fmt(fg.get('score'))} |")
    return "\n".join(rows)


def breakdown(run: Path, dataset: Path) -> dict:
    """The language model's and the head's perception per kind, with AUCs, on a setting's test scenes."""
    import torch

    from trimpi.data.io import read_jsonl
    from trimpi.data.schema import Record
    from trimpi.eval.perception import scene_images
    from trimpi.train.perception import PerceptionHead, existence_labels
    from trimpi.train.pretrain import build_model, load_state, options_from_run, run_progress, stage_folder
    from trimpi.train.pretrain.gates import lm_perception

    opts = options_from_run(run)
    last = max(k for k, s in enumerate(run_progress(run)["stages"]) if s["step"] or s["done"])
    state = load_state(stage_folder(run, last, opts.stages[last].name) / "checkpoint" / "state.pt")
    model, processor = build_model(opts)
    model.load_state_dict(state["model"])
    head = PerceptionHead(opts.arch.hidden, len(existence_labels()))
    head.load_state_dict(state["head"])
    records = [Record.from_dict(r) for r in read_jsonl(dataset / "test.jsonl")]
    items = [{"image": image, "objects": objects} for image, objects in scene_images(dataset, records)]
    with torch.no_grad():
        return lm_perception(model, processor, head, items)


def breakdown_table(results: dict[str, dict]) -> str:
    rows = ["| build | reader | single | pair | " + " | ".join(KINDS) + " | AUC single | AUC pair | weakest |",
            "|---|---|---|---|" + "---|" * len(KINDS) + "---|---|---|"]
    for name, result in results.items():
        for reader in ("lm", "head"):
            m = result[reader]
            rows.append(f"| {name} | {'language model' if reader == 'lm' else 'perception head'} | {m['single']:.3f} "
                        f"| {m['pair']:.3f} | " + " | ".join(f"{m[k]:.3f}" for k in KINDS)
                        + f" | {m['single_auc']:.3f} | {m['pair_auc']:.3f} | {m.get('weakest', '–')} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="src/trimpi/models/base")
    ap.add_argument("--run", type=Path, help="the pretraining run directory (for the head's numbers)")
    ap.add_argument("--out", type=Path, default=Path("runs/micro-base-eval"))
    ap.add_argument("--blender-python")
    ap.add_argument("--clevr-dir")
    ap.add_argument("--test", type=int, default=100, help="test instances per setting")
    ap.add_argument("--limit", type=int, help="in-context and general questions: the first N records of each file")
    ap.add_argument("--build-only", action="store_true", help="build the evaluation sets (to --exclude them "
                    "from pretraining), evaluate nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args()
    builds = build_commands(a.out, a.blender_python, a.clevr_dir, a.test)
    breakdowns = {}
    for name, args in builds.items():
        if not (a.out / name).is_dir():
            trimpi(args, a.dry_run)
        if a.build_only:
            continue
        built = settings(a.out / name) if (a.out / name).is_dir() else [a.out / name / "SETTING"]  # dry run
        first = built[0]
        common = ["eval", "--model", a.model, "--max-new-tokens", "320", "--no-progress"]
        trimpi([*common, "--data", str(first), "--out", str(a.out / "eval" / name / "perception"),
                "--protocols", "perception"], a.dry_run)
        for setting in built:
            trimpi([*common, "--data", str(setting), "--out", str(a.out / "eval" / name / setting.name),
                    "--protocols", "in_context,forgetting", *(["--limit", str(a.limit)] if a.limit else [])],
                   a.dry_run)
        if a.run and not a.dry_run:
            breakdowns[name] = breakdown(a.run, first)
    if not (a.dry_run or a.build_only):
        print(table(a.out, list(builds)))
        if breakdowns:
            print()
            print(breakdown_table(breakdowns))


if __name__ == "__main__":
    main()
