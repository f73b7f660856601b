"""RL math against hand-computed values."""

import math

import pytest
import torch

from trimpi.train.rl.core_algos import (
    LOSS_TYPES,
    LossNormalizer,
    aggregate_loss,
    clipped_policy_loss,
    group_advantages,
    kl_k3,
    zero_std_groups,
)


def test_group_advantages_by_id_with_unequal_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 5.0])
    groups = torch.tensor([7, 7, 7, 7, 3, 3, 9])
    adv = group_advantages(rewards, groups, "group")
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of [1,0,0,1]
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0]
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(group_advantages(rewards, groups, "none"), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0]))
    bstd = rewards.std().item()
    assert torch.allclose(
        group_advantages(rewards, groups, "batch"), torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0]) / (bstd + 1e-4)
    )
    assert zero_std_groups(rewards, groups).tolist() == [False] * 4 + [True] * 3


def test_group_ids_need_not_be_contiguous():
    r = torch.tensor([1.0, 0.0, 3.0, 1.0])
    g = torch.tensor([1, 2, 2, 1])
    assert torch.allclose(group_advantages(r, g, "none"), torch.tensor([0.0, -1.5, 1.5, 0.0]))


def test_clipped_loss_hand_values():
    old = torch.zeros(1, 4)
    logps = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5]]))
    for adv_sign, expected, lo, hi in [
        (1.0, [-1.3, -0.5, -0.5, -1.3], [0, 0, 0, 0], [1, 0, 0, 1]),
        (-1.0, [1.5, 0.8, 0.8, 1.5], [0, 1, 1, 0], [0, 0, 0, 0]),
    ]:
        loss, low, high = clipped_policy_loss(logps, old, torch.tensor([adv_sign]), 0.2, 0.3)
        assert torch.allclose(loss, torch.tensor([expected]), atol=1e-6)
        assert low.int().tolist() == [lo] and high.int().tolist() == [hi]


def test_kl_k3_zero_when_equal_and_hand_value():
    lp = torch.tensor([[-1.0, -2.0]])
    assert torch.equal(kl_k3(lp, lp), torch.zeros(1, 2))
    ref = torch.tensor([[-1.5, -2.0]])
    assert kl_k3(lp, ref)[0, 0].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)


@pytest.mark.parametrize(
    "loss_type,expected", [("grpo", 3.0), ("dapo", 2.5), ("bnpo", 2.5), ("dr_grpo", 10 / 8)]
)
def test_aggregate_hand_values(loss_type, expected):
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    norm = LossNormalizer(num_sequences=2, num_tokens=4, max_completion_length=4)
    assert aggregate_loss(loss, mask, loss_type, norm).item() == pytest.approx(expected)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batch_split_gives_same_gradient(loss_type):
    torch.manual_seed(0)
    n, t = 6, 5
    feats = torch.randn(n, t, 3)
    mask = (torch.rand(n, t) > 0.3).float()
    mask[:, 0] = 1
    adv = torch.randn(n)
    old = torch.randn(n, t) * 0.1
    norm = LossNormalizer(num_sequences=n, num_tokens=int(mask.sum()), max_completion_length=t)
    grads = []
    for split in ([6], [1, 5], [2, 2, 2], [1] * 6):
        w = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
        start = 0
        for size in split:
            sl = slice(start, start + size)
            logps = feats[sl] @ w * 0.1 - 1.0
            per_tok, _, _ = clipped_policy_loss(logps, old[sl], adv[sl], 0.2, 0.28)
            per_tok = per_tok + 0.04 * kl_k3(logps, old[sl])
            aggregate_loss(per_tok, mask[sl], loss_type, norm).backward()
            start += size
        grads.append(w.grad.clone())
    for g in grads[1:]:
        assert torch.allclose(g, grads[0], atol=1e-6)

