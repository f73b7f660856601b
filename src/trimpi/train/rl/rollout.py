"""Rollouts: plain GRPO groups and PolicyRollout groups, rewards, advantages, dynamic sampling.

PolicyRollout (SPEC §4): for each record, G completions are sampled from the no-policy
prompt (Q, I) and G from the policy-aware prompt (Q, I, P). All 2G share one group id, are
scored together, and are stored with the **no-policy** prompt: old, reference and current
log-probs are computed as if every completion had been generated from (Q, I).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from trimpi.data.schema import PolicyStore, Record
from trimpi.errors import TrimpiError
from trimpi.generation.engine import Completion, GenerationEngine, SamplingParams  # noqa: F401
from trimpi.generation.prompts import Prompt, PromptBuilder
from trimpi.train.distributed import global_max
from trimpi.train.rl.core_algos import group_advantages, zero_std_groups
from trimpi.train.rl.encoding import completion_mask
from trimpi.train.rl.rewards import RewardSpec


@dataclass
class Sample:
    """One scored completion. `prompt` is always the no-policy prompt of `record`."""

    record: Record
    group_id: int
    policy_aware: bool  # sampled with the policy in context
    prompt: Prompt
    completion: Completion
    reward: float = 0.0
    reward_parts: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutBatch:
    """Samples of one optimizer step and their per-sample tensors (N = len(samples))."""

    samples: list[Sample]
    advantages: torch.Tensor  # (N,)
    rewards: torch.Tensor  # (N,)
    group_ids: torch.Tensor  # (N,)
    policy_aware: torch.Tensor  # (N,) bool
    truncated: torch.Tensor  # (N,) bool
    mask: torch.Tensor  # (N, T) completion-token mask, truncated rows zeroed if masked
    old_logps: torch.Tensor | None = None  # (N, T) filled when updates are off-policy
    ref_logps: torch.Tensor | None = None  # (N, T) filled when beta > 0
    sampling_logps: torch.Tensor | None = None  # (N, T) the engine's own log-probs, when it gives them (vLLM)

    @property
    def completions(self) -> list[list[int]]:
        return [s.completion.token_ids for s in self.samples]


def sample_groups(
    engine: GenerationEngine,
    builder: PromptBuilder,
    records: list[Record],
    group_ids: list[int],
    num_generations: int,
    params: SamplingParams,
    rewards: RewardSpec,
    policies: PolicyStore | None = None,
) -> list[Sample]:
    """Sample and score the groups of `records`: G plain samples each, plus G policy-aware
    samples when `policies` is given (PolicyRollout). Returns samples ordered by record,
    plain samples first."""
    plain = [builder(r) for r in records]
    aware_prompts = [builder(r, policies.get(r)) for r in records] if policies is not None else []
    # one engine call for both halves: one decoding loop over all 2G·B sequences
    outs = engine.generate(plain + aware_prompts, num_generations, params)
    outs, aware_outs = outs[: len(plain)], outs[len(plain) :] or [[] for _ in records]
    samples: list[Sample] = []
    for rec, gid, prompt, group, aware in zip(records, group_ids, plain, outs, aware_outs):
        samples += [Sample(rec, gid, False, prompt, c) for c in group]
        samples += [Sample(rec, gid, True, prompt, c) for c in aware]
    total, parts = rewards.score([s.completion.text for s in samples], [s.record for s in samples])
    for i, s in enumerate(samples):
        s.reward = total[i]
        s.reward_parts = {k: v[i] for k, v in parts.items()}
    return samples


def make_batch(samples: list[Sample], scale_rewards: str, mask_truncated: bool) -> RolloutBatch:
    """Tensors and group advantages (over each group id's samples) for a list of samples."""
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float32)
    gids = torch.tensor([s.group_id for s in samples], dtype=torch.long)
    truncated = torch.tensor([s.completion.truncated for s in samples], dtype=torch.bool)
    mask = completion_mask([s.completion.token_ids for s in samples])
    if mask_truncated:
        mask = mask * (~truncated).float().unsqueeze(-1)
    return RolloutBatch(
        samples=samples,
        advantages=group_advantages(rewards, gids, scale_rewards),
        rewards=rewards,
        group_ids=gids,
        policy_aware=torch.tensor([s.policy_aware for s in samples], dtype=torch.bool),
        truncated=truncated,
        mask=mask,
        sampling_logps=_sampling_logps([s.completion for s in samples], mask.shape[1]),
    )


def _sampling_logps(completions: list[Completion], t: int) -> torch.Tensor | None:
    """(N, T) right-padded sampling log-probs, or None unless every completion carries them."""
    if not completions or any(c.logprobs is None for c in completions):
        return None
    out = torch.zeros(len(completions), t)
    for i, c in enumerate(completions):
        out[i, : len(c.logprobs)] = torch.tensor(c.logprobs[:t], dtype=torch.float32)
    return out


@dataclass
class RolloutStats:
    """What happened while collecting one step's groups (before dynamic-sampling filtering)."""

    sampled: list[Sample] = field(default_factory=list)
    groups_sampled: int = 0
    groups_zero_std: int = 0
    tries: int = 0


def first_groups(samples: list[Sample], k: int) -> list[Sample]:
    """The samples of the first k group ids met in `samples` (in order)."""
    ids = set(list(dict.fromkeys(s.group_id for s in samples))[:k])
    return [s for s in samples if s.group_id in ids]


def collect(
    next_records: Callable[[int], list[tuple[int, Record]]],
    sample_fn: Callable[[list[Record], list[int]], list[Sample]],
    num_prompts: int,
    dynamic_sampling: bool,
    max_tries: int,
    most_needed: Callable[[int], int] = global_max,
) -> tuple[list[Sample], RolloutStats]:
    """Collect `num_prompts` groups. `next_records(k)` yields k (group_id, record) pairs from
    the data stream; `sample_fn(records, group_ids)` samples and scores them.

    With dynamic sampling (DAPO), groups whose rewards are all equal are dropped and more
    prompts are drawn until `num_prompts` groups are kept, at most `max_tries` rounds; after
    that the step goes on with the groups it has. When no group at all had varied rewards, it
    goes on with the last round's groups: their advantages are zero, so the update carries no
    policy-gradient signal (as plain GRPO's does for flat groups), and a long run is not lost.

    Processes sample in step (under ZeRO-3 each generate forward is collective): `most_needed(need)`
    is the most groups any process still needs (collective; `global_max`), and every process draws
    that many each round until none needs more. A process that needs fewer keeps the first varied
    groups it needs and drops the others; one that needs none samples only to stay in step.
    """
    stats = RolloutStats()
    kept: list[Sample] = []
    last: list[Sample] = []
    while stats.tries < (max_tries if dynamic_sampling else 1):
        need = num_prompts - len({s.group_id for s in kept})
        draw = most_needed(need)
        if draw <= 0:
            break
        stats.tries += 1
        drawn = next_records(draw)
        samples = sample_fn([r for _, r in drawn], [g for g, _ in drawn])
        stats.sampled += samples
        stats.groups_sampled += len(drawn)
        if not samples:
            continue
        rewards = torch.tensor([s.reward for s in samples])
        gids = torch.tensor([s.group_id for s in samples])
        flat = zero_std_groups(rewards, gids)
        stats.groups_zero_std += len({s.group_id for s, z in zip(samples, flat.tolist()) if z})
        if need <= 0:
            continue
        last = first_groups(samples, need)
        if dynamic_sampling:
            samples = [s for s, z in zip(samples, flat.tolist()) if not z]
        kept += first_groups(samples, need)
    return kept or last, stats


def record_stream(records: list[Record], seed: int, start: int = 0) -> Iterator[tuple[int, Record]]:
    """Endless stream of (position, record): a seeded permutation per epoch. `position` counts
    records drawn since the start (it is the data position saved for exact resume, and the
    group id)."""
    n = len(records)
    if n == 0:
        raise TrimpiError("no training records")
    pos = start
    while True:
        epoch, k = divmod(pos, n)
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g).tolist()
        for i in order[k:]:
            yield pos, records[i]
            pos += 1


class ShardStream:
    """One process's endless stream of its shard of the records (`record_stream`).

    `position` (records drawn so far) is what a checkpoint saves; group ids are unique over
    processes: position × world + rank."""

    def __init__(self, shard: list[Record], seed: int, world: int = 1, rank: int = 0, start: int = 0):
        self.world, self.rank, self.position = world, rank, start
        self._stream = record_stream(shard, seed, start)

    def take(self, k: int) -> list[tuple[int, Record]]:
        """The next k (group id, record) pairs."""
        drawn = [next(self._stream) for _ in range(k)]
        self.position = drawn[-1][0] + 1
        return [(pos * self.world + self.rank, rec) for pos, rec in drawn]
