"""Truncated importance sampling for an engine's log-prob mismatch: capped weights, plain half only."""

from __future__ import annotations

import copy
import math

import torch

from test_rl_trainer import sampled_batch
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.core_algos import truncated_is_weights
from trimpi.train.rl.metrics import MetricSums
from trimpi.train.rl.trainer import make_accelerator
from trimpi.train.rl.update import batch_logps, normalizer, policy_update


def test_weights_are_capped_ratios_on_corrected_rows_only():
    old = torch.log(torch.tensor([[0.5, 0.2], [0.5, 0.2]]))
    sampled = torch.log(torch.tensor([[0.25, 0.8], [0.01, 0.8]]))
    w = truncated_is_weights(old, sampled, cap=3.0, corrected=torch.tensor([True, False]))
    assert torch.allclose(w, torch.tensor([[2.0, 0.25], [1.0, 1.0]]))
    w = truncated_is_weights(old, sampled, cap=3.0, corrected=torch.tensor([True, True]))
    assert torch.allclose(w[1], torch.tensor([3.0, 0.25]))  # 50 capped at 3


def _loss(model, proc, batch, **tis) -> float:
    cfg = RLConfig(algo="dapo", max_completion_length=7, engine="vllm" if tis else "hf", **tis).resolved()
    metrics = MetricSums()
    model.zero_grad(set_to_none=True)
    policy_update(make_accelerator(), model, proc, batch, cfg, normalizer(batch, cfg.loss_type, 7, 1),
                  proc.tokenizer.pad_token_id, metrics)
    return metrics.sums["loss"]


def test_correction_reweights_the_plain_half_and_never_the_policy_aware_half(rl_data):
    model, proc, batch = sampled_batch(rl_data)
    assert batch.sampling_logps is None  # the HF engine gives none: the correction has nothing to do
    tis = dict(vllm_importance_sampling_correction=True, vllm_importance_sampling_cap=3.0)
    batch.sampling_logps = batch_logps(model, proc, batch, 8, proc.tokenizer.pad_token_id)
    assert math.isclose(_loss(model, proc, batch, **tis), _loss(model, proc, batch), rel_tol=1e-5)  # ratio 1

    batch.sampling_logps -= math.log(4.0)  # the sampler saw every token 4x less likely: weight min(4, 3) = 3
    plain_part = copy.copy(batch)
    plain_part.advantages = batch.advantages * (~batch.policy_aware)  # aware rows contribute 0
    expected = _loss(model, proc, batch) + 2.0 * _loss(model, proc, plain_part)  # plain tokens count 3x
    assert abs(_loss(model, proc, plain_part)) > 1e-4
    assert math.isclose(_loss(model, proc, batch, **tis), expected, rel_tol=1e-4)

    aware = copy.copy(batch)
    aware.policy_aware = torch.ones_like(batch.policy_aware)  # as if every sample were policy-aware
    assert math.isclose(_loss(model, proc, aware, **tis), _loss(model, proc, aware), rel_tol=1e-5)
