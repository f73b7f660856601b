"""Per-step RL metrics: sums and counts accumulated locally, reduced over processes, logged as JSONL.

Names follow TRL's GRPO logs where TRL has one (reward, reward_std, kl, entropy,
clip_ratio/*, completions/*, frac_reward_zero_std); PolicyRollout adds the split of reward
and accuracy between ordinary (`plain`) and policy-aware (`policy`) samples.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist

from trimpi.train.rl.rollout import Sample


class MetricSums:
    """name -> (sum, count), averaged after a sum over processes; `set` stores a plain value."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.mins: dict[str, float] = {}
        self.maxs: dict[str, float] = {}

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        self.sums[name] += float(total)
        self.counts[name] += float(count)

    def extreme(self, name: str, lo: float, hi: float) -> None:
        self.mins[name] = min(self.mins.get(name, lo), lo)
        self.maxs[name] = max(self.maxs.get(name, hi), hi)

    def reduce(self, names: list[str]) -> dict[str, float]:
        """Means over all processes. `names` must be the same list (same order) on every process."""
        sums = torch.tensor([[self.sums.get(n, 0.0), self.counts.get(n, 0.0)] for n in names], dtype=torch.float64)
        ext_names = sorted(self.mins)
        lo = torch.tensor([self.mins[n] for n in ext_names], dtype=torch.float64)
        hi = torch.tensor([self.maxs[n] for n in ext_names], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        out = {n: (s / c if c > 0 else 0.0) for n, (s, c) in zip(names, sums.tolist())}
        out.update({f"{n}/min": v for n, v in zip(ext_names, lo.tolist())})
        out.update({f"{n}/max": v for n, v in zip(ext_names, hi.tolist())})
        return out


SAMPLE_METRICS = [
    "reward", "reward_sq", "reward/plain", "reward/policy", "accuracy/plain", "accuracy/policy", "format_rate",
    "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std", "num_samples",
]
TRAIN_METRICS = [
    "loss", "kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
]


def add_sample_metrics(m: MetricSums, samples: list[Sample], groups_sampled: int, groups_zero_std: int) -> None:
    """Reward / accuracy / format / length statistics of every sampled completion (before
    dynamic-sampling filtering), split by ordinary vs policy-aware."""
    for s in samples:
        m.add("reward", s.reward)
        m.add("reward_sq", s.reward * s.reward)
        kind = "policy" if s.policy_aware else "plain"
        m.add(f"reward/{kind}", s.reward)
        if "accuracy" in s.reward_parts:
            m.add(f"accuracy/{kind}", s.reward_parts["accuracy"])
        if "format" in s.reward_parts:
            m.add("format_rate", s.reward_parts["format"])
        m.add("completions/mean_length", len(s.completion.token_ids))
        m.add("completions/clipped_ratio", float(s.completion.truncated))
    lengths = [len(s.completion.token_ids) for s in samples] or [0]
    m.extreme("completions/length", min(lengths), max(lengths))
    m.add("frac_reward_zero_std", groups_zero_std, groups_sampled)
    m.add("num_samples", len(samples), 1)


def finish(values: dict[str, float]) -> dict[str, float]:
    """Derived values: reward_std from the reduced first and second moments."""
    out = dict(values)
    second = out.pop("reward_sq", 0.0)
    out["reward_std"] = max(second - out.get("reward", 0.0) ** 2, 0.0) ** 0.5
    return out


class JsonlLogger:
    """Appends one JSON object per step; on resume, drops lines of steps after the checkpoint."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None and self.path.is_file():
            self.path.unlink()

    def log(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
