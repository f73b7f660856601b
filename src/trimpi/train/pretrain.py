"""Pretraining of the micro base: resumable exactly, in chunks, on the generated corpus.

    trimpi pretrain micro-base --out DIR [--hours H]     (rerun the same command to continue)

Each step trains on corpus items [step·B, (step+1)·B) (`trimpi.data.pretrain`): the language
loss on the assistant turn, plus a multiple-instance existence loss on the scene image's tokens
(`trimpi.train.perception`: a linear head over the image tokens scores every single attribute
value and value pair), which trains perception directly. The head is part of the checkpoint and
dropped at export.

A checkpoint (DIR/checkpoint/) holds model, head, optimizer, scheduler, step, RNG state, the
compute dtype and the running time; it is written every `save_minutes`, every `save_steps`, at
the end of a chunk (`hours`) and at the end. A rerun loads it and continues: the data of a step
depends on the step only, so a killed-and-rerun run reaches the same weights as an
uninterrupted one (on the same machine and thread count).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trimpi.data.io import read_json, write_json
from trimpi.errors import ConfigError
from trimpi.train.perception import existence_labels, existence_targets, image_inputs, image_token_features

CHECKPOINT = "checkpoint"
STEPS = 1000  # the shipped recipe's steps (batch 16): about 1 h on 2 idle CPU cores (Ice Lake, fp32)
STATE = "state.pt"


@dataclass
class Architecture:
    """Idefics3 micro base. Image tokens per image = (image_size / patch_size / scale_factor)²;
    head_dim = hidden / heads must be >= 32 in both towers (vLLM's CPU attention needs it)."""

    image_size: int = 224
    patch_size: int = 14
    scale_factor: int = 2
    hidden: int = 256  # 256×4 trains 2.6× the tokens/s of 384×6 on 2 CPU cores (benchmarks/RESULTS.md)
    layers: int = 4
    heads: int = 8
    kv_heads: int = 8
    intermediate: int = 768
    vision_hidden: int = 192
    vision_layers: int = 6
    vision_heads: int = 6
    vocab: int = 4096

    def check(self) -> None:
        for tower, hidden, heads in (("text", self.hidden, self.heads), ("vision", self.vision_hidden,
                                                                       self.vision_heads)):
            if hidden % heads or hidden // heads < 32:
                raise ConfigError(f"{tower} tower: hidden {hidden} / heads {heads} must be a whole head_dim >= 32")
        if self.heads % self.kv_heads:
            raise ConfigError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.image_size % (self.patch_size * self.scale_factor):
            raise ConfigError(f"image_size {self.image_size} must be a multiple of patch_size × scale_factor "
                              f"({self.patch_size * self.scale_factor})")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size // self.scale_factor) ** 2


@dataclass
class PretrainOptions:
    """Options of `trimpi pretrain micro-base` (defaults: the shipped base's recipe)."""

    out: str
    arch: Architecture = field(default_factory=Architecture)
    seed: int = 0
    steps: int = STEPS
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    existence_weight: float = 0.5
    max_batch_chars: int = 12_000  # padded characters per micro-batch (≈ 3k tokens); a step may take several
    shard_size: int = 512
    render_sizes: tuple[tuple[int, int], ...] = ((160, 120), (224, 168), (320, 240))
    depths: tuple[int, ...] = (2, 4)  # policy depths in context (trimpi.data.pretrain.corpus.DEPTHS)
    data_workers: int = 1  # processes writing the next shards while the model trains (0: none)
    exclude: tuple[str, ...] = ()
    tokenizer_policies: int = 300
    hours: float | None = None
    save_minutes: float = 10.0
    save_steps: int = 0
    stop_after: int | None = None  # steps in this run (tests and smoke runs); None: until `steps` or `hours`
    dtype: str = "auto"
    device: str = "auto"
    progress: bool = True


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX or AVX512-BF16 (bf16 matmul ~4× fp32 there; ~300× slower on AVX2 only)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def compute_dtype(choice: str, device: torch.device) -> str:
    """'bfloat16' (autocast) or 'float32' for the run; "auto" picks by the device's measured capability."""
    if choice in ("float32", "bfloat16"):
        return choice
    if choice != "auto":
        raise ConfigError(f"--dtype: expected auto, float32 or bfloat16, got {choice!r}")
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def build_model(opts: PretrainOptions):
    """(model, processor): a fresh Idefics3 with the fixed tokenizer trained on the generated text corpus."""
    from trimpi.data.pretrain.texts import tokenizer_texts
    from trimpi.models.tiny import TinySize, build_idefics3
    from trimpi.models.tokenizer import train_bpe_tokenizer

    a = opts.arch
    a.check()
    tok = train_bpe_tokenizer(tokenizer_texts(opts.seed, opts.tokenizer_policies), "idefics3", vocab_size=a.vocab)
    size = TinySize(hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, intermediate=a.intermediate,
                    vision_hidden=a.vision_hidden, vision_layers=a.vision_layers, vision_heads=a.vision_heads,
                    vocab=a.vocab, image_size=a.image_size)
    torch.manual_seed(opts.seed)
    model, processor = build_idefics3(tok, size, vision_patch=a.patch_size, scale_factor=a.scale_factor)
    return model.float(), processor


def schedule(step: int, opts: PretrainOptions) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak learning rate."""
    import math

    if step < opts.warmup_steps:
        return (step + 1) / opts.warmup_steps
    progress = min(1.0, (step - opts.warmup_steps) / max(1, opts.steps - opts.warmup_steps))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def corpus_config(opts: PretrainOptions):
    from trimpi.data.pretrain.corpus import CorpusConfig

    return CorpusConfig(seed=opts.seed, shard_size=opts.shard_size, exclude=tuple(opts.exclude),
                        sizes=tuple(map(tuple, opts.render_sizes)), depths=tuple(opts.depths))


def prepare_corpus(opts: PretrainOptions, shards: int, workers: int, progress: bool = True) -> int:
    """Write the run's first `shards` corpus shards with `workers` processes (e.g. before a GPU run, whose
    steps outpace one data process); returns how many were written now."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from trimpi.data.pretrain.corpus import Corpus, write_shard

    corpus = Corpus(Path(opts.out) / "corpus", corpus_config(opts))
    todo = [k for k in range(shards) if not (corpus.shard_dir(k) / "items.jsonl").is_file()]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        jobs = [pool.submit(write_shard, str(corpus.root), corpus.cfg, k) for k in todo]
        for job in tqdm(as_completed(jobs), total=len(jobs), desc="corpus shards", disable=not progress):
            job.result()
    return len(todo)


def item_chars(item: dict) -> int:
    return sum(len(b.get("text", "")) + 200 * (b.get("type") == "image") for m in item["messages"] for b in m["content"])


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


class Trainer:
    """Model, existence head, optimizer and scheduler of one pretraining run, with save/load."""

    def __init__(self, opts: PretrainOptions, device: torch.device):
        from trimpi.data.pretrain.corpus import Corpus
        from trimpi.train.collate import Collator

        self.opts, self.device, self.out = opts, device, Path(opts.out)
        self.corpus = Corpus(self.out / "corpus", corpus_config(opts))
        self.pool, self.pending = None, {}
        self.model, self.processor = build_model(opts)
        self.model.to(device)
        self.labels = existence_labels()
        self.head = torch.nn.Linear(opts.arch.hidden, len(self.labels)).to(device)
        params = list(self.model.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: schedule(s, opts))
        self.collator = Collator(self.processor, "completion", config=self.model.config)
        self.step, self.seconds = 0, 0.0
        self.dtype = compute_dtype(opts.dtype, device)

    def backward(self, items: list[dict]) -> dict[str, float]:
        """Accumulate the gradients of one step: the language loss (mean over the step's target tokens,
        computed in length-grouped micro-batches so a depth-6 policy does not pad every row to its
        length) plus the weighted existence loss."""
        from trimpi.train.logprobs import IGNORE_INDEX

        groups = [self.collator([{"messages": it["messages"]} for it in g])
                  for g in micro_batches(items, self.opts.max_batch_chars)]
        n_tokens = sum(int((g["labels"] != IGNORE_INDEX).sum()) for g in groups)
        lm_total = 0.0
        for g in groups:
            labels = g.pop("labels").to(self.device)
            with self.autocast():
                logits = self.model(**{k: v.to(self.device) for k, v in g.items()}).logits
            lm = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                   ignore_index=IGNORE_INDEX, reduction="sum") / max(n_tokens, 1)
            lm.backward()
            lm_total += lm.item()
        parts = {"lm": lm_total}
        if self.opts.existence_weight > 0:
            ex = self.existence_loss(items)
            (self.opts.existence_weight * ex).backward()
            parts["existence"] = ex.item()
        return parts

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    def existence_loss(self, items: list[dict]) -> torch.Tensor:
        """Multiple-instance existence loss of the items' scene images (max over image tokens per label)."""
        from PIL import Image

        images = [Image.open(it["image"]).convert("RGB") for it in items]
        inputs = {k: v.to(self.device) for k, v in image_inputs(self.processor, images).items()}
        with self.autocast():
            scores = self.head(image_token_features(self.model, inputs)).amax(1).float()
        target = torch.tensor([existence_targets(it["objects"], self.labels) for it in items], device=self.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(scores, target)

    def batch_items(self) -> list[dict]:
        """This step's items; worker processes write the next shards meanwhile (the same files either way)."""
        from concurrent.futures import ProcessPoolExecutor

        from trimpi.data.pretrain.corpus import write_shard

        b, size = self.opts.batch_size, self.opts.shard_size
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
        torch.nn.utils.clip_grad_norm_(list(self.model.parameters()) + list(self.head.parameters()), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return parts

    def save(self) -> Path:
        """Write DIR/checkpoint atomically (a new folder renamed over the old one)."""
        final = self.out / CHECKPOINT
        tmp = self.out / f".{CHECKPOINT}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({"model": self.model.state_dict(), "head": self.head.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "step": self.step, "seconds": self.seconds, "dtype": self.dtype,
                    "rng": torch.get_rng_state()}, tmp / STATE)
        self.processor.save_pretrained(tmp)
        write_json(tmp / "progress.json", {"step": self.step, "steps": self.opts.steps, "seconds": self.seconds,
                                           "dtype": self.dtype, "options": options_dict(self.opts)})
        old = self.out / f".{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self) -> bool:
        """Continue from DIR/checkpoint when there is one (its options must match); False when none."""
        path = self.out / CHECKPOINT / STATE
        if not path.is_file():
            return False
        saved = read_json(self.out / CHECKPOINT / "progress.json")["options"]
        mine = options_dict(self.opts)
        changed = sorted(k for k in mine if k not in RUN_CONTROLS and saved.get(k) != mine[k])
        if changed:
            raise ConfigError(f"{self.out}: the checkpoint there was made with other options ({', '.join(changed)}); "
                              "use the same options or another --out")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.seconds, self.dtype = state["step"], state["seconds"], state["dtype"]
        torch.set_rng_state(state["rng"])
        return True


RUN_CONTROLS = ("hours", "save_minutes", "save_steps", "stop_after", "progress", "device", "data_workers")
AHEAD = 2  # shards written ahead of the one in use


def options_dict(opts: PretrainOptions) -> dict:
    """The options as JSON values (tuples become lists), as the checkpoint stores them."""
    import json

    return json.loads(json.dumps(dataclasses.asdict(opts)))


def run_pretrain(opts: PretrainOptions) -> dict:
    """Train (continuing any checkpoint in opts.out) until `steps`, `hours` or `stop_after`; returns progress."""
    from tqdm.auto import tqdm

    from trimpi.models.loading import default_device

    device = default_device() if opts.device == "auto" else torch.device(opts.device)
    trainer = Trainer(opts, device)
    resumed = trainer.load()
    start = time.monotonic()
    last_save = start
    done_here = 0
    bar = tqdm(total=opts.steps, initial=trainer.step, desc="pretraining micro base", disable=not opts.progress,
               unit="step")
    parts: dict[str, float] = {}
    while trainer.step < opts.steps:
        t0 = time.monotonic()
        parts = trainer.train_step()
        trainer.seconds += time.monotonic() - t0
        done_here += 1
        bar.update()
        bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
        now = time.monotonic()
        chunk_over = opts.hours is not None and now - start >= opts.hours * 3600
        stop = chunk_over or (opts.stop_after is not None and done_here >= opts.stop_after)
        due = now - last_save >= opts.save_minutes * 60 or (opts.save_steps and trainer.step % opts.save_steps == 0)
        if due or stop or trainer.step >= opts.steps:
            trainer.save()
            last_save = time.monotonic()
        if stop:
            break
    bar.close()
    trainer.close()
    return {"step": trainer.step, "steps": opts.steps, "resumed": resumed, "seconds": trainer.seconds,
            "dtype": trainer.dtype, "device": str(device), "finished": trainer.step >= opts.steps, **parts}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_progress(run: str | Path) -> dict:
    """progress.json of a run's checkpoint: step, steps, seconds, dtype, options."""
    path = Path(run) / CHECKPOINT / "progress.json"
    if not path.is_file():
        raise ConfigError(f"{run}: no pretraining checkpoint (run `trimpi pretrain micro-base --out {run}` first)")
    return read_json(path)


def options_from_run(run: str | Path) -> PretrainOptions:
    """The options a run directory's checkpoint was made with."""
    saved = run_progress(run)["options"]
    saved["arch"] = Architecture(**saved["arch"])
    saved["exclude"] = tuple(saved["exclude"])
    saved["render_sizes"] = tuple(tuple(s) for s in saved["render_sizes"])
    saved["depths"] = tuple(saved["depths"])
    return PretrainOptions(**saved)


def export_run(run: str | Path, target: str | Path, measured: dict | None = None, allow_unfinished: bool = False):
    """Export a run's checkpoint as the shipped base into `target` (bf16 safetensors, processor, card)."""
    from trimpi.models.shipped import export_base

    opts = options_from_run(run)
    state = torch.load(Path(run) / CHECKPOINT / STATE, map_location="cpu", weights_only=False)
    if state["step"] < opts.steps and not allow_unfinished:
        raise ConfigError(f"{run}: the run is at step {state['step']} of {opts.steps}; finish it or pass "
                          "--allow-unfinished")
    from transformers import AutoProcessor

    model, _ = build_model(opts)
    model.load_state_dict(state["model"])
    processor = AutoProcessor.from_pretrained(str(Path(run) / CHECKPOINT), local_files_only=True)
    facts = {
        "name": "trimpi micro base",
        "summary": "An Idefics3 VLM pretrained from scratch by trimpi on generated CLEVR perception items and "
                   "random in-context ClevrPolicy policies (never the evaluation policies or images).",
        "architecture": dataclasses.asdict(opts.arch) | {"family": "idefics3",
                                                         "parameters": sum(p.numel() for p in model.parameters())},
        "training": {"steps": state["step"], "batch_size": opts.batch_size, "lr": opts.lr, "seed": opts.seed,
                     "compute_dtype": state["dtype"], "train_hours": round(state["seconds"] / 3600, 3),
                     "corpus": "trimpi.data.pretrain (seed stream 91750321, names of 4-5 syllables)",
                     "exclude": ", ".join(opts.exclude) or "none"},
        "machine": machine(),
        "command": f"trimpi pretrain micro-base --out {run} --seed {opts.seed} --steps {opts.steps}  "
                   f"(then: trimpi pretrain export --run {run} --to src/trimpi/models/base)",
        "measured": measured or "not yet measured (see benchmarks/RESULTS.md)",
    }
    return export_base(model, processor, target, facts)
