"""What an imported dataset allows, decided before planning: methods without reasoning traces, a warm-up
without scene graphs. Each change is one line the run prints (and run.json keeps under "notes").

- No traces (the file the recipe's VM-CPT / CoT SFT read, train_cot.jsonl unless `stages.<s>.split` names
  another, is missing or has no reasoning): every method that needs them gives way to its answer-only
  counterpart (CoT SFT → Direct SFT, TriMPI → TriMPI with direct answers: VM-CPT on policy + query + answer,
  SFT on answers, PolicyRollout RL); methods without one are left out. The note says how to get traces.
- No scene graphs (no record of train / train_cot / general_test has `scene`): the perception warm-up, which
  pre-trains the vision tower on them, is left out, and the note says what the model starts from.

Only datasets given as `data.path` are adapted: built ClevrPolicy and GTAPolicy sets have both.
"""

from __future__ import annotations

import json
from pathlib import Path

from trimpi.pipeline.recipe import METHODS, Recipe, needs_traces

ANSWER_ONLY = {"cot_sft": "direct_sft", "trimpi_grpo": "trimpi_grpo_answers", "trimpi_dapo": "trimpi_dapo_answers"}
SCENE_FILES = ("train.jsonl", "train_cot.jsonl", "general_test.jsonl")  # what the warm-up reads (train.warmup)


def trace_split(recipe: Recipe) -> str:
    """The file VM-CPT and CoT SFT read: `stages.sft.split` (else `stages.cpt.split`), default train_cot."""
    for section in ("sft", "cpt"):
        split = (recipe.stages.get(section) or {}).get("split")
        if split:
            return split.removesuffix(".jsonl")
    return "train_cot"


def _rows(path: Path):
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def has_traces(root: Path, split: str) -> bool:
    """True when DIR/<split>.jsonl holds at least one record with reasoning."""
    return any(r.get("reasoning") for r in _rows(root / f"{split}.jsonl"))


def has_scenes(root: Path) -> bool:
    return any(r.get("scene") for name in SCENE_FILES for r in _rows(root / name))


def traces_hint(root: Path | str) -> str:
    """The two ways to get reasoning traces, in one phrase."""
    return (f"get traces with `trimpi data cot --data {root} --template` (rule-citing traces built from the "
            f"policy's own rules, seconds) or `trimpi data cot --data {root} --teacher URL|MODEL` (an LLM writes them)")


def without_traces(recipe: Recipe, root: Path) -> tuple[list[str], str]:
    """(the recipe's methods with every trace-reading one replaced or dropped, the note saying so)."""
    split = trace_split(recipe)
    needing = [m for m in recipe.methods if needs_traces(m)]
    methods = list(dict.fromkeys(ANSWER_ONLY.get(m, m) for m in recipe.methods if m not in needing or m in ANSWER_ONLY))
    label = lambda ms: ", ".join(METHODS[m][0] for m in ms)  # noqa: E731
    instead = [m for m in methods if m not in recipe.methods]
    note = (f"note: {root / (split + '.jsonl')} has no reasoning traces: {label(needing)} need them"
            + (f"; running {label(instead)} instead" if instead else "")
            + (f"; left out: {label([m for m in needing if m not in ANSWER_ONLY])}"
               if any(m not in ANSWER_ONLY for m in needing) else "")
            + f". {traces_hint(root)}")
    return methods, note


def adapt_recipe(recipe: Recipe, base_shipped: bool) -> tuple[Recipe, list[str]]:
    """The recipe as the dataset at `data.path` allows it to run, and one note per change.
    `base_shipped`: whether the `micro` preset has pretrained weights (otherwise it starts random)."""
    if recipe.data.path is None or not Path(recipe.data.path).is_dir():
        return recipe, []
    root = Path(recipe.data.path)
    notes: list[str] = []
    update = {}
    if any(needs_traces(m) for m in recipe.methods) and not has_traces(root, trace_split(recipe)):
        methods, note = without_traces(recipe, root)
        notes.append(note)
        update["methods"] = methods or list(recipe.methods)  # nothing left: check_data names the missing file
    if recipe.warmup is not None and recipe.base is None and not has_scenes(root):
        start = "its pretrained weights" if base_shipped or recipe.model != "micro" else "random weights"
        notes.append(f"note: no perception warm-up: {root} has no scene graphs (the warm-up pre-trains vision on "
                     f"them); `{recipe.model}` starts from {start}")
        update["warmup"] = None
    return (recipe.model_copy(update=update) if update else recipe), notes
