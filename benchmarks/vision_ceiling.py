"""How well can a fresh micro vision tower see ClevrPolicy conditions? Side by side in one run.

For each vision design (image size, patch size) the micro preset's vision tower + connector are
pre-trained on existence labels (`trimpi.train.perception.pretrain_vision`, what `trimpi train
warmup --vision-steps` runs) and scored on held-out test scenes: balanced accuracy on single
attribute values and on pairs, and the probe's policy accuracy — the tree walked with every
condition answered by the probe. That last number bounds what a model reading these image tokens
can reach without the policy, whatever the later stages do. The majority line is the score of
always answering the policy's most frequent training case.

    .venv/bin/python benchmarks/vision_ceiling.py --data DIR/T-d2 [--steps 500] [--designs 112/14,224/28]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from trimpi.report.baselines import majority_accuracy


def run_design(data: Path, image_size: int, patch: int, steps: int, lr: float, batch_size: int,
               eval_scenes: int) -> dict:
    from trimpi.models import presets, tiny
    from trimpi.train.warmup import WarmupOptions, pretrain_vision_on, warmup_items

    size = dataclasses.replace(presets.MICRO, image_size=image_size)
    tok = presets.train_bpe_tokenizer(presets.preset_texts(data), "idefics3", vocab_size=size.vocab)
    torch.manual_seed(0)
    model, processor = tiny.build_idefics3(tok, size, vision_patch=patch)
    model.float()
    train_items, eval_items = warmup_items(data, eval_scenes)
    opts = WarmupOptions(data=str(data), out="", vision_steps=steps, vision_lr=lr, vision_batch_size=batch_size,
                         progress=False)
    start = time.perf_counter()
    result = pretrain_vision_on(model, processor, train_items, eval_items, opts)
    return {"design": f"{image_size} px / patch {patch}", "image_tokens": processor.image_seq_len,
            "train_scenes": len(train_items), "seconds": round(time.perf_counter() - start, 1), **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="a ClevrPolicy setting directory (e.g. OUT/T-d2)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-scenes", type=int, default=200)
    ap.add_argument("--designs", default="112/14", help="comma-separated IMAGE_SIZE/PATCH pairs")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    rows = [run_design(args.data, *map(int, d.split("/")), args.steps, args.lr, args.batch_size, args.eval_scenes)
            for d in args.designs.split(",")]
    majority = majority_accuracy(args.data)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; majority-case accuracy {majority:.3f}")
    print("| design | tokens | scenes | steps | s | single bal. acc. | pair bal. acc. | probe policy acc. |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['design']} | {r['image_tokens']} | {r['train_scenes']} | {r['steps']} | {r['seconds']} | "
              f"{r['single_balanced_accuracy']:.3f} | {r['pair_balanced_accuracy']:.3f} | "
              f"{r['probe_policy_accuracy']:.3f} ({r['probe_policy_records']}) |")
    if args.out:
        args.out.write_text(json.dumps({"majority": majority, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
