"""Shared helpers for the RL tests: a tiny dataset directory and a tiny Idefics3 model."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLORS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 200, 60), "gray": (128, 128, 128)}
POLICY_TEXT = "Policy L2-Test. Condition 1: is there a red object? yes: Case 1. no: Case 2."


def make_dataset(root: Path, n: int = 8, with_policy_image: bool = False) -> Path:
    """A dataset dir with train.jsonl (n records), images/ and policies/p0.json."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "policies").mkdir(exist_ok=True)
    names = list(COLORS)
    rows = []
    for i in range(n):
        color = names[i % len(names)]
        Image.new("RGB", (112, 112), COLORS[color]).save(root / "images" / f"{i}.png")
        case = "Case 1" if color == "red" else "Case 2"
        rows.append({
            "id": f"r{i}", "task": "clevr", "split": "train", "policy": "L2-Test", "policy_path": "policies/p0.json",
            "images": [f"images/{i}.png"], "query": "According to Policy: L2-Test, what should be the response?",
            "answer": case, "response": f"\\boxed{{{case}}}",
        })
    text, images = POLICY_TEXT, []
    if with_policy_image:
        Image.new("RGB", (112, 112), COLORS["red"]).save(root / "policies" / "red.png")
        text, images = POLICY_TEXT + " The color red looks like <image>.", ["red.png"]
    (root / "policies" / "p0.json").write_text(json.dumps({"name": "L2-Test", "text": text, "images": images}))
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def tiny_model(seed: int = 0):
    from trimpi.models.tiny import build_tiny

    texts = [POLICY_TEXT, "According to Policy: L2-Test, what should be the response?", "<think>x</think> \\boxed{Case 1}"]
    return build_tiny("idefics3", texts=texts * 5, seed=seed)
