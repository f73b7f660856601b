"""Perception warm-up: teach a randomly initialised vision tower to name object attributes.

Each distinct scene of the dataset (records with a `scene` graph) becomes one captioning
example: [image, "Describe the objects from left to right."] → the scene-graph caption.
Scenes of the test split are held out and used to measure attribute accuracy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from trimpi.data.io import read_json, write_json
from trimpi.data.schema import load_records
from trimpi.errors import DataError
from trimpi.train.captions import ATTRIBUTES, CAPTION_PROMPT, attribute_scores, caption

TRAIN_FILES = ("train.jsonl", "train_cot.jsonl", "general_test.jsonl")
EVAL_FILES = ("test.jsonl",)


@dataclass
class WarmupOptions:
    data: str
    out: str
    model: str = "micro"
    epochs: float = 30
    lr: float = 2e-3
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = -1
    seed: int = 0
    eval_scenes: int = 100
    save_steps: int = 200
    report_to: str = "none"
    overwrite: bool = False


def scene_items(data: str | Path, files=TRAIN_FILES, exclude: set[str] = frozenset()) -> list[dict]:
    """Distinct (image, scene) pairs of the given JSONL files: [{"image", "scene"}] (absolute paths)."""
    root = Path(data)
    seen, items = set(), []
    for name in files:
        if not (root / name).is_file():
            continue
        for r in load_records(root / name):
            if not r.scene or len(r.images) != 1 or r.images[0] in seen or r.images[0] in exclude:
                continue
            seen.add(r.images[0])
            items.append({"image": str(root / r.images[0]), "scene": str(root / r.scene)})
    return items


def caption_messages(image: str, target: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": [{"type": "image", "path": image}, {"type": "text", "text": CAPTION_PROMPT}]}]
    if target is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return msgs


def caption_examples(items: list[dict]) -> list[dict]:
    return [{"id": it["image"], "messages": caption_messages(it["image"], caption(read_json(it["scene"])))}
            for it in items]


@torch.no_grad()
def generate_captions(model, processor, images: list[str], batch_size: int = 16, max_new_tokens: int = 80) -> list[str]:
    """Greedy captions for images (left-padded batches)."""
    from trimpi.models.processing import encode, tokenizer_of

    tok = tokenizer_of(processor)
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        chunk = [caption_messages(p) for p in images[i:i + batch_size]]
        batch = encode(processor, chunk, add_generation_prompt=True, padding_side="left").to(model.device)
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def attribute_accuracy(model, processor, items: list[dict]) -> dict[str, float]:
    """Mean per-attribute accuracy (position-matched objects) and object-count accuracy over scenes."""
    preds = generate_captions(model, processor, [it["image"] for it in items])
    rows = [attribute_scores(p, read_json(it["scene"])) for p, it in zip(preds, items, strict=True)]
    keys = rows[0].keys() if rows else ()
    result = {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in keys}
    result["attributes"] = sum(result.get(a, 0.0) for a in ATTRIBUTES) / len(ATTRIBUTES)
    result["attributes_set"] = sum(result.get(f"{a}_set", 0.0) for a in ATTRIBUTES) / len(ATTRIBUTES)
    result["scenes"] = len(rows)
    return result


def run_warmup(opts: WarmupOptions, callbacks=()) -> dict:
    """Caption-train `opts.model` (default: a fresh micro preset) on the dataset's scenes; save to `opts.out`."""
    from trimpi.models.loading import load_model
    from trimpi.train.sft import StageOptions, run_stage

    eval_items = scene_items(opts.data, EVAL_FILES)[: opts.eval_scenes]
    held = {it["image"] for it in eval_items}
    train_items = [it for it in scene_items(opts.data, TRAIN_FILES) if it["image"] not in held]
    if not train_items:
        raise DataError(f"{opts.data}: no records with a scene graph and one image to caption")
    model, processor = load_model(opts.model, dtype="float32", device="cpu", data=opts.data, seed=opts.seed)
    stage = StageOptions(data=opts.data, model=opts.model, out=opts.out, stage="sft", epochs=opts.epochs, lr=opts.lr,
                         batch_size=opts.batch_size, grad_accum=opts.grad_accum, lora_rank=0, max_steps=opts.max_steps,
                         seed=opts.seed, save_steps=opts.save_steps, report_to=opts.report_to,
                         overwrite=opts.overwrite)
    summary = run_stage(stage, callbacks=callbacks, model=model, processor=processor,
                        examples=caption_examples(train_items))
    summary["stage"] = "warmup"
    if eval_items:
        summary["attribute_accuracy"] = attribute_accuracy(model, processor, eval_items)
    summary["options"] = dataclasses.asdict(opts)
    write_json(Path(opts.out) / "trimpi_stage.json", summary)
    return summary
