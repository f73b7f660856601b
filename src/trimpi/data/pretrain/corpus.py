"""The pretraining corpus: a deterministic stream of chat examples, written in shards.

Item `i` of a corpus is a pure function of (config, i): its kind, scene, image variety and
policy all come from generators keyed by (seed, i) (`split.rng_for`), so a shard can be
rebuilt at any time, on any machine, and a resumed training run sees the same items.

Kinds (default mix in MIX):
  exist      "Is there a large cyan cube?" → Yes./No. (balanced; one or two attribute values)
  count      "How many objects are there?", "Which colors are there?", ...
  object     "Describe the object at x=41%, y=63% of the image." → "a large cyan rubber cube"
             (per-object supervision through the scene graph's pixel_coords)
  caption    the scene caption, objects from left to right
  general    ClevrPolicy's general scene questions (counting, existence, attribute queries)
  policy     a random ClevrPolicy policy in context (variant T or M, depth 2, 4 or 6, in the
             system or the user turn) → gold trace and boxed answer, or the boxed answer alone
  override   an old policy in the system turn, its update under the same name in the user turn
             → the answer of the update
  tools      a random GTA-style tool policy in the system turn, a user profile → the tool version
             the rules allow (`tools`; never GTAPolicy's own rules)

Layout: CORPUS/corpus.json (the config), CORPUS/crops/ (variant-M attribute crops),
CORPUS/shard-00000/{items.jsonl, images/} ...; image paths in items are relative to CORPUS.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trimpi.data.clevr import policy as pol
from trimpi.data.clevr.captions import CAPTION_PROMPT, QUESTIONS, caption, existence_question, question_answer
from trimpi.data.clevr.cot import gold_trace, object_phrase
from trimpi.data.clevr.pool import MIN_PIXELS_320x240
from trimpi.data.clevr.questions import INSTRUCTION as GENERAL_INSTRUCTION
from trimpi.data.clevr.questions import general_question
from trimpi.data.clevr.tree import ATTRIBUTE_VALUES, decide, random_tree
from trimpi.data.io import dumps, iter_jsonl, read_json, write_json
from trimpi.data.pretrain import split
from trimpi.data.pretrain.augment import SIZES, augment
from trimpi.data.schema import Policy, Record, render_messages
from trimpi.errors import ConfigError

# Perception first: a policy can only be followed by a model that sees the attributes it names.
MIX = {"exist": 0.28, "count": 0.05, "object": 0.12, "caption": 0.05, "general": 0.10, "policy": 0.30,
       "override": 0.05, "tools": 0.05}
# Depth-6 policies in context run to ~5k tokens (variant M), ten times a depth-2 item's cost on a CPU;
# depth 6 stays a pretraining option and an evaluation setting.
DEPTHS = (2, 4)
UPDATE_NOTE = "Policy {name} has been updated. The version below replaces the earlier one.\n\n"
OBJECT_PROMPT = "Describe the object at x={x}%, y={y}% of the image."
SHARD_FORMAT = "shard-{:05d}"


@dataclass(frozen=True)
class CorpusConfig:
    """What a corpus is a function of (with the item index).

    exclude: dataset directories (e.g. every evaluation build) whose scenes and policy trees the
    corpus must not contain; their content is hashed into `exclusions` when the corpus opens."""

    seed: int = 0
    shard_size: int = 512
    min_objects: int = 1
    max_objects: int = 10
    mix: dict[str, float] = field(default_factory=lambda: dict(MIX))
    exclude: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] = SIZES
    depths: tuple[int, ...] = DEPTHS

    def check(self) -> None:
        if not self.sizes or any(w < 16 or h < 16 for w, h in self.sizes):
            raise ConfigError(f"sizes: expected (width, height) pairs of at least 16 pixels, got {self.sizes}")
        unknown = set(self.mix) - set(MIX)
        if unknown or not self.mix or min(self.mix.values()) < 0 or sum(self.mix.values()) <= 0:
            raise ConfigError(f"mix: expected non-negative weights of {', '.join(MIX)} with a positive sum, "
                              f"got {self.mix}")
        if not 1 <= self.min_objects <= self.max_objects <= 10:
            raise ConfigError(f"objects: need 1 <= min ({self.min_objects}) <= max ({self.max_objects}) <= 10")
        if not self.depths or set(self.depths) - {2, 4, 6}:
            raise ConfigError(f"depths: expected some of 2, 4 and 6, got {self.depths}")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size: must be >= 1, got {self.shard_size}")


def item_kind(cfg: CorpusConfig, rng: np.random.Generator) -> str:
    kinds = sorted(cfg.mix)
    weights = np.array([cfg.mix[k] for k in kinds], dtype=float)
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]


def draw_layout(cfg: CorpusConfig, index: int, excl: split.Exclusions) -> tuple[dict, int, int]:
    """(scene graph, width, height) of item `index` before rendering; excluded layouts are redrawn."""
    from trimpi.data.clevr.scene import sample_scene

    rng = split.rng_for(split.SCENE, cfg.seed, index)
    width, height = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    pixels = max(4, round(MIN_PIXELS_320x240 * width * height / (320 * 240)))
    while True:
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        scene = sample_scene(rng, width, height, f"{index:08d}.png", index, "pretrain", n, n, pixels)
        if split.scene_key(scene["objects"]) not in excl.scenes:
            return scene, width, height


def draw_scene(cfg: CorpusConfig, index: int, excl: split.Exclusions):
    """(varied PIL image, scene graph in the image's frame) of item `index`."""
    from trimpi.data.clevr.render import render_numpy

    scene, width, height = draw_layout(cfg, index, excl)
    img, ids = render_numpy(scene, width, height)
    return augment(img, scene, split.rng_for(split.AUGMENT, cfg.seed, index), ground=ids < 0)


def draw_policy(rng: np.random.Generator, depth: int, variant: str, excl: split.Exclusions,
                name: str | None = None) -> dict:
    """A policy JSON (pretraining name, random tree not in the exclusions, shuffled sections, crops)."""
    while True:
        tree = random_tree(rng, depth)
        if split.tree_key(tree) not in excl.trees:
            break
    name = name or split.pretrain_name(rng, depth)
    order = pol.section_order(rng, list(tree["nodes"]))
    crops = pol.choose_crops(rng, tree, variant)
    text, images = pol.verbalize(name, tree, order, crops)
    return pol.policy_json(name, depth, variant, tree, text, images)


def perception_qa(kind: str, scene: dict, rng: np.random.Generator) -> tuple[str, str]:
    """(question, answer) of a perception or general item on a scene."""
    objects = scene["objects"]
    if kind == "exist":
        return existence_question(random.Random(int(rng.integers(2**32))), scene)
    if kind == "count":
        prompt = sorted(QUESTIONS)[int(rng.integers(len(QUESTIONS)))]
        return prompt, question_answer(scene, QUESTIONS[prompt])
    if kind == "object":
        obj = objects[int(rng.integers(len(objects)))]
        width, height = (scene["image_size"])
        x, y = round(100 * obj["pixel_coords"][0] / width), round(100 * obj["pixel_coords"][1] / height)
        return OBJECT_PROMPT.format(x=x, y=y), f"a {object_phrase(obj)}"
    if kind == "caption":
        return CAPTION_PROMPT, caption(scene)
    if kind == "general":
        _, question, answer = general_question(rng, objects)
        return f"{GENERAL_INSTRUCTION} Question: {question}", f"\\boxed{{{answer}}}"
    raise ConfigError(f"unknown corpus item kind {kind!r}")


def _policy_record(rid: str, policy: dict, image: str, objects: list[dict], reasoning: bool, style: str) -> Record:
    from trimpi.data.clevr.build import boxed, query_text

    answer = decide(policy, objects)
    trace = gold_trace(policy["name"], policy, objects, style)[0] if reasoning else None
    return Record(id=rid, task="clevr", query=query_text(policy["name"]), answer=answer, response=boxed(answer),
                  images=[image], policy=policy["name"], reasoning=trace)


def _policy(policy: dict) -> Policy:
    return Policy(policy["name"], policy["text"], [Path(p.replace("images/", "crops/", 1)) for p in policy["images"]],
                  policy)


def policy_messages(kind: str, rid: str, image: str, objects: list[dict], rng: np.random.Generator,
                    excl: split.Exclusions, depths: tuple[int, ...] = DEPTHS) -> tuple[list[dict], dict]:
    """Chat messages of a policy or override item, and its metadata."""
    depth, variant = depths[int(rng.integers(len(depths)))], "TM"[int(rng.integers(2))]
    placement = ("system", "user")[int(rng.integers(2))]
    reasoning, style = bool(rng.random() < 0.5), ("compact", "full")[int(rng.integers(2))]
    policy = draw_policy(rng, depth, variant, excl)
    meta = {"depth": depth, "variant": variant, "placement": placement, "reasoning": reasoning, "name": policy["name"]}
    if kind == "policy":
        record = _policy_record(rid, policy, image, objects, reasoning, style)
        return render_messages(record, "", _policy(policy), placement, True, reasoning), meta
    update = draw_policy(rng, depth, variant, excl, name=policy["name"])
    record = _policy_record(rid, update, image, objects, reasoning, style)
    messages = render_messages(record, "", _policy(update), "user", True, reasoning)
    messages[0]["content"].insert(0, {"type": "text", "text": UPDATE_NOTE.format(name=policy["name"])})
    old = render_messages(record, "", _policy(policy), "system", False)[0]
    return [old, *messages], meta | {"placement": "system+user"}


def make_item(cfg: CorpusConfig, index: int, image_rel: str, root: Path, excl: split.Exclusions) -> dict:
    """Item `index`: writes its image to root/image_rel and returns {"id", "kind", "messages", "meta"}."""
    rng = split.rng_for(split.ITEM, cfg.seed, index)
    kind = item_kind(cfg, rng)
    image, scene = draw_scene(cfg, index, excl)
    scene["image_size"] = list(image.size)
    (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
    image.save(root / image_rel, format="PNG")
    rid = f"pretrain-{cfg.seed}-{index:08d}"
    if kind in ("policy", "override"):
        messages, meta = policy_messages(kind, rid, image_rel, scene["objects"], rng, excl, cfg.depths)
    elif kind == "tools":
        from trimpi.data.pretrain.tools import tool_item

        text, question, answer, meta = tool_item(rng, rid)
        messages = [{"role": "system", "content": [{"type": "text", "text": text}]},
                    {"role": "user", "content": [{"type": "image", "path": image_rel},
                                                 {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    else:
        question, answer = perception_qa(kind, scene, rng)
        messages = [{"role": "user", "content": [{"type": "image", "path": image_rel},
                                                 {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        meta = {}
    return {"id": rid, "kind": kind, "image": image_rel, "messages": messages, "meta": meta,
            "objects": scene["objects"]}


def cached_exclusions(root: Path, datasets: list[str]) -> split.Exclusions:
    """The exclusions of `datasets`, hashed once per corpus (root/exclusions.json), not once per shard."""
    path = root / "exclusions.json"
    if path.is_file():
        saved = read_json(path)
        return split.Exclusions(set(saved["scenes"]), set(saved["trees"]), set(saved["names"]))
    excl = split.Exclusions.from_datasets(datasets)
    write_json(path, {"scenes": sorted(excl.scenes), "trees": sorted(excl.trees), "names": sorted(excl.names)})
    return excl


def write_crops(root: Path) -> None:
    """Every variant-M attribute crop, once (deterministic pixels)."""
    from trimpi.data.clevr.crops import render_attribute_crop

    for attribute in pol.CROP_ATTRIBUTES:
        for value in ATTRIBUTE_VALUES[attribute]:
            path = root / "crops" / f"{attribute}-{value}.png"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                render_attribute_crop(attribute, value).save(path, format="PNG")


class Corpus:
    """A corpus directory: shards are written on first use and read back afterwards."""

    def __init__(self, root: str | Path, cfg: CorpusConfig):
        cfg.check()
        self.root, self.cfg = Path(root), cfg
        self.root.mkdir(parents=True, exist_ok=True)
        saved = self.root / "corpus.json"
        mine = dataclasses.asdict(cfg) | {"exclude": list(cfg.exclude), "sizes": [list(x) for x in cfg.sizes],
                                          "depths": list(cfg.depths)}
        if saved.is_file() and read_json(saved) != mine:
            raise ConfigError(f"{saved}: the corpus there was generated with another config; use another directory")
        write_json(saved, mine)
        self.exclusions = cached_exclusions(self.root, list(cfg.exclude))
        write_crops(self.root)

    def shard_dir(self, k: int) -> Path:
        return self.root / SHARD_FORMAT.format(k)

    def shard(self, k: int) -> list[dict]:
        """Items of shard k (written now if missing; a half-written shard is never visible)."""
        final = self.shard_dir(k)
        if not (final / "items.jsonl").is_file():
            tmp = self.root / f".{final.name}.partial-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            size = self.cfg.shard_size
            rows = [self._item(i, tmp, final.name) for i in range(k * size, (k + 1) * size)]
            (tmp / "items.jsonl").write_text("".join(dumps(r) + "\n" for r in rows), encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)  # a shard folder without items.jsonl is unfinished
            os.replace(tmp, final)
        return list(iter_jsonl(final / "items.jsonl"))

    def _item(self, i: int, tmp: Path, name: str) -> dict:
        row = make_item(self.cfg, i, f"images/{i:08d}.png", tmp, self.exclusions)
        row["image"] = f"{name}/{row['image']}"
        for m in row["messages"]:
            for block in m["content"]:
                if block.get("type") == "image" and block["path"].startswith("images/"):
                    block["path"] = f"{name}/{block['path']}"
        return row

    def items(self, start: int, count: int) -> list[dict]:
        """Items start..start+count-1 with absolute image paths (ready for the collator)."""
        out = []
        size = self.cfg.shard_size
        for k in range(start // size, (start + count - 1) // size + 1):
            rows = self.shard(k)
            lo, hi = max(start - k * size, 0), min(start + count - k * size, size)
            out += [self.absolute(r) for r in rows[lo:hi]]
        return out

    def absolute(self, row: dict) -> dict:
        messages = [{**m, "content": [{**b, "path": str(self.root / b["path"])} if b.get("type") == "image" else b
                                      for b in m["content"]]} for m in row["messages"]]
        return {**row, "image": str(self.root / row["image"]), "messages": messages}


def write_shard(root: str, cfg: CorpusConfig, k: int) -> int:
    """Make sure shard k of the corpus at `root` exists (for worker processes); returns k."""
    Corpus(root, cfg).shard(k)
    return k
