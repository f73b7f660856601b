"""Log-probs of rollout samples and the policy update of one optimizer step.

Every sample is scored with its stored prompt, which for PolicyRollout samples is the
no-policy prompt, so old / reference / current log-probs all condition on (Q, I) only.

Truncated importance sampling (cfg.vllm_importance_sampling_correction) reweights plain samples
by min(π_old / π_vLLM, cap): the two engines' kernels differ, so the sampler is slightly off the
trainer's policy. It is never applied to policy-aware samples: they were sampled from
π(·|Q, I, P) on purpose and are trained as if from π(·|Q, I); their ratio measures the policy
in context, not a numerical mismatch, and correcting it would down-weight exactly the
samples PolicyRollout adds.

Every process runs the same number of micro-batches (`step_micro_batches`): ZeRO-3 gathers the
parameters in every forward and ZeRO-2/3 reduce gradients in every backward, both collective,
while processes may hold different numbers of samples (dynamic sampling keeps what it finds). A
process with fewer samples runs stand-ins: its first sample again, its loss multiplied by 0, so
its gradient and metrics are those of its real micro-batches alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trimpi.generation.prompts import to_model
from trimpi.train.distributed import global_max, global_sum, micro_step
from trimpi.train.rl.core_algos import (
    LossNormalizer,
    aggregate_loss,
    clipped_policy_loss,
    kl_k3,
    truncated_is_weights,
)
from trimpi.train.rl.encoding import completion_logps, scoring_batch
from trimpi.train.rl.metrics import MetricSums
from trimpi.train.rl.rollout import RolloutBatch, Sample


def _pad_to(x: torch.Tensor, t: int) -> torch.Tensor:
    """Right-pad (n, t') with zeros to (n, t)."""
    return torch.nn.functional.pad(x, (0, t - x.shape[1])) if x.shape[1] < t else x[:, :t]


def micro_slices(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass(frozen=True)
class MicroBatch:
    """The rows of one forward (and backward) of a step. A stand-in (`real` False) repeats the first
    row and counts for nothing: it runs only so that every process makes as many forwards as the others."""

    rows: slice
    real: bool = True


def micro_batches(n: int, size: int, count: int = 0) -> list[MicroBatch]:
    """n rows in micro-batches of `size`, then stand-ins up to `count` micro-batches in all."""
    real = [MicroBatch(sl) for sl in micro_slices(n, size)]
    if n == 0 and count > 0:
        raise ValueError("a process with no samples has no row to run stand-in micro-batches on")
    return real + [MicroBatch(slice(0, 1), real=False)] * max(count - len(real), 0)


def step_micro_batches(n: int, size: int) -> list[MicroBatch]:
    """`micro_batches` of this process's n rows, padded to the most any process has (collective)."""
    return micro_batches(n, size, global_max(math.ceil(n / size)))


def sample_logps(
    model, processor, samples: list[Sample], pad_token_id: int, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (n, T) of each sample's completion given its stored prompt."""
    completions = [s.completion.token_ids for s in samples]
    inputs, positions, ids = scoring_batch(processor, [s.prompt for s in samples], completions, pad_token_id)
    device = next(model.parameters()).device
    inputs = to_model(inputs, model)
    return completion_logps(model, inputs, positions.to(device), ids.to(device), temperature, with_entropy)


@torch.no_grad()
def batch_logps(
    model, processor, batch: RolloutBatch, micro_batch_size: int, pad_token_id: int, temperature: float = 1.0
) -> torch.Tensor:
    """No-grad log-probs (N, T) of the whole batch, computed micro-batch by micro-batch (as many on
    every process: collective)."""
    t = batch.mask.shape[1]
    parts = []
    for mb in step_micro_batches(len(batch.samples), micro_batch_size):
        logps = sample_logps(model, processor, batch.samples[mb.rows], pad_token_id, temperature)[0]
        if mb.real:
            parts.append(_pad_to(logps.float().cpu(), t))
    return torch.cat(parts) if parts else torch.zeros(0, t)


def fill_logps(batch: RolloutBatch, cfg, policy, ref_model, processor, pad_token_id: int) -> None:
    """Reference log-probs (β > 0: `ref_model`, or `policy` with its LoRA adapter disabled) and, when
    the batch is used for several updates (num_iterations > 1), the old log-probs of `policy`."""
    def logps(model):
        return batch_logps(model, processor, batch, cfg.per_device_train_batch_size, pad_token_id, cfg.temperature)

    if cfg.beta > 0:
        if ref_model is not None:
            batch.ref_logps = logps(ref_model)
        else:
            with policy.disable_adapter():
                batch.ref_logps = logps(policy)
    if cfg.num_iterations > 1:
        batch.old_logps = logps(policy)


def optimizer_step(accelerator, model, optimizer, scheduler, max_grad_norm: float | None) -> float:
    """Clip (when max_grad_norm > 0), step the optimizer and the LR schedule; returns the gradient norm
    before clipping (0.0 without clipping)."""
    grad_norm = 0.0
    if max_grad_norm and max_grad_norm > 0:
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def normalizer(batch: RolloutBatch, loss_type: str, max_completion_length: int, world_size: int) -> LossNormalizer:
    """Normalisers of the optimizer-step batch (collective under DDP: call on every process)."""
    local_tokens = float(batch.mask.sum())
    global_seqs = global_sum(len(batch.samples))
    global_tokens = global_sum(local_tokens)
    tokens = local_tokens if loss_type == "bnpo" else global_tokens
    return LossNormalizer(
        num_sequences=int(global_seqs), num_tokens=int(tokens), max_completion_length=max_completion_length,
        world_size=world_size,
    )


@dataclass
class MicroLoss:
    """One micro-batch's loss (its share of the step's loss) and what its metrics are made of."""

    loss: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    kl: torch.Tensor | None


def micro_loss(model, processor, batch: RolloutBatch, rows: slice, cfg, norm: LossNormalizer,
               pad_token_id: int) -> MicroLoss:
    """The forward of the samples `rows` of `batch` and their loss (`aggregate_loss`)."""
    t = batch.mask.shape[1]
    logps, entropy = sample_logps(model, processor, batch.samples[rows], pad_token_id, cfg.temperature, True)
    logps, entropy = _pad_to(logps, t), _pad_to(entropy, t)
    device = logps.device
    mask = batch.mask[rows].to(device)
    old = batch.old_logps[rows].to(device) if batch.old_logps is not None else logps.detach()
    per_tok, low, high = clipped_policy_loss(logps, old, batch.advantages[rows].to(device), cfg.epsilon,
                                             cfg.epsilon_high)
    if cfg.vllm_importance_sampling_correction and batch.sampling_logps is not None:
        per_tok = per_tok * truncated_is_weights(old, batch.sampling_logps[rows].to(device),
                                                 cfg.vllm_importance_sampling_cap, ~batch.policy_aware[rows])
    kl = None
    if cfg.beta > 0:
        kl = kl_k3(logps, batch.ref_logps[rows].to(device))
        per_tok = per_tok + cfg.beta * kl
    return MicroLoss(aggregate_loss(per_tok, mask, cfg.loss_type, norm), mask, entropy, low, high, kl)


def add_micro_metrics(metrics: MetricSums, m: MicroLoss) -> None:
    n_tok = float(m.mask.sum())
    if m.kl is not None:
        metrics.add("kl", float((m.kl.detach() * m.mask).sum()), n_tok)
    metrics.add("loss", float(m.loss.detach()), 0.0)
    metrics.add("entropy", float((m.entropy * m.mask).sum()), n_tok)
    metrics.add("clip_ratio/low_mean", float((m.low.float() * m.mask).sum()), n_tok)
    metrics.add("clip_ratio/high_mean", float((m.high.float() * m.mask).sum()), n_tok)
    metrics.add("clip_ratio/region_mean", float(((m.low | m.high).float() * m.mask).sum()), n_tok)


def policy_update(
    accelerator, model, processor, batch: RolloutBatch, cfg, norm: LossNormalizer, pad_token_id: int,
    metrics: MetricSums,
) -> None:
    """Forward/backward over micro-batches (gradients accumulate; the last one syncs them and, under
    DeepSpeed, steps the engine's optimizer). As many micro-batches on every process (collective):
    stand-ins' losses are multiplied by 0 and add no metrics.

    The micro-batch losses add up to the full-batch loss (`aggregate_loss`), so the gradient
    does not depend on `per_device_train_batch_size`.
    """
    plan = step_micro_batches(len(batch.samples), cfg.per_device_train_batch_size)
    for k, mb in enumerate(plan):
        with micro_step(accelerator, model, last=k == len(plan) - 1):
            m = micro_loss(model, processor, batch, mb.rows, cfg, norm, pad_token_id)
            accelerator.backward(m.loss if mb.real else m.loss * 0.0)
        if mb.real:
            add_micro_metrics(metrics, m)
    metrics.counts["loss"] += 1.0  # a process's loss is its micro-batch sum; DDP averages processes
