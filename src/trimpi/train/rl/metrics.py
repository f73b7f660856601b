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

from trimpi.train.distributed import all_reduced
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
        sums, lo, hi = all_reduced(sums), all_reduced(lo, "min"), all_reduced(hi, "max")
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


STEP_METRICS = SAMPLE_METRICS + TRAIN_METRICS + ["dynamic_sampling/tries", "completion_tokens", "step_time",
                                                 "generation_time"]


def step_row(m: MetricSums, stats, world: int, step_time: float, generation_time: float) -> dict[str, float]:
    """The reduced metrics of one step (collective under DDP: call on every process). `stats`:
    the step's RolloutStats; completion_tokens is summed over processes, the rest averaged."""
    m.add("dynamic_sampling/tries", stats.tries)
    m.add("completion_tokens", sum(len(s.completion.token_ids) for s in stats.sampled), 1.0 / world)
    m.add("step_time", step_time)
    m.add("generation_time", generation_time)
    row = finish(m.reduce(STEP_METRICS))
    row["tokens_per_s"] = row["completion_tokens"] / max(row["step_time"], 1e-9)
    return row


def progress_postfix(row: dict, accuracy: tuple[str, ...] = ()) -> dict[str, str]:
    """What the progress bar shows of a step: the reward, and the accuracy of each sample kind in
    `accuracy` ("plain", and "policy" under PolicyRollout)."""
    shown = {"reward": row.get("reward"), **{f"acc/{k}": row.get(f"accuracy/{k}") for k in accuracy}}
    return {k: f"{v:.3f}" for k, v in shown.items() if v is not None}


class StepLogger:
    """Where each step's metrics go: OUT/metrics.jsonl (every `every` steps, main process), the
    accelerate trackers (`report_to`) and a progress bar with ETA (`progress`, main process) showing
    the reward and the accuracy of the sample kinds in `accuracy`.

    metrics.jsonl keeps the rows up to `start_step`, the step the run (re)starts from.
    """

    def __init__(self, out: str | Path, start_step: int, total_steps: int, accelerator, every: int = 1,
                 trackers: bool = False, progress: bool = False, accuracy: tuple[str, ...] = ()):
        from tqdm.auto import tqdm

        from trimpi.train.stage import METRICS_FILE, resume_metrics

        self.main = accelerator.is_main_process
        self.accelerator, self.every, self.trackers, self.accuracy = accelerator, max(every, 1), trackers, accuracy
        self.path = Path(out) / METRICS_FILE
        if self.main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            resume_metrics(out, start_step)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="rl", unit="step",
                        disable=not (progress and self.main))

    def log(self, row: dict) -> None:
        if not self.main:
            return
        self.bar.set_postfix(progress_postfix(row, self.accuracy), refresh=False)
        self.bar.update(1)
        if row["step"] % self.every == 0:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")
            if self.trackers:
                self.accelerator.log(row, step=row["step"])

    def close(self) -> None:
        self.bar.close()
