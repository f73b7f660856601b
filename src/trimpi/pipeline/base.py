"""A policy-following base: a model that partly follows short policies given in context.

The paper's stages start from an instruction-tuned VLM that already follows a policy put in
its prompt (Qwen2.5-VL-7B: 72 % at depth 2, 13 % at depth 6). An embedded preset starts from
nothing, so its in-context baseline would mean nothing. A recipe's `base:` section gives it
that ability first, on randomly generated ClevrPolicy policies disjoint from the ones to be
internalized. The plan turns it into ordinary steps (see `plan.plan_base`):

    data     the base's own ClevrPolicy builds, one per variant (own seed stream, compact traces)
    base     the fresh model (a preset's tokenizer trained on the base's data and any non-ClevrPolicy
             dataset involved, e.g. GTAPolicy, whose words the base's data lacks)
    warmup   perception warm-up on the base's first setting
    sft      in-context CoT SFT: [policy in the system turn, image, query] → trace + answer,
             without every record whose policy tree is in one of the excluded datasets
    eval     in-context accuracy of the result on each of the base's settings (held-out scenes)

This module holds the section's options and the pure helpers the executors use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.clevr.tree import tree_key
from trimpi.data.io import read_json
from trimpi.errors import ConfigError, DataError

SEED_STREAM = 7_000_000  # the base's policies are drawn from seeds no dataset build uses by default


@dataclass
class BaseOptions:
    """The recipe's `base:` section (sizes per variant; each variant builds every depth).

    datasets: other datasets (recipe `data:` mappings) whose policies the base must not learn and
    whose text a preset's tokenizer is trained on; the recipe's own dataset always counts.
    """

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
    eval_batch_size: int = 32
    max_new_tokens: int = 256  # a depth-6 CoT trace runs to about 200 tokens
    datasets: list[dict[str, Any]] = field(default_factory=list)

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


def data_config(opts: BaseOptions, seed: int) -> dict[str, Any]:
    """The config of the base's data step: one full ClevrPolicy build per variant."""
    from trimpi.data.clevr.config import ClevrConfig

    builds = {v: ClevrConfig.checked(depths=opts.depths, variant=v, policies=opts.policies,
                                     train_per_policy=opts.scenes, test=opts.test, cot=opts.examples,
                                     trace="compact", general=0, width=opts.width, height=opts.height,
                                     seed=SEED_STREAM + 1000 * seed + (v == "M")).model_dump()
              for v in opts.variants}
    return {"source": "policy_base", "clevr": builds}


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
    return examples, {"examples": len(examples), "policies": len(policies), "dropped_records": dropped,
                      "excluded_policies": len(excluded)}
