"""A tiny dataset directory for model/collate/SFT tests: Records, PNGs, a policy, CLEVR-schema scenes."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from trimpi.data.io import write_jsonl

COLORS = {"red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20), "yellow": (255, 238, 51)}
SHAPES = ("cube", "sphere")


def _draw(path: Path, objects: list[dict]) -> None:
    im = Image.new("RGB", (120, 90), (128, 128, 128))
    d = ImageDraw.Draw(im)
    for o in objects:
        x, y = o["pixel_coords"][:2]
        r = 14 if o["size"] == "large" else 8
        box = (x - r, y - r, x + r, y + r)
        (d.rectangle if o["shape"] == "cube" else d.ellipse)(box, fill=COLORS[o["color"]])
    im.save(path)


def _scene(i: int) -> dict:
    colors = list(COLORS)
    objs = []
    for k in range(1 + i % 3):
        objs.append({
            "shape": SHAPES[(i + k) % 2], "color": colors[(i + 2 * k) % 4], "size": ("small", "large")[(i + k) % 2],
            "material": ("rubber", "metal")[k % 2], "3d_coords": [k, k, 0.5], "rotation": 0.0,
            "pixel_coords": [25 + 35 * k, 45, 10.0],
        })
    return {"image_index": i, "image_filename": f"img_{i}.png", "objects": objs}


def write_dataset(root: Path, n: int = 6, with_gta: bool = False) -> Path:
    """Write n ClevrPolicy-like records (train, train_cot, test) with images, scenes and one policy."""
    root = Path(root)
    for sub in ("images", "scenes", "policies", "policy_images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), COLORS["red"]).save(root / "policy_images" / "red.png")
    policy = {"name": "L2-Surinu", "images": ["../policy_images/red.png"],
              "text": "Policy L2-Surinu.\nCondition 1: is there an object of the color <image>? yes: Case 1. no: Case 2.",
              "root": "1", "nodes": {"1": {"if_exists": {"color": "red"}, "yes": "Case 1", "no": "Case 2"}}}
    (root / "policies" / "L2-Surinu.json").write_text(json.dumps(policy))
    rows = []
    for i in range(n):
        scene = _scene(i)
        (root / "scenes" / f"scene_{i}.json").write_text(json.dumps(scene))
        _draw(root / "images" / f"img_{i}.png", scene["objects"])
        case = "Case 1" if any(o["color"] == "red" for o in scene["objects"]) else "Case 2"
        rows.append({
            "id": f"r{i}", "task": "clevr", "split": "train", "policy": "L2-Surinu",
            "policy_path": "policies/L2-Surinu.json", "images": [f"images/img_{i}.png"],
            "scene": f"scenes/scene_{i}.json",
            "query": "According to Policy: L2-Surinu, what should be the response for the given image?",
            "answer": case, "response": f"\\boxed{{{case}}}",
            "reasoning": f"Condition 1: a red object? {'yes' if case == 'Case 1' else 'no'}. So {case}.", "meta": {},
        })
    if with_gta:
        rows.append({
            "id": "g0", "task": "gta", "split": "train", "policy": "GTA", "policy_path": "policies/L2-Surinu.json",
            "images": ["images/img_0.png", "images/img_1.png"], "scene": None,
            "query": "Profile: account A. Which tool reads the text?", "answer": '{"name": "OCR_v5"}',
            "response": '{"name": "OCR_v5", "arguments": {"image": "image/img_0.png"}}',
            "reasoning": "Credits 100 means OCR v5.", "meta": {},
        })
    write_jsonl(root / "train.jsonl", rows)
    write_jsonl(root / "train_cot.jsonl", rows)
    write_jsonl(root / "test.jsonl", rows[:2])
    return root
