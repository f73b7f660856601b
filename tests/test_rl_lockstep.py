"""Processes stay in step whatever dynamic sampling keeps on each: the same generate rounds and the same
number of micro-batches everywhere (ZeRO-3 gathers parameters in every forward, collectively), with
stand-in micro-batches that change nothing; checked in one process with a stand-in for the other
processes, and end to end under 2 DDP processes whose rewards are scripted apart (tests/ddp_dapo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_rl_fixtures import tiny_model
from test_rl_stage import Scored
from test_rl_trainer import VOWELS
from trimpi.generation.engine import HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.train import distributed
from trimpi.train.rl import update
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.core_algos import LOSS_TYPES
from trimpi.train.rl.metrics import MetricSums
from trimpi.train.rl.rollout import ShardStream, collect, first_groups, make_batch, sample_groups
from trimpi.train.rl.update import MicroBatch, batch_logps, micro_batches, normalizer, policy_update

TESTS = Path(__file__).parent
ROOT = TESTS.parent


# --- the micro-batch plan


def test_micro_batches_cut_the_rows_then_pad_with_stand_ins():
    assert micro_batches(5, 2) == [MicroBatch(slice(0, 2)), MicroBatch(slice(2, 4)), MicroBatch(slice(4, 5))]
    assert micro_batches(5, 2, 3) == micro_batches(5, 2)  # as many as the most any process has: no stand-in
    padded = micro_batches(3, 2, 4)
    assert padded[:2] == micro_batches(3, 2)
    assert padded[2:] == [MicroBatch(slice(0, 1), real=False)] * 2  # the first row again, counting for nothing
    assert micro_batches(0, 2) == []
    with pytest.raises(ValueError, match="no samples"):
        micro_batches(0, 2, 1)


def test_one_process_plans_its_own_micro_batches():
    assert update.step_micro_batches(7, 3) == micro_batches(7, 3)
    assert distributed.global_max(4) == 4 and distributed.global_sum(2.5) == 2.5
    x = torch.tensor([1.0, 2.0])
    assert distributed.all_reduced(x, "max") is x


def test_nccl_reduces_on_the_gpu_and_gloo_on_the_cpu():
    assert distributed.collective_device("nccl") == "cuda"
    assert distributed.collective_device("gloo") == "cpu"


@pytest.fixture
def tiny_batch(rl_data):
    """A tiny model and a batch of 2 groups of 3 (6 samples) with old and reference log-probs."""
    root, records = rl_data
    model, proc = tiny_model()
    torch.manual_seed(1)
    samples = sample_groups(HFGenerateEngine(model, proc), PromptBuilder(proc, root), records[:2], [0, 1], 3,
                            SamplingParams(max_completion_length=7), VOWELS)
    batch = make_batch(samples, "group", mask_truncated=False)
    pad = proc.tokenizer.pad_token_id
    batch.old_logps = batch_logps(model, proc, batch, 4, pad) - 0.3 * batch.mask  # past the clip range
    batch.ref_logps = batch.old_logps - 0.05
    return model, proc, batch, pad


def _update(model, proc, batch, pad, loss_type: str, acc) -> tuple[torch.Tensor, dict, list[bool]]:
    """The gradient, the metrics and the sync flags of each backward of one policy update."""
    flags = []
    backward = acc.backward

    def recording(loss, **kwargs):
        flags.append(acc.sync_gradients)
        backward(loss, **kwargs)

    acc.backward = recording
    cfg = RLConfig(algo="grpo", beta=0.04, loss_type=loss_type, per_device_train_batch_size=2,
                   max_completion_length=7).resolved()
    model.zero_grad(set_to_none=True)
    m = MetricSums()
    policy_update(acc, model, proc, batch, cfg, normalizer(batch, loss_type, 7, 1), pad, m)
    acc.backward = backward
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return grad, {k: (m.sums[k], m.counts[k]) for k in m.sums}, flags


def test_stand_in_micro_batches_change_neither_gradient_nor_metrics(tiny_batch, monkeypatch):
    from trimpi.train.rl.trainer import make_accelerator

    model, proc, batch, pad = tiny_batch
    acc = make_accelerator()
    for loss_type in LOSS_TYPES:
        grad, metrics, flags = _update(model, proc, batch, pad, loss_type, acc)
        assert flags == [False, False, True]  # 6 samples in micro-batches of 2
        with monkeypatch.context() as m:
            m.setattr(update, "global_max", lambda n: n + 2)  # another process has 2 more micro-batches
            padded_grad, padded_metrics, padded_flags = _update(model, proc, batch, pad, loss_type, acc)
        assert padded_flags == [False] * 4 + [True]  # the step ends on the last stand-in
        assert torch.equal(padded_grad, grad) and padded_metrics == metrics, loss_type


def test_stand_in_micro_batches_leave_the_log_probs_alone(tiny_batch, monkeypatch):
    model, proc, batch, pad = tiny_batch
    calls = []
    logps = update.sample_logps
    monkeypatch.setattr(update, "sample_logps", lambda *a, **k: calls.append(1) or logps(*a, **k))
    plain = batch_logps(model, proc, batch, 4, pad)
    monkeypatch.setattr(update, "global_max", lambda n: n + 3)
    padded = batch_logps(model, proc, batch, 4, pad)
    assert torch.equal(padded, plain) and len(calls) == 2 + 5  # 6 samples by 4: 2 forwards, then 2 + 3


# --- dynamic sampling in step


def test_first_groups_keeps_whole_groups_in_order():
    samples = [Scored(g, 0.0) for g in (7, 7, 3, 3, 9, 9)]
    assert [s.group_id for s in first_groups(samples, 2)] == [7, 7, 3, 3]
    assert first_groups(samples, 5) == samples and first_groups(samples, 0) == []


def varied_except(flat: set[int]):
    """sample_fn: 2 samples per record, equal rewards for the records whose index is in `flat`."""
    def sample(recs, gids):
        return [Scored(g, 1.0 if r.id in flat else float(k)) for r, g in zip(recs, gids) for k in range(2)]
    return sample


def test_a_process_with_enough_groups_keeps_sampling_while_another_needs_more(rl_data):
    _, records = rl_data
    others = iter([3, 2, 1, 0])  # what the other process needs at each round: it finds one group per round
    asked = []

    def most_needed(need):
        asked.append(need)
        return max(need, next(others))

    samples, stats = collect(ShardStream(records, seed=3).take, varied_except(set()), 2, dynamic_sampling=True,
                             max_tries=5, most_needed=most_needed)
    order = [r.id for _, r in ShardStream(records, seed=3).take(3 + 2 + 1)]
    assert asked == [2, 0, 0, 0]  # this process had its 2 groups after the first round
    assert stats.tries == 3 and stats.groups_sampled == 6 and len(stats.sampled) == 12  # drawn 3, 2, 1
    assert [order[g] for g in dict.fromkeys(s.group_id for s in samples)] == order[:2]  # the first 2 of round 1


def test_every_process_stops_after_max_tries_together(rl_data):
    _, records = rl_data
    stream = ShardStream(records, seed=3)
    flat = {r.id for r in records}
    samples, stats = collect(stream.take, varied_except(flat), 2, dynamic_sampling=True, max_tries=4,
                             most_needed=lambda need: max(need, 3))  # another process needs 3 all along
    assert stats.tries == 4 and stats.groups_sampled == 12
    assert len({s.group_id for s in samples}) == 2  # flat groups of the last round, as many as it needed


def test_without_dynamic_sampling_one_round(rl_data):
    _, records = rl_data
    samples, stats = collect(ShardStream(records, seed=3).take, varied_except({r.id for r in records}), 3,
                             dynamic_sampling=False, max_tries=5, most_needed=lambda need: need)
    assert stats.tries == 1 and len({s.group_id for s in samples}) == 3


# --- two processes that need different rounds and keep different samples


def test_two_processes_with_different_needs_run_in_step(rl_data, tmp_path):
    from ddp_dapo import MAX_TRIES, STEPS

    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"), str(TESTS / "ddp_dapo.py"), str(rl_data[0]),
           str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT / 'src'}"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)  # a hang fails here
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1))
    # rank 0 has its 2 groups after round 1, rank 1 never finds its second: both draw MAX_TRIES rounds,
    # 2 records in the first (both need 2), then 1 (the most either needs)
    assert r0["generate"] == r1["generate"] == ([2] + [1] * (MAX_TRIES - 1)) * STEPS
    assert r0["kept"] == [4] * STEPS and r1["kept"] == [2] * STEPS  # samples kept: 2 groups vs 1 group of G = 2
    # 4 micro-batches of 1 on both (rank 1: 2 real, 2 stand-ins): reference + old log-probs + 2 updates
    assert r0["logps"] == r1["logps"] == 4 * 4 * STEPS
    assert r0["backward"] == r1["backward"] == 2 * 4 * STEPS
    assert r0["tries"] == r1["tries"] == [MAX_TRIES] * STEPS
    assert (tmp_path / "run" / "trimpi_stage.json").is_file()
