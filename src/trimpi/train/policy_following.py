"""A policy-following base: a model that partly follows short policies given in context.

The paper's stages start from an instruction-tuned VLM that already follows a policy put in
its prompt (Qwen2.5-VL-7B: 72 % at depth 2, 13 % at depth 6). An embedded preset starts from
nothing, so its in-context baseline would mean nothing. `build_base` gives it that ability
on randomly generated ClevrPolicy policies, disjoint from the ones to be internalized:

    OUT/data/<variant>/   random policies (own seed stream), scenes, compact CoT records
    OUT/init/             the fresh preset (micro: tokenizer trained on that text + `texts_from`)
    OUT/warmup/           perception warm-up on the scenes (`trimpi.train.warmup`)
    OUT/model/            in-context CoT SFT: [policy in the system turn, image, query] → trace + answer
    OUT/base.json         options, trained / excluded policy counts, in-context accuracy on held-out scenes

Every part is skipped when finished, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.io import read_json, write_json
from trimpi.errors import ConfigError, DataError

BASE_FILE = "base.json"
SEED_STREAM = 7_000_000  # the base's policies are drawn from seeds no dataset build uses by default
EVAL_OPTIONS = ("eval_batch_size", "max_new_tokens")  # they change how the base is measured, not the base


@dataclass
class BaseOptions:
    """Options of `build_base` (sizes per variant; each variant builds every depth)."""

    out: str
    model: str = "micro"
    seed: int = 0
    variants: list[str] = field(default_factory=lambda: ["T", "M"])
    depths: list[int] = field(default_factory=lambda: [2, 4])
    policies: int = 24
    scenes: int = 1000
    test: int = 100
    examples: int = 1000
    width: int = 160
    height: int = 120
    warmup: dict[str, Any] = field(default_factory=dict)
    epochs: float = 2
    lr: float = 5e-4
    batch_size: int = 8
    exclude: list[str] = field(default_factory=list)
    texts_from: list[str] = field(default_factory=list)
    eval_batch_size: int = 32
    max_new_tokens: int = 256  # a depth-6 CoT trace runs to about 200 tokens
    progress: bool = True

    def check(self) -> None:
        from trimpi.data.clevr.config import DEPTHS

        if not self.variants or set(self.variants) - {"T", "M"}:
            raise ConfigError(f"base.variants: expected a non-empty list of T and M, got {self.variants}")
        if not self.depths or set(self.depths) - set(DEPTHS):
            raise ConfigError(f"base.depths: each must be one of {DEPTHS}, got {self.depths}")
        if self.examples > self.policies * self.scenes:
            raise ConfigError(f"base.examples: at most policies × scenes ({self.policies * self.scenes}), "
                              f"got {self.examples}")
        for name in ("policies", "scenes", "test", "examples", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"base.{name}: must be >= 1, got {getattr(self, name)}")


def tree_key(policy: dict) -> str:
    """What makes two ClevrPolicy policies the same decision procedure: root and nodes."""
    blob = json.dumps({"root": policy["root"], "nodes": policy["nodes"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_tree_keys(data: str | Path) -> set[str]:
    """Tree keys of every decision-tree policy under a dataset directory (any depth of nesting)."""
    keys = set()
    for path in sorted(Path(data).rglob("*.json")):
        if path.parent.name not in ("policies", "override_policies"):
            continue
        policy = read_json(path)
        if isinstance(policy, dict) and "nodes" in policy and "root" in policy:
            keys.add(tree_key(policy))
    return keys


def setting_dirs(opts: BaseOptions) -> list[Path]:
    return [Path(opts.out) / "data" / v / f"{v}-d{d}" for v in opts.variants for d in opts.depths]


def build_data(opts: BaseOptions) -> None:
    """One ClevrPolicy build per variant, with the base's own seed stream (skipped when present)."""
    from trimpi.data.clevr.build import build_clevr
    from trimpi.data.clevr.config import ClevrConfig

    for variant in opts.variants:
        out = Path(opts.out) / "data" / variant
        if (out / "manifest.json").is_file():
            continue
        cfg = ClevrConfig.checked(depths=opts.depths, variant=variant, policies=opts.policies,
                                  train_per_policy=opts.scenes, test=opts.test, cot=opts.examples, trace="compact",
                                  general=0, width=opts.width, height=opts.height,
                                  seed=SEED_STREAM + 1000 * opts.seed + (variant == "M"))
        build_clevr(cfg, out, overwrite=True, progress=opts.progress)


def in_context_examples(settings: list[Path], excluded: set[str]) -> tuple[list[dict], dict[str, int]]:
    """Chat examples [policy (system), image, query] → reasoning + answer from each setting's
    train_cot.jsonl, without the records whose policy tree is in `excluded`; and counts."""
    from trimpi.data.schema import PolicyStore, load_records, render_messages

    examples, policies, dropped = [], set(), 0
    for root in settings:
        store = PolicyStore(root)
        for r in load_records(root / "train_cot.jsonl"):
            key = tree_key(read_json(root / r.policy_path))
            if key in excluded:
                dropped += 1
                continue
            policies.add(key)
            messages = render_messages(r, root, store.get(r), placement="system", with_target=True)
            examples.append({"id": r.id, "messages": messages})
    if not examples:
        raise DataError("policy-following base: no in-context examples left after excluding the target policies")
    return examples, {"examples": len(examples), "policies": len(policies), "dropped_records": dropped}


def make_init(opts: BaseOptions, out: Path) -> None:
    """The fresh model, saved once (a micro tokenizer is trained on the base's and `texts_from` text)."""
    from trimpi.data.schema import dataset_texts
    from trimpi.models.loading import load_model, save_checkpoint
    from trimpi.models.presets import build_micro

    if (out / "config.json").is_file():
        return
    if opts.model == "micro":
        texts = [t for d in setting_dirs(opts) + [Path(p) for p in opts.texts_from] for t in dataset_texts(d)]
        model, processor = build_micro(texts=texts, seed=opts.seed)
    else:
        model, processor = load_model(opts.model, dtype="float32", device="cpu", seed=opts.seed)
    save_checkpoint(model, processor, out)


def in_context_accuracy(model_dir: Path, opts: BaseOptions) -> dict[str, float]:
    """In-context accuracy of the finished base on each setting's test split (held-out scenes)."""
    from trimpi.eval.runner import EvalOptions, run_eval

    scores = {}
    for root in setting_dirs(opts):
        ev = EvalOptions(protocols=["in_context"], batch_size=opts.eval_batch_size,
                         max_new_tokens=opts.max_new_tokens, progress=opts.progress)
        result = run_eval(str(model_dir), root, Path(opts.out) / "eval" / root.name, ev, seed=opts.seed)
        scores[root.name] = next(iter(result.values()))["protocols"]["in_context"]["score"]
    return scores


def build_base(opts: BaseOptions, callbacks=()) -> dict[str, Any]:
    """Build (or finish building) the policy-following base under `opts.out`; returns base.json's content."""
    from trimpi.train.sft import StageOptions, run_stage
    from trimpi.train.warmup import WarmupOptions, run_warmup

    opts.check()
    out = Path(opts.out)
    if (out / BASE_FILE).is_file():
        return reevaluated(read_json(out / BASE_FILE), opts)
    start = time.perf_counter()
    excluded = set().union(*(dataset_tree_keys(d) for d in opts.exclude)) if opts.exclude else set()
    build_data(opts)
    make_init(opts, out / "init")
    warm = out / "warmup"
    if not (warm / "trimpi_stage.json").is_file():
        run_warmup(WarmupOptions(data=str(setting_dirs(opts)[0]), out=str(warm), model=str(out / "init"),
                                 seed=opts.seed, progress=opts.progress, **opts.warmup), callbacks=callbacks)
    examples, counts = in_context_examples(setting_dirs(opts), excluded)
    final = model_dir(opts)
    if not (final / "trimpi_stage.json").is_file():
        stage = StageOptions(data=str(setting_dirs(opts)[0]), model=str(warm), out=str(final), stage="sft",
                             epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size, lora_rank=0, seed=opts.seed,
                             save_steps=100)
        run_stage(stage, callbacks=callbacks, examples=examples)
    record = {"model": str(final), "options": dataclasses.asdict(opts), **counts,
              "excluded_policies": len(excluded), "warmup": _warmup_summary(warm),
              "in_context_accuracy": in_context_accuracy(final, opts),
              "seconds": round(time.perf_counter() - start, 1)}
    write_json(out / BASE_FILE, record)
    return record


def reevaluated(record: dict[str, Any], opts: BaseOptions) -> dict[str, Any]:
    """A finished base's record (its model where it is now, should OUT have moved), its in-context accuracy
    measured again if the evaluation options changed."""
    record = {**record, "model": str(model_dir(opts))}
    if measured_with(record, opts):
        return record
    record = {**record, "options": dataclasses.asdict(opts),
              "in_context_accuracy": in_context_accuracy(Path(record["model"]), opts)}
    write_json(Path(opts.out) / BASE_FILE, record)
    return record


def model_dir(opts: BaseOptions) -> Path:
    return Path(opts.out) / "model"


def base_ready(opts: BaseOptions) -> bool:
    """Whether the base under `opts.out` is built and measured with these evaluation options."""
    path = Path(opts.out) / BASE_FILE
    return path.is_file() and measured_with(read_json(path), opts)


def measured_with(record: dict[str, Any], opts: BaseOptions) -> bool:
    """Whether a finished base's in-context accuracy was measured with these evaluation options."""
    return all(record["options"].get(k) == getattr(opts, k) for k in EVAL_OPTIONS)


def _warmup_summary(warm: Path) -> dict[str, Any]:
    summary = read_json(warm / "trimpi_stage.json")
    vision = summary.get("vision_pretraining") or {}
    keep = {k: vision[k] for k in ("single_balanced_accuracy", "pair_balanced_accuracy", "probe_policy_accuracy")
            if k in vision}
    if "existence_accuracy" in summary:
        keep["existence_balanced_accuracy"] = summary["existence_accuracy"].get("balanced_accuracy")
    return keep
