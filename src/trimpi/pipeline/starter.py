"""The recipe `trimpi data import` writes next to the dataset (OUT/recipe.yaml), so that
`trimpi run OUT/recipe.yaml` is the second and last command a user types.

It lists the methods the data supports (the in-context baseline, Direct SFT, CoT SFT and TriMPI; without
reasoning traces `trimpi run` replaces the last two by TriMPI with direct answers and says so), the
protocols that apply (override with override_test rows, forgetting with general_test rows; referral and
judged answers need an LLM judge), a perception warm-up only when rows have scene graphs and `micro` has
no pretrained weights, and sizes meant for about 15 minutes on a 2-core CPU with the embedded `micro`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RECIPE_NAME = "recipe.yaml"
SFT_EXAMPLES = 800  # training examples an SFT step sees (epochs = this / rows, 1 to 5)
EVAL_LIMIT = 300  # test records scored per protocol
WARMUP = {"vision_steps": 300, "existence": 3, "captions": False, "epochs": 1, "lr": 5.0e-4, "batch_size": 16,
          "eval_scenes": 40}
GRPO = {"num_generations": 4, "prompts_per_step": 8, "max_steps": 6, "learning_rate": 1.0e-4,
        "max_completion_length": 96, "temperature": 0.7, "per_device_train_batch_size": 16,
        "generation_batch_size": 16}


def sft_epochs(rows: int) -> int:
    return max(1, min(5, round(SFT_EXAMPLES / max(rows, 1))))


def protocols(counts: dict[str, int], judged: bool) -> list[str]:
    out = ["accuracy", "in_context"]
    if counts.get("override_test"):
        out.append("override")
    out.append("policy_in_context")
    if judged:
        out.append("referral")
    if counts.get("general_test"):
        out.append("forgetting")
    return out + ["efficiency"]


def starter_recipe(data: Path, manifest: dict[str, Any], base_shipped: bool) -> dict[str, Any]:
    """The recipe for the imported dataset at `data` (its manifest given), as a mapping."""
    counts = manifest["counts"]
    judged = "judge" in str(manifest.get("answer_types", {}))
    epochs = sft_epochs(counts.get("train", 0))
    sft = {"epochs": epochs, "lr": 5.0e-4, "batch_size": 8, "lora_rank": 0}
    name = manifest["policies"][0] if len(manifest["policies"]) == 1 else manifest["dataset"]  # runs/<name>
    recipe: dict[str, Any] = {"name": name, "seed": 0, "model": "micro",
                              "data": {"path": str(Path(data).resolve())}}
    if manifest.get("scenes") and not base_shipped:
        recipe["warmup"] = dict(WARMUP)
    recipe["stages"] = {"cpt": {"epochs": 1, "lr": 5.0e-4, "batch_size": 8, "limit": 160}, "sft": sft,
                        "direct_sft": dict(sft), "grpo": dict(GRPO)}
    recipe["methods"] = ["in_context", "direct_sft", "cot_sft", "trimpi_grpo"]
    recipe["eval"] = {"protocols": protocols(counts, judged), "batch_size": 32, "max_new_tokens": 96,
                      "limit": EVAL_LIMIT, "efficiency_samples": 4}
    if judged:
        recipe["judge"] = {"model": "smol"}
    return recipe


def header(data: Path, manifest: dict[str, Any], recipe: dict[str, Any], base_shipped: bool) -> str:
    """The comment above the recipe: what it runs, and why some things are (not) in it."""
    has_cot = bool(manifest["counts"].get("train_cot"))
    lines = [f"Written by `trimpi data import` for {data}; run it with `trimpi run {Path(data) / RECIPE_NAME}`.",
             "Sized for about 15 minutes on a 2-core CPU with the embedded micro model (benchmarks/RESULTS.md).",
             "Methods: the base model with the policy in its prompt (in_context), Direct SFT, CoT SFT and TriMPI."]
    if not has_cot:
        lines.append("The rows have no reasoning traces: `trimpi run` runs TriMPI with direct answers instead "
                     "(VM-CPT, SFT on answers, PolicyRollout RL) and leaves CoT SFT out, saying so; "
                     f"`trimpi data cot --data {data} --template` writes rule-citing traces in seconds.")
    if "warmup" in recipe:
        lines.append("Warm-up: the rows have scene graphs, so micro's vision is pre-trained on them first.")
    elif base_shipped:
        lines.append("No warm-up: micro starts from its shipped pretrained weights.")
    else:
        lines.append("No warm-up: the rows have no scene graphs (the perception warm-up needs them), so micro "
                     "starts from random weights and its scores will sit near the majority answer.")
    if "referral" not in recipe["eval"]["protocols"]:
        lines.append("Referral (does the reasoning cite the policy?) needs an LLM judge: add `judge:` and "
                     "`referral` to eval.protocols to measure it.")
    return "".join(f"# {line}\n" for line in lines)


def write_starter(data: str | Path, manifest: dict[str, Any]) -> Path:
    """Write DATA/recipe.yaml (atomically) and return its path."""
    from trimpi.data.io import write_bytes_atomic
    from trimpi.models.presets import shipped_base_sha256

    data = Path(data)
    shipped = shipped_base_sha256() is not None
    recipe = starter_recipe(data, manifest, shipped)
    text = header(data, manifest, recipe, shipped) + yaml.safe_dump(recipe, sort_keys=False, width=110)
    path = data / RECIPE_NAME
    write_bytes_atomic(path, text.encode())
    return path
