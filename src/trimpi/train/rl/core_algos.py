"""The RL math: group advantages, the clipped policy objective, k3 KL, loss aggregation.

Every function is pure (tensors in, tensors out) so tests can pin it to hand-computed values.
Shapes: N = samples in the batch, T = completion tokens (right-padded), G = distinct groups.
`mask` is 1.0 on real completion tokens and 0.0 on padding (and on truncated completions when
they are masked).

Loss aggregation is written so that the update does not depend on how the optimizer-step
batch is cut into micro-batches: each micro-batch returns its *share* of the full-batch loss,
divided by normalisers computed once over the whole batch (`LossNormalizer`). Summing the
micro-batch losses (gradient accumulation) gives exactly the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")
ADV_EPS = 1e-4  # added to the std before dividing, as in TRL


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and unbiased std of the rewards of the sample's group.

    rewards: (N,) float; group_ids: (N,) int (any values; samples with equal ids form a group,
    groups may differ in size). Returns (mean, std), each (N,). A group of one has std 0.
    """
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    counts_f = counts.to(rewards.dtype)
    sums = torch.zeros(len(counts), dtype=rewards.dtype).index_add_(0, inverse, rewards)
    means = sums / counts_f
    sq = torch.zeros(len(counts), dtype=rewards.dtype).index_add_(0, inverse, (rewards - means[inverse]) ** 2)
    var = torch.where(counts > 1, sq / (counts_f - 1).clamp(min=1), torch.zeros_like(sq))
    return means[inverse], var.sqrt()[inverse]


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale_rewards: str = "group", eps: float = ADV_EPS
) -> torch.Tensor:
    """GRPO advantages: reward minus its group mean, optionally divided by a std.

    rewards: (N,); group_ids: (N,). scale_rewards: "group" divides by the group's std (GRPO),
    "batch" by the std of all N rewards, "none" does not scale (Dr. GRPO). Returns (N,).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    mean, std = group_stats(rewards, group_ids)
    adv = rewards - mean
    if scale_rewards == "group":
        adv = adv / (std + eps)
    elif scale_rewards == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        adv = adv / (batch_std + eps)
    return adv


def zero_std_groups(rewards: torch.Tensor, group_ids: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """(N,) bool: True where the sample's group has all-equal rewards (no learning signal)."""
    _, std = group_stats(rewards, group_ids)
    return std <= tol


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π || π_ref): exp(r) - r - 1 with r = ref_logps - logps.

    logps, ref_logps: (N, T). Returns (N, T), ≥ 0, exactly 0 where the two agree.
    """
    r = ref_logps - logps
    return torch.exp(r) - r - 1


def clipped_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO/GRPO clipped surrogate, per token.

    logps, old_logps: (N, T) log-probs of the sampled tokens under the current / sampling
    policy; advantages: (N,) broadcast over tokens. Ratio ρ = exp(logps - old_logps);
    loss = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A). Returns (loss, clipped_low, clipped_high),
    each (N, T); the masks flag tokens where the clip is active (ρ < 1-ε_low with A < 0, and
    ρ > 1+ε_high with A > 0).
    """
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * adv
    loss = -torch.min(unclipped, clipped)
    low = (ratio < 1 - epsilon_low) & (adv < 0)
    high = (ratio > 1 + epsilon_high) & (adv > 0)
    return loss, low, high


def truncated_is_weights(
    old_logps: torch.Tensor, sampling_logps: torch.Tensor, cap: float, corrected: torch.Tensor
) -> torch.Tensor:
    """Truncated importance sampling (TIS) weights for a sampler whose log-probs differ from the
    trainer's (vLLM's kernels are not the trainer's): w = min(exp(old_logps - sampling_logps), cap).

    old_logps, sampling_logps: (N, T) the trainer's (π_old) and the sampler's log-probs of the
    sampled tokens; corrected: (N,) bool, rows that get the weight (others get 1). Returns (N, T),
    no gradient. Multiplies the per-token policy loss (not the KL term), as in TRL.
    """
    w = torch.exp(old_logps - sampling_logps).clamp(max=cap)
    return torch.where(corrected.unsqueeze(-1), w, torch.ones_like(w)).detach()


@dataclass(frozen=True)
class LossNormalizer:
    """Batch-level quantities that divide the summed loss, fixed for one optimizer step.

    num_sequences: samples in the optimizer-step batch (all processes for grpo/dr_grpo).
    num_tokens: unmasked completion tokens in the normalising batch (this process's
    optimizer-step batch for bnpo; all processes for dapo). max_completion_length: the
    Dr. GRPO constant. world_size: processes whose gradients DDP averages (the loss is
    multiplied by it where the normaliser is global, so the average gives the global mean).
    """

    num_sequences: int
    num_tokens: int
    max_completion_length: int
    world_size: int = 1


def aggregate_loss(
    per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, norm: LossNormalizer
) -> torch.Tensor:
    """This micro-batch's share of the optimizer-step loss. Returns a scalar.

    per_token_loss, mask: (n, T) for the n samples of the micro-batch.
    - grpo:    mean over samples of (each sample's token mean)     [Σ_i mean_t / num_sequences]
    - dr_grpo: Σ tokens / (num_sequences · max_completion_length)
    - bnpo:    Σ tokens / num_tokens of this process's step batch (token mean per process)
    - dapo:    Σ tokens / num_tokens of the global step batch (token mean over all processes)
    grpo, dr_grpo and dapo are global means; bnpo is a per-process mean that DDP then averages.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    masked = per_token_loss * mask
    if loss_type == "grpo":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(norm.num_sequences, 1) * norm.world_size
    if loss_type == "dr_grpo":
        denom = max(norm.num_sequences, 1) * norm.max_completion_length
        return masked.sum() / denom * norm.world_size
    if loss_type == "bnpo":
        return masked.sum() / max(norm.num_tokens, 1)
    return masked.sum() / max(norm.num_tokens, 1) * norm.world_size


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the last dim. logits (..., V) -> (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)

