"""Which eye should the micro base have? Vision towers side by side at equal training CPU-seconds.

Every design is trained with the same objective (`trimpi.train.perception.perception_loss`:
prior-balanced existence over the 87 labels, dense per-cell targets, counts) on the same stream of
pretraining scenes (`trimpi.data.pretrain.corpus.draw_scene`, 1-10 objects, the corpus's image
variety), batch 32, AdamW, one thread, until its training CPU-seconds reach the budget; then its
head is scored on held-out scenes of another seed stream: balanced accuracy at the decision
threshold and AUC, over single values, pairs and per attribute kind.

    .venv/bin/python benchmarks/eye_compare.py --designs convnext,siglip --budget 300 --out runs/eyes.jsonl

Designs: siglip (the Idefics3 micro tower: 112 px, patch 14, pixel shuffle 2 → 16 tokens; keeps
the vLLM path), siglip224 (the same tower at 224 px, pixel shuffle 4 → 16 tokens: four times the pixels
per object), convnext / convnext16 (FastVLM with a ConvNeXt eye at 160×128: 4 stages → 20
tokens, 3 stages → 80), resnet (the same with a BatchNorm ResNet; for reference only: train-mode
outputs depend on the rest of the batch). Rows append to --out as JSON lines (curve points at each
quarter of the budget). Each row also holds, per attribute kind, the head's true- and false-positive
rates by the scene's object count (1–3, 4–6, 7–10): a score that follows the count, not the scene, shows
there. `--size` sets the render size of the scenes (default 160x120, the demo's).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from trimpi.data.clevr.existence import existence_labels, existence_targets
from trimpi.models.tiny import DEFAULT_TEXTS, ConvEye, TinySize, build_fastvlm, build_idefics3
from trimpi.models.tokenizer import train_bpe_tokenizer
from trimpi.train.perception import (
    PerceptionHead,
    cell_targets,
    image_inputs,
    image_token_features,
    label_prior,
    perception_loss,
    perception_metrics,
    vision_parameters,
)

TEXT = TinySize(hidden=128, layers=1, heads=4, kv_heads=4, intermediate=256, vocab=512)
DESIGNS = {
    "convnext": ConvEye(kind="convnext"),
    "convnext16": ConvEye(kind="convnext", widths=(48, 96, 192), depths=(1, 1, 1)),
    "resnet": ConvEye(kind="resnet"),
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def scenes(seed: int, start: int, count: int, size: tuple[int, int] = (160, 120)) -> list[tuple]:
    """(PIL image, objects) of corpus scene indices start..start+count-1 of a seed stream."""
    from trimpi.data.pretrain.corpus import CorpusConfig, draw_scene
    from trimpi.data.pretrain.split import Exclusions

    cfg = CorpusConfig(seed=seed, sizes=(size,))
    excl = Exclusions(set(), set(), set())
    return [draw_scene(cfg, i, excl) for i in range(start, start + count)]


def render(seed: int, count: int, workers: int, size: tuple[int, int]) -> list[tuple]:
    chunk = max(1, count // (4 * workers))
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(scenes, *zip(*[(seed, s, min(chunk, count - s), size) for s in range(0, count, chunk)],
                                       strict=True))
        return [(im, scene["objects"]) for part in parts for im, scene in part]


def cached_pool(path: Path, seed: int, count: int, workers: int, size: tuple[int, int]) -> list[tuple]:
    """The rendered pool, kept in `path` (.npz of images + .json of objects) for the next process."""
    import numpy as np
    from PIL import Image

    objects_path = path.with_suffix(".json")
    if not objects_path.is_file():
        pool = render(seed, count, workers, size)
        np.savez(path, images=np.stack([np.asarray(im) for im, _ in pool]))
        objects_path.write_text(json.dumps([objs for _, objs in pool]))
    images = np.load(path)["images"]
    return [(Image.fromarray(a), objs) for a, objs in zip(images, json.loads(objects_path.read_text()), strict=True)]


def build(design: str):
    """(model, processor, token grid (columns, rows))."""
    torch.manual_seed(0)
    if design in ("siglip", "siglip224"):
        edge, shuffle = (112, 2) if design == "siglip" else (224, 4)
        tok = train_bpe_tokenizer(list(DEFAULT_TEXTS), "idefics3", vocab_size=TEXT.vocab)
        size = TinySize(**{**TEXT.__dict__, "vision_hidden": 128, "vision_layers": 4, "vision_heads": 4,
                           "image_size": edge})
        model, processor = build_idefics3(tok, size, scale_factor=shuffle)
        return model.float(), processor, (4, 4)
    eye = DESIGNS[design]
    tok = train_bpe_tokenizer(list(DEFAULT_TEXTS), "llava", vocab_size=TEXT.vocab)
    model, processor = build_fastvlm(tok, TEXT, eye)
    return model.float(), processor, eye.grid


def tensors(processor, pool: list[tuple], grid, labels):
    pixels = image_inputs(processor, [im for im, _ in pool])
    targets = torch.tensor([existence_targets(objs, labels) for _, objs in pool])
    dense = [cell_targets(objs, labels, im.size, grid) for im, objs in pool]
    cells, keep, counts = (torch.stack(list(x)) for x in zip(*dense, strict=True))
    return pixels, targets, cells, keep, counts


COUNT_BANDS = ((1, 3), (4, 6), (7, 10))


def rates_by_count(scores: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor, labels) -> dict:
    """{"shape 4-6": [TPR, FPR], ...}: per attribute kind (single values) and object-count band."""
    out = {}
    for kind in ("color", "shape", "size", "material"):
        ks = [k for k, label in enumerate(labels) if len(label) == 1 and label[0][0] == kind]
        for lo, hi in COUNT_BANDS:
            rows = (counts >= lo) & (counts <= hi)
            said, truth = scores[rows][:, ks] > 0, targets[rows][:, ks] > 0.5
            pos, neg = int(truth.sum()), int((~truth).sum())
            out[f"{kind} {lo}-{hi}"] = [round(int((said & truth).sum()) / max(pos, 1), 3),
                                        round(int((said & ~truth).sum()) / max(neg, 1), 3)]
    return out


@torch.no_grad()
def evaluate(model, head, pixels, targets, labels, counts) -> dict:
    model.eval()
    scores = []
    for i in range(0, len(targets), 100):
        feats = image_token_features(model, {k: v[i:i + 100] for k, v in pixels.items()})
        scores.append(head(feats)[0].amax(1))
    model.train()
    scores = torch.cat(scores)
    return {**perception_metrics(scores, targets, labels), "by_count": rates_by_count(scores, targets, counts, labels)}


def run(design: str, train_pool, test_pool, budget: float, lr: float) -> list[dict]:
    labels = existence_labels()
    model, processor, grid = build(design)
    model.train()
    train = tensors(processor, train_pool, grid, labels)
    test = tensors(processor, test_pool, grid, labels)
    counts = torch.tensor([len(objs) for _, objs in test_pool])
    prior = label_prior(train[1])
    dim = image_token_features(model, {k: v[:1] for k, v in train[0].items()}).shape[-1]
    head = PerceptionHead(dim, len(labels))
    params = vision_parameters(model) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    n = len(train[1])
    rows, spent, step, marks = [], 0.0, 0, [budget * q for q in (0.25, 0.5, 0.75, 1.0)]
    while marks:
        c0 = cpu_seconds()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        idx = torch.randint(n, (32,), generator=gen)
        feats = image_token_features(model, {k: v[idx] for k, v in train[0].items()})
        scores, rates = head(feats)
        loss = perception_loss(scores, rates, train[1][idx], train[2][idx], train[3][idx], train[4][idx], prior)
        loss["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        spent += cpu_seconds() - c0
        if spent >= marks[0]:
            marks.pop(0)
            row = {"design": design, "step": step, "images_seen": 32 * step, "train_cpu_s": round(spent, 1),
                   "vision_params": sum(p.numel() for p in vision_parameters(model)),
                   "tokens": grid[0] * grid[1], **evaluate(model, head, test[0], test[1], labels, counts)}
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
                              if k != "by_count"}), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", default="siglip,convnext,convnext16,resnet")
    ap.add_argument("--budget", type=float, default=300.0, help="training CPU-seconds per design")
    ap.add_argument("--train", type=int, default=8000, help="distinct training scenes")
    ap.add_argument("--test", type=int, default=1000, help="held-out scenes (another seed stream)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the scenes")
    ap.add_argument("--size", default="160x120", help="render size of the scenes, WIDTHxHEIGHT")
    ap.add_argument("--cache", type=Path, default=Path("runs/eye-compare"), help="folder of the rendered pools")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    args.cache.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split("x"))
    tag = "" if size == (160, 120) else f"-{args.size}"
    train_pool = cached_pool(args.cache / f"train-{args.train}{tag}.npz", 1, args.train, args.workers, size)
    test_pool = cached_pool(args.cache / f"test-{args.test}{tag}.npz", 2, args.test, args.workers, size)
    print(f"{args.train} + {args.test} scenes ready in {time.time() - t0:.0f} s", flush=True)
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for design in args.designs.split(","):
        for row in run(design, train_pool, test_pool, args.budget, args.lr):
            row |= {"cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
                    "render_size": args.size}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
