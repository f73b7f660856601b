"""The numbers that gate each pretraining stage, measured on data no stage trains on.

  head_perception  the eye: the perception head's balanced accuracy (threshold 0) and AUC on held-out
                   scenes, over single values, pairs and per attribute kind
  lm_perception    the language model's yes/no answers to "Is there a ...?" on held-out scenes (every
                   label), beside the head's on the same scenes; the gate is their gap
  in_context       never-seen depth-2 policies (T and M) in context, held-out scenes: the share of
                   greedy replies whose \\boxed{} answer is the policy's decision

Held-out data come from their own corpus seeds (HELDOUT, HELDOUT_POLICIES), never a stage's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trimpi.data.clevr.existence import existence_labels, existence_targets
from trimpi.train.perception import image_inputs, image_token_features, perception_metrics

HELDOUT, HELDOUT_POLICIES = 999, 998  # corpus seed offsets of the held-out scenes and policies


def heldout_items(opts, folder: Path, count: int, kind: str) -> list[dict]:
    """`count` held-out corpus items of one kind ("exist": scenes; "policy": depth-2 policies)."""
    from trimpi.data.pretrain.corpus import Corpus, CorpusConfig

    offset = HELDOUT if kind == "exist" else HELDOUT_POLICIES
    cfg = CorpusConfig(seed=opts.seed * 1000 + offset, shard_size=opts.shard_size, mix={kind: 1.0},
                       exclude=tuple(opts.exclude), sizes=((160, 120),), depths=(2,))
    return Corpus(folder, cfg).items(0, count)


@torch.no_grad()
def head_scores(model, processor, head, images: list[str], batch_size: int = 64) -> torch.Tensor:
    """[n_images, n_labels]: the perception head's image scores (max over image tokens)."""
    from PIL import Image

    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        pil = [Image.open(p).convert("RGB") for p in images[i:i + batch_size]]
        inputs = {k: v.to(device) for k, v in image_inputs(processor, pil).items()}
        out.append(head(image_token_features(model, inputs))[0].amax(1).float().cpu())
    return torch.cat(out)


def head_perception(model, processor, head, items: list[dict]) -> dict:
    labels = existence_labels()
    targets = torch.tensor([existence_targets(it["objects"], labels) for it in items])
    return perception_metrics(head_scores(model, processor, head, [it["image"] for it in items]), targets, labels)


def lm_perception(model, processor, head, items: list[dict], progress: bool = False) -> dict:
    """The language model's yes/no perception beside the head's, on the same scenes; "gap" = head − LM
    (balanced accuracy over single values)."""
    from trimpi.generation.yesno import question, yes_margins

    labels = existence_labels()
    targets = torch.tensor([existence_targets(it["objects"], labels) for it in items])
    qs = [(it["image"], question(label)) for it in items for label in labels]
    margins = torch.tensor(yes_margins(model, processor, qs, progress=progress)).reshape(len(items), len(labels))
    lm = perception_metrics(margins, targets, labels)
    eye = head_perception(model, processor, head, items)
    return {"lm": lm, "head": eye, "gap": eye["single"] - lm["single"]}


def in_context(model, processor, items: list[dict], max_new_tokens: int = 200, progress: bool = False) -> dict:
    """Greedy replies to never-seen policies in context: accuracy of the \\boxed{} answer, per variant."""
    from trimpi.data.answers import extract_boxed
    from trimpi.generation.engine import HFGenerateEngine
    from trimpi.generation.greedy import generate_texts
    from trimpi.generation.prompts import Prompt
    from trimpi.models.processing import load_message_images, render_text

    prompts, gold = [], []
    for it in items:
        messages = it["messages"][:-1]
        prompts.append(Prompt(render_text(processor, messages, add_generation_prompt=True),
                              load_message_images(messages)))
        gold.append(extract_boxed(it["messages"][-1]["content"][0]["text"]))
    engine = HFGenerateEngine(model, processor, batch_size=8)
    replies = generate_texts(engine, prompts, 8, max_new_tokens, desc="in-context gate", progress=progress)
    hits = [extract_boxed(c.text) == g for c, g in zip(replies, gold, strict=True)]
    out = {"accuracy": sum(hits) / max(len(hits), 1), "records": len(hits)}
    for variant in "TM":
        mine = [h for h, it in zip(hits, items, strict=True) if it["meta"]["variant"] == variant]
        out[f"accuracy_{variant}"] = sum(mine) / len(mine) if mine else float("nan")
    return out


def measure(gate: str, model, processor, head, opts, out: Path, progress: bool = False) -> dict:
    """The gate's measurement: {"value": the gated number, ...details}."""
    if gate == "head_perception":
        result = head_perception(model, processor, head, heldout_items(opts, out / "heldout", opts.heldout_images,
                                                                       "exist"))
        return {"value": result["single"], **result}
    if gate == "lm_perception":
        items = heldout_items(opts, out / "heldout", opts.heldout_images, "exist")[:opts.lm_heldout_images]
        result = lm_perception(model, processor, head, items, progress)
        return {"value": result["gap"], **result}
    items = heldout_items(opts, out / "heldout-policies", opts.heldout_policies, "policy")
    result = in_context(model, processor, items, progress=progress)
    return {"value": result["accuracy"], **result}


def passed(gate: str, value: float, target: float) -> bool:
    """The gap gate passes at or below its target; the others at or above."""
    return value <= target if gate == "lm_perception" else value >= target
