"""One stage of micro-base pretraining: its corpus, the parameters it trains, its losses, save and resume.

Step s of a stage trains on its corpus items [s·B, (s+1)·B) (`trimpi.data.pretrain.corpus`), so a
killed-and-rerun stage sees exactly the data an uninterrupted one sees. The losses: the language
loss on the assistant turn (mean over the step's target tokens, in length-grouped micro-batches)
and the perception loss on the items' scene images (`trimpi.train.perception.perception_loss`,
through a head that is part of the checkpoint and dropped at export).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from trimpi.data.io import read_json, write_json
from trimpi.errors import ConfigError
from trimpi.train.perception import (
    PerceptionHead,
    cell_targets,
    existence_labels,
    existence_targets,
    image_inputs,
    image_token_features,
    is_vision_parameter,
    label_prior,
    perception_loss,
)
from trimpi.train.pretrain.options import PretrainOptions, Stage, compute_dtype, options_dict, schedule

CHECKPOINT = "checkpoint"
STATE = "state.pt"
AHEAD = 2  # corpus shards written ahead of the one in use
PROJECTORS = ("connector", "multi_modal_projector")  # the eye → text connection (Idefics3, LLaVA/FastVLM)
PRIOR_SCENES = 2000  # scene layouts (not rendered) the label prior of a stage's corpus is counted on


def build_model(opts: PretrainOptions):
    """(model, processor): a fresh model of the run's family with the fixed tokenizer trained on the generated
    text corpus."""
    from trimpi.data.pretrain.texts import tokenizer_texts
    from trimpi.models.tiny import build_fastvlm, build_idefics3
    from trimpi.models.tokenizer import train_bpe_tokenizer

    a = opts.arch
    a.check()
    family = "llava" if a.family == "fast_vlm" else "idefics3"  # the tokenizer's image specials
    tok = train_bpe_tokenizer(tokenizer_texts(opts.seed, opts.tokenizer_policies), family, vocab_size=a.vocab)
    torch.manual_seed(opts.seed)
    if a.family == "fast_vlm":
        model, processor = build_fastvlm(tok, a.text, a.eye)
    else:
        model, processor = build_idefics3(tok, a.text, vision_patch=a.patch_size, scale_factor=a.scale_factor)
    return model.float(), processor


def stage_seed(seed: int, index: int) -> int:
    """Corpus seed of stage `index`: every stage sees its own scenes and policies."""
    return seed * 1000 + index + 1


def corpus_config(opts: PretrainOptions, stage: Stage, index: int):
    from trimpi.data.pretrain.corpus import CorpusConfig

    return CorpusConfig(seed=stage_seed(opts.seed, index), shard_size=opts.shard_size, mix=dict(stage.mix),
                        exclude=tuple(opts.exclude), sizes=tuple(map(tuple, stage.sizes)), depths=tuple(opts.depths))


def scene_prior(cfg, labels, n: int = PRIOR_SCENES) -> torch.Tensor:
    """[n_labels]: how often each existence label is true in the corpus's scenes (layouts only)."""
    from trimpi.data.pretrain.corpus import draw_layout
    from trimpi.data.pretrain.split import Exclusions

    excl = Exclusions()
    return label_prior(torch.tensor([existence_targets(draw_layout(cfg, i, excl)[0]["objects"], labels)
                                     for i in range(n)]))


def item_chars(item: dict) -> int:
    return sum(len(b.get("text", "")) + 200 * (b.get("type") == "image")
               for m in item["messages"] for b in m["content"])


def micro_batches(items: list[dict], max_chars: int) -> list[list[dict]]:
    """The items sorted by length and cut into groups whose padded size (rows × longest) stays within
    `max_chars` characters (a group always holds at least one item). Deterministic."""
    groups: list[list[dict]] = []
    for item in sorted(items, key=lambda it: (item_chars(it), it["id"])):
        group = groups[-1] if groups else None
        if group is not None and (len(group) + 1) * item_chars(item) <= max_chars:
            group.append(item)
        else:
            groups.append([item])
    return groups


def trainable(model, head: torch.nn.Module, trains: str) -> list[torch.nn.Parameter]:
    """Parameters a stage trains (requires_grad set on exactly those): "vision" = eye + projector +
    perception head; "language" = projector + language model; "all" = everything."""
    chosen = []
    for name, p in model.named_parameters():
        projector = any(part in name for part in PROJECTORS)
        eye = is_vision_parameter(name) and not projector
        keep = trains == "all" or (trains == "vision" and (eye or projector)) or (trains == "language" and not eye)
        p.requires_grad_(keep)
        if keep:
            chosen.append(p)
    for p in head.parameters():
        p.requires_grad_(trains != "language")
    return chosen + (list(head.parameters()) if trains != "language" else [])


class StageTrainer:
    """Optimizer, scheduler and data of one stage of a run; the model and head are the run's."""

    def __init__(self, opts: PretrainOptions, index: int, model, processor, head: PerceptionHead,
                 device: torch.device, folder: Path):
        from trimpi.data.pretrain.corpus import Corpus
        from trimpi.train.collate import Collator

        self.opts, self.index, self.stage = opts, index, opts.stages[index]
        self.model, self.processor, self.head, self.device, self.folder = model, processor, head, device, folder
        self.corpus = Corpus(folder / "corpus", corpus_config(opts, self.stage, index))
        self.pool, self.pending = None, {}
        self.labels = existence_labels()
        self.grid = opts.arch.grid
        self.prior = scene_prior(self.corpus.cfg, self.labels).to(device) if self.stage.perception_weight else None
        self.params = trainable(model, head, self.stage.trains)
        self.optimizer = torch.optim.AdamW(self.params, lr=self.stage.lr, weight_decay=opts.weight_decay)
        warmup = min(opts.warmup_steps, max(1, self.stage.steps // 10))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: schedule(s, self.stage.steps, warmup))
        self.collator = Collator(processor, "completion", config=model.config)
        self.step, self.seconds = 0, 0.0
        self.dtype = compute_dtype(opts.dtype, device)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    def backward(self, items: list[dict]) -> dict[str, float]:
        """Accumulate the gradients of one step; returns the loss parts."""
        parts: dict[str, float] = {}
        if self.stage.lm_weight > 0:
            parts["lm"] = self.language_backward(items)
        if self.stage.perception_weight > 0:
            losses = self.perception_losses(items)
            (self.stage.perception_weight * losses["total"]).backward()
            parts |= {k: v.item() for k, v in losses.items() if k != "total"}
        return parts

    def language_backward(self, items: list[dict]) -> float:
        """The language loss (mean over the step's target tokens) computed in length-grouped micro-batches,
        so a depth-4 policy does not pad every row to its length."""
        from trimpi.train.logprobs import IGNORE_INDEX

        groups = [self.collator([{"messages": it["messages"]} for it in g])
                  for g in micro_batches(items, self.opts.max_batch_chars)]
        n_tokens = sum(int((g["labels"] != IGNORE_INDEX).sum()) for g in groups)
        total = 0.0
        for g in groups:
            labels = g.pop("labels").to(self.device)
            with self.autocast():
                logits = self.model(**{k: v.to(self.device) for k, v in g.items()}).logits
            lm = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                   ignore_index=IGNORE_INDEX, reduction="sum") / max(n_tokens, 1)
            (self.stage.lm_weight * lm).backward()
            total += lm.item()
        return total

    def perception_losses(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Existence, dense-cell and count losses of the items' scene images."""
        from PIL import Image

        images = [Image.open(it["image"]).convert("RGB") for it in items]
        inputs = {k: v.to(self.device) for k, v in image_inputs(self.processor, images).items()}
        with self.autocast():
            scores, rates = self.head(image_token_features(self.model, inputs))
        dense = [cell_targets(it["objects"], self.labels, im.size, self.grid) for it, im in zip(items, images,
                                                                                               strict=True)]
        cells, keep, counts = (torch.stack(list(x)).to(self.device) for x in zip(*dense, strict=True))
        targets = cells.amax(1)  # a label is in the image when it is in one of its cells
        return perception_loss(scores.float(), rates.float(), targets, cells, keep, counts, self.prior)

    def batch_items(self) -> list[dict]:
        """This step's items; worker processes write the next shards meanwhile (the same files either way)."""
        from concurrent.futures import ProcessPoolExecutor

        from trimpi.data.pretrain.corpus import write_shard

        b, size = self.stage.batch_size, self.opts.shard_size
        first, last = self.step * b // size, ((self.step + 1) * b - 1) // size
        if self.opts.data_workers > 0:
            if self.pool is None:
                self.pool = ProcessPoolExecutor(self.opts.data_workers)
            for k in range(first, last + 1 + AHEAD):
                if k not in self.pending and not (self.corpus.shard_dir(k) / "items.jsonl").is_file():
                    self.pending[k] = self.pool.submit(write_shard, str(self.corpus.root), self.corpus.cfg, k)
            for k in range(first, last + 1):
                if k in self.pending:
                    self.pending.pop(k).result()
        return self.corpus.items(self.step * b, b)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None

    def train_step(self) -> dict[str, float]:
        self.model.train()
        parts = self.backward(self.batch_items())
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return parts

    def save(self) -> Path:
        """Write FOLDER/checkpoint atomically (a new folder renamed over the old one)."""
        final = self.folder / CHECKPOINT
        tmp = self.folder / f".{CHECKPOINT}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({"model": self.model.state_dict(), "head": self.head.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "step": self.step, "seconds": self.seconds, "dtype": self.dtype,
                    "rng": torch.get_rng_state()}, tmp / STATE)
        write_json(tmp / "progress.json", {"stage": self.stage.name, "step": self.step, "steps": self.stage.steps,
                                           "seconds": self.seconds, "dtype": self.dtype,
                                           "options": options_dict(self.opts)})
        old = self.folder / f".{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self) -> bool:
        """Continue from FOLDER/checkpoint when there is one; False when none."""
        path = self.folder / CHECKPOINT / STATE
        if not path.is_file():
            return False
        state = load_state(path, self.device)
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.seconds, self.dtype = state["step"], state["seconds"], state["dtype"]
        torch.set_rng_state(state["rng"])
        return True


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint's state: tensors and plain values only (weights_only: a run folder is untrusted input)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or crafted file: one line, nothing run
        raise ConfigError(f"{path}: not a readable pretraining checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def read_progress(folder: Path) -> dict | None:
    path = folder / CHECKPOINT / "progress.json"
    return read_json(path) if path.is_file() else None
