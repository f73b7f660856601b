"""Perception warm-up: teach a randomly initialised vision tower to name object attributes.

Each distinct scene of the dataset (records with a `scene` graph) becomes one captioning
example: [image, "Describe the objects from left to right."] → the scene-graph caption.
Scenes of the test split are held out and used to measure attribute accuracy.

A fresh text tower learns the caption grammar much faster than a fresh vision tower learns
to see, and then writes the same likely caption for every image. Three knobs counter this:

  vision_steps        first pre-train the vision tower and connector alone on existence labels
                      read from the scene graphs (`trimpi.train.perception`), so the image
                      tokens carry the objects' attributes before any captioning starts.
  questions/existence also ask, per scene, whole-image questions ("Which colors are there?",
                      "How many objects are there?") or yes/no questions worded like policy
                      conditions ("Is there a large sphere?"), whose short answers no language
                      prior can guess, so the loss is dominated by tokens that need the image.
  vision_first_steps  for the first N optimizer steps only the vision tower and connector
                      learn (the text tower's gradients are zeroed), so the only way to lower
                      the loss is to make the image tokens informative; then all parameters train.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from trimpi.data.clevr.captions import (
    ATTRIBUTES,
    CAPTION_PROMPT,
    QUESTIONS,
    attribute_scores,
    caption,
    existence_question,
    question_answer,
)
from trimpi.data.io import read_json
from trimpi.data.schema import load_records
from trimpi.errors import ConfigError, DataError
from trimpi.train.perception import is_vision_parameter
from trimpi.train.stage import (
    ATTRIBUTE_ACCURACY,
    CHECKPOINTS_DIR,
    EXISTENCE_ACCURACY,
    VISION_PRETRAINING,
    mark_finished,
    prepare_stage_dir,
)

TRAIN_FILES = ("train.jsonl", "train_cot.jsonl", "general_test.jsonl")
EVAL_FILES = ("test.jsonl",)


@dataclass
class WarmupOptions:
    """Options of `trimpi train warmup` (see the module docstring for the perception knobs).

    questions:          whole-image questions per scene added to the captions (0: captions only).
    vision_first_steps: optimizer steps at the start during which only vision tower + connector train.
    """

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
    questions: int = 0
    vision_first_steps: int = 0
    existence: int = 0
    captions: bool = True
    vision_steps: int = 0
    vision_lr: float = 1e-3
    vision_batch_size: int = 32
    progress: bool = True


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


def warmup_items(data: str | Path, eval_scenes: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) scene items: the first `eval_scenes` test scenes are held out of training."""
    eval_items = scene_items(data, EVAL_FILES)[:eval_scenes]
    held = {it["image"] for it in eval_items}
    return [it for it in scene_items(data, TRAIN_FILES) if it["image"] not in held], eval_items


def caption_messages(image: str, target: str | None = None, prompt: str = CAPTION_PROMPT) -> list[dict]:
    """[image, prompt] user turn, plus the assistant target when given."""
    msgs = [{"role": "user", "content": [{"type": "image", "path": image}, {"type": "text", "text": prompt}]}]
    if target is not None:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return msgs


def caption_examples(items: list[dict], questions: int = 0, seed: int = 0, existence: int = 0,
                     captions: bool = True) -> list[dict]:
    """Per scene: its caption (unless `captions` is False), `questions` whole-image questions (drawn
    without replacement from QUESTIONS) and `existence` yes/no questions worded like policy
    conditions. Deterministic for a seed."""
    import random

    if not 0 <= questions <= len(QUESTIONS):
        raise ConfigError(f"questions: must be between 0 and {len(QUESTIONS)}, got {questions}")
    if existence < 0:
        raise ConfigError(f"existence: must be >= 0, got {existence}")
    rng = random.Random(seed)
    out = []
    for it in items:
        scene = read_json(it["scene"])
        if captions:
            out.append({"id": it["image"], "messages": caption_messages(it["image"], caption(scene))})
        for prompt in rng.sample(sorted(QUESTIONS), questions):
            target = question_answer(scene, QUESTIONS[prompt])
            out.append({"id": f"{it['image']}#{QUESTIONS[prompt]}",
                        "messages": caption_messages(it["image"], target, prompt)})
        for k in range(existence):
            prompt, target = existence_question(rng, scene)
            out.append({"id": f"{it['image']}#exist{k}", "messages": caption_messages(it["image"], target, prompt)})
    if not out:
        raise ConfigError("captions: warm-up has no examples (enable captions, questions or existence)")
    return out


def vision_first_callback(steps: int):
    """Trainer callback: zero the gradients of every non-vision parameter for the first `steps`
    optimizer steps (Adam moments stay zero, so those parameters do not move)."""
    from transformers import TrainerCallback

    class VisionFirst(TrainerCallback):
        def __init__(self):
            self.handles = []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step >= steps:
                return
            for name, p in model.named_parameters():
                if p.requires_grad and not is_vision_parameter(name):
                    self.handles.append(p.register_hook(torch.zeros_like))
            if not self.handles or len(self.handles) == sum(p.requires_grad for p in model.parameters()):
                raise ConfigError("vision_first_steps: the model has no separate vision parameters")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= steps:
                self.release()

        def on_train_end(self, args, state, control, **kwargs):
            self.release()

        def release(self):
            for h in self.handles:
                h.remove()
            self.handles = []

    return VisionFirst()


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


@torch.no_grad()
def existence_accuracy(model, processor, items: list[dict], seed: int = 0, batch_size: int = 32) -> dict[str, float]:
    """One balanced yes/no existence question per held-out scene, answered by comparing the
    log-likelihood of "Yes." and "No."; accuracy and balanced accuracy (chance 0.5)."""
    import random

    from trimpi.train.collate import Collator
    from trimpi.train.logprobs import sequence_logprobs

    rng = random.Random(seed)
    questions = [(it["image"], *existence_question(rng, read_json(it["scene"]))) for it in items]
    collator = Collator(processor, "completion", config=model.config)
    model.eval()
    said_yes = []
    for i in range(0, len(questions), batch_size):
        chunk = questions[i:i + batch_size]
        feats = [{"messages": caption_messages(img, reply, q)} for reply in ("Yes.", "No.") for img, q, _ in chunk]
        lp, mask = sequence_logprobs(model, collator(feats))
        total = (lp * mask).sum(1)
        said_yes += (total[: len(chunk)] > total[len(chunk):]).tolist()
    truth = [a == "Yes." for _, _, a in questions]
    hits = [p == t for p, t in zip(said_yes, truth, strict=True)]
    yes_hits = [h for h, t in zip(hits, truth, strict=True) if t]
    no_hits = [h for h, t in zip(hits, truth, strict=True) if not t]
    rates = [sum(h) / len(h) for h in (yes_hits, no_hits) if h]
    return {"accuracy": sum(hits) / max(len(hits), 1), "balanced_accuracy": sum(rates) / max(len(rates), 1),
            "questions": len(hits)}


def pretrain_vision_on(model, processor, train_items: list[dict], eval_items: list[dict], opts: WarmupOptions):
    """Vision pre-training (`trimpi.train.perception`) on the warm-up's scenes."""
    from PIL import Image

    from trimpi.train.perception import pretrain_vision

    def load(items):
        return ([Image.open(it["image"]).convert("RGB") for it in items],
                [read_json(it["scene"])["objects"] for it in items])

    return pretrain_vision(model, processor, *load(train_items), *load(eval_items), steps=opts.vision_steps,
                           lr=opts.vision_lr, batch_size=opts.vision_batch_size, seed=opts.seed,
                           progress=opts.progress, policy_eval=policy_questions(opts.data, eval_items))


def policy_questions(data: str | Path, items: list[dict]) -> list[tuple[int, dict, str]]:
    """(index into `items`, policy tree, answer) for the test records whose image is one of `items`
    and whose policy is a decision tree (ClevrPolicy)."""
    root = Path(data)
    position = {it["image"]: k for k, it in enumerate(items)}
    path = root / EVAL_FILES[0]
    trees: dict[str, dict] = {}
    out = []
    for r in load_records(path) if path.is_file() else []:
        k = position.get(str(root / r.images[0])) if r.policy_path and len(r.images) == 1 else None
        if k is None:
            continue
        if r.policy_path not in trees:
            trees[r.policy_path] = read_json(root / r.policy_path)
        if "nodes" in trees[r.policy_path]:
            out.append((k, trees[r.policy_path], r.answer))
    return out


def run_warmup(opts: WarmupOptions, callbacks=()) -> dict:
    """Caption-train `opts.model` (default: a fresh micro preset) on the dataset's scenes; save to `opts.out`.

    The inner SFT stage does not mark the directory: it is finished only once the held-out
    evaluation is written too, so a warm-up killed during its evaluation resumes (and skips the
    training its checkpoints already hold)."""
    from trimpi.models.loading import load_model
    from trimpi.train.sft import StageOptions, last_checkpoint, run_stage

    out = prepare_stage_dir(opts.out, opts.overwrite)
    train_items, eval_items = warmup_items(opts.data, opts.eval_scenes)
    if not train_items:
        raise DataError(f"{opts.data}: no records with a scene graph and one image to caption")
    model, processor = load_model(opts.model, dtype="float32", device="cpu", data=opts.data, seed=opts.seed)
    vision = None
    if opts.vision_steps > 0 and last_checkpoint(out / CHECKPOINTS_DIR) is None:  # a resume has it
        vision = pretrain_vision_on(model, processor, train_items, eval_items, opts)
    stage = StageOptions(data=opts.data, model=opts.model, out=opts.out, stage="sft", epochs=opts.epochs, lr=opts.lr,
                         batch_size=opts.batch_size, grad_accum=opts.grad_accum, lora_rank=0, max_steps=opts.max_steps,
                         seed=opts.seed, save_steps=opts.save_steps, report_to=opts.report_to, progress=opts.progress)
    if opts.vision_first_steps > 0:
        callbacks = [*callbacks, vision_first_callback(opts.vision_first_steps)]
    summary = run_stage(stage, callbacks=callbacks, model=model, processor=processor, mark=False,
                        examples=caption_examples(train_items, opts.questions, opts.seed, opts.existence,
                                                  opts.captions))
    summary["stage"] = "warmup"
    if vision is not None:
        summary[VISION_PRETRAINING] = vision
    if eval_items and opts.captions:
        summary[ATTRIBUTE_ACCURACY] = attribute_accuracy(model, processor, eval_items)
    if eval_items and opts.existence:
        summary[EXISTENCE_ACCURACY] = existence_accuracy(model, processor, eval_items, opts.seed)
    summary["options"] = dataclasses.asdict(opts)
    mark_finished(out, summary)
    return summary
