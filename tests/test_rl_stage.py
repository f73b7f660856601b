"""The RL stage's faults and paths no other test reached: checkpoints read with weights_only, the
progress bar, several updates per batch (old log-probs, clipping), dynamic sampling's refill."""

from __future__ import annotations

import pathlib

import pytest
import torch
from test_rl_fixtures import tiny_model
from test_rl_trainer import VOWELS

from trimpi.errors import TrimpiError
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.rollout import ShardStream, collect
from trimpi.train.rl.trainer import train_rl

SMALL = dict(num_generations=2, prompts_per_step=2, learning_rate=1e-2, max_completion_length=6,
             per_device_train_batch_size=4)


class Payload:
    """Pickles into a call of Path.touch: what a crafted optimizer.pt could run on a plain torch.load."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def test_fault7_checkpoint_state_loads_with_weights_only(rl_data, tmp_path):
    root, records = rl_data
    cfg = RLConfig(algo="grpo", max_steps=2, save_steps=1, **SMALL)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train_rl(cfg, *tiny_model(), records, root, out, rewards=VOWELS, on_step=_kill_at(2))
    ck = out / "checkpoints" / "checkpoint-1"
    for name in ("optimizer.pt", "scheduler.pt", "rank-0.pt"):
        torch.load(ck / name, weights_only=True)  # plain tensors, numbers, lists and dicts only
    ran = tmp_path / "code_ran"
    state = torch.load(ck / "optimizer.pt", weights_only=True)
    torch.save({**state, "payload": Payload(ran)}, ck / "optimizer.pt")
    with pytest.raises(TrimpiError, match="optimizer.pt: not a plain-tensor checkpoint file"):
        train_rl(cfg, *tiny_model(), records, root, out, rewards=VOWELS)
    assert not ran.exists()


def _kill_at(step: int):
    def kill(s, row):
        if s == step:
            raise KeyboardInterrupt

    return kill


def test_fault8_rl_progress_bar_shows_step_reward_and_accuracy(rl_data, tmp_path, capsys):
    root, records = rl_data
    cfg = RLConfig(algo="grpo", policy_rollout=True, max_steps=2, **SMALL)
    train_rl(cfg, *tiny_model(), records, root, tmp_path / "bar", progress=True)
    err = capsys.readouterr().err
    assert "rl: 100%" in err and "2/2" in err
    assert all(f"{key}=" in err for key in ("reward", "acc/plain", "acc/policy")), err[-400:]
    train_rl(cfg, *tiny_model(), records, root, tmp_path / "quiet", progress=False)
    captured = capsys.readouterr()
    assert "rl:" not in captured.err and "reward" not in captured.out + captured.err


def test_num_iterations_reuses_old_logprobs_and_clips(rl_data, tmp_path):
    root, records = rl_data
    rows = {}
    for mu in (1, 3):
        cfg = RLConfig(algo="grpo", beta=0.0, max_steps=1, num_iterations=mu, **{**SMALL, "learning_rate": 0.05})
        rows[mu] = train_rl(cfg, *tiny_model(), records, root, tmp_path / str(mu), rewards=VOWELS)
    # one update: the ratio to the sampling policy is exactly 1; later updates move it past the clip range
    assert rows[1]["clip_ratio/region_mean"] == 0.0
    assert rows[3]["clip_ratio/region_mean"] > 0.0
    assert rows[3]["learning_rate"] == rows[1]["learning_rate"]


class Scored:
    """A sample with only what `collect` reads."""

    def __init__(self, group_id: int, reward: float):
        self.group_id, self.reward = group_id, reward


def test_dynamic_sampling_drops_flat_groups_and_refills(rl_data):
    _, records = rl_data
    flat = {records[0].id, records[3].id, records[5].id}  # these records' groups all score the same

    def sample(recs, gids):
        return [Scored(g, 1.0 if r.id in flat else float(k)) for r, g in zip(recs, gids) for k in range(2)]

    order = [r.id for _, r in ShardStream(records, seed=3).take(len(records))]
    varied = [i for i in order if i not in flat]
    drawn = order.index(varied[3]) + 1  # the stream up to the fourth varied group
    assert any(i in flat for i in order[:4])  # the first round does meet flat groups
    samples, stats = collect(ShardStream(records, seed=3).take, sample, 4, dynamic_sampling=True, max_tries=5)
    assert [order[g] for g in dict.fromkeys(s.group_id for s in samples)] == varied[:4]
    assert len(samples) == 8 and stats.tries >= 2
    assert stats.groups_sampled == drawn and stats.groups_zero_std == sum(i in flat for i in order[:drawn])
    assert len(stats.sampled) == 2 * drawn
