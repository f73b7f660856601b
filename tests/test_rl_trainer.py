"""The RL loop: split-invariant updates, KL at step 0, learning, exact resume, robustness."""

from __future__ import annotations

import json

import pytest
import torch

from test_rl_fixtures import tiny_model
from trimpi.data.schema import PolicyStore
from trimpi.generation.engine import Completion, HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.core_algos import LOSS_TYPES
from trimpi.train.rl.metrics import MetricSums
from trimpi.train.rl.rewards import RewardSpec
from trimpi.train.rl.rollout import make_batch, sample_groups
from trimpi.train.rl.trainer import make_accelerator, train_rl
from trimpi.train.rl.update import batch_logps, normalizer, policy_update


def vowels(completions, records):
    """A dense reward a random tiny model can learn: the share of vowels in its output."""
    return [sum(c in "aeiou" for c in t) / max(len(t), 1) for t in completions]


VOWELS = RewardSpec({"vowels": vowels}, {"vowels": 1.0})


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def sampled_batch(rl_data):
    """A tiny model and a batch of 2 groups of 3 samples drawn by the HF engine (seeded)."""
    root, records = rl_data
    model, proc = tiny_model()
    torch.manual_seed(1)
    samples = sample_groups(HFGenerateEngine(model, proc), PromptBuilder(proc, root), records[:2], [0, 1], 3,
                            SamplingParams(max_completion_length=7), VOWELS, PolicyStore(root))
    return model, proc, make_batch(samples, "group", mask_truncated=False)


def test_update_same_for_any_micro_batch_split(rl_data):
    model, proc, batch = sampled_batch(rl_data)
    assert batch.advantages.abs().sum() > 0
    pad = proc.tokenizer.pad_token_id
    batch.old_logps = batch_logps(model, proc, batch, 4, pad) + 0.05 * torch.randn(batch.mask.shape)
    batch.ref_logps = batch.old_logps - 0.1
    acc = make_accelerator()
    for loss_type in LOSS_TYPES:
        grads = []
        for micro in (len(batch.mask), 1, 5):
            cfg = RLConfig(algo="grpo", beta=0.04, loss_type=loss_type, per_device_train_batch_size=micro,
                           max_completion_length=7).resolved()
            model.zero_grad(set_to_none=True)
            policy_update(acc, model, proc, batch, cfg, normalizer(batch, loss_type, 7, 1), pad, MetricSums())
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        for g in grads[1:]:
            assert torch.allclose(g, grads[0], atol=1e-6, rtol=1e-4), loss_type


def test_kl_zero_at_first_step_and_metrics(rl_data, tmp_path):
    root, records = rl_data
    model, proc = tiny_model()
    cfg = RLConfig(algo="grpo", policy_rollout=True, num_generations=2, prompts_per_step=2, max_steps=2,
                   learning_rate=1e-2, max_completion_length=6, per_device_train_batch_size=3)
    assert cfg.resolved().beta == 0.01
    train_rl(cfg, model, proc, records, root, tmp_path / "out", rewards=VOWELS)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 0.0
    for key in ("reward/plain", "reward/policy", "accuracy/plain", "format_rate", "clip_ratio/region_mean",
                "entropy", "completions/mean_length", "frac_reward_zero_std", "step_time", "tokens_per_s"):
        assert key in rows[0], key
    assert rows[0]["num_samples"] == 8  # 2 prompts x 2G
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(tmp_path / "out")


def test_reward_rises_on_learnable_task(rl_data, tmp_path):
    root, records = rl_data
    model, proc = tiny_model()
    cfg = RLConfig(algo="grpo", num_generations=4, prompts_per_step=2, max_steps=30, learning_rate=1e-2,
                   max_completion_length=8, per_device_train_batch_size=8)
    train_rl(cfg, model, proc, records, root, tmp_path / "out", rewards=VOWELS)
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1, rewards


class Interrupt(Exception):
    pass


def test_killed_and_resumed_run_matches_uninterrupted(rl_data, tmp_path):
    root, records = rl_data
    cfg = RLConfig(algo="grpo", policy_rollout=True, num_generations=2, prompts_per_step=2, max_steps=4,
                   save_steps=2, learning_rate=1e-2, max_completion_length=6, per_device_train_batch_size=3)
    model, proc = tiny_model()
    train_rl(cfg, model, proc, records, root, tmp_path / "a", rewards=VOWELS)
    expected = _params(model)

    def kill(step, row):
        if step == 3:
            raise Interrupt

    model, proc = tiny_model()
    with pytest.raises(Interrupt):
        train_rl(cfg, model, proc, records, root, tmp_path / "b", rewards=VOWELS, on_step=kill)
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-2").is_dir()
    model, proc = tiny_model()
    train_rl(cfg, model, proc, records, root, tmp_path / "b", rewards=VOWELS)  # resumes by itself
    got = _params(model)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


class GarbageEngine:
    """Returns empty, EOS-only and junk completions."""

    def __init__(self, proc):
        self.tok = proc.tokenizer

    def update_weights(self, model):
        pass

    def generate(self, prompts, n, params):
        eos = self.tok.eos_token_id
        junk = self.tok.encode("}{\\boxed{ <think>")[:5]
        pool = [Completion([], "", True), Completion([eos], "", False), Completion(junk, self.tok.decode(junk), True)]
        return [[pool[j % 3] for j in range(n)] for _ in prompts]


def test_garbage_completions_score_zero_and_train(rl_data, tmp_path):
    root, records = rl_data
    model, proc = tiny_model()
    cfg = RLConfig(algo="dapo", num_generations=3, prompts_per_step=2, max_steps=1, dynamic_sampling=False,
                   max_completion_length=5, mask_truncated_completions=True)
    row = train_rl(cfg, model, proc, records, root, tmp_path / "out", engine=GarbageEngine(proc))
    assert row["reward"] == 0.0 and row["frac_reward_zero_std"] == 1.0


def test_dynamic_sampling_without_varied_groups_goes_on_with_flat_ones(rl_data, tmp_path):
    root, records = rl_data
    model, proc = tiny_model()
    cfg = RLConfig(algo="dapo", num_generations=2, prompts_per_step=2, max_steps=1, dynamic_sampling_max_tries=2,
                   max_completion_length=4)
    row = train_rl(cfg, model, proc, records, root, tmp_path / "out", engine=GarbageEngine(proc))
    assert row["dynamic_sampling/tries"] == 2  # every try drew flat groups
    assert row["frac_reward_zero_std"] == 1.0 and row["num_samples"] == 8  # 2 tries × 2 groups × 2 samples
    assert row["step"] == 1 and (tmp_path / "out" / "config.json").is_file()


def test_lora_reference_is_adapter_disabled_base(rl_data, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    root, records = rl_data
    model, proc = tiny_model()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    cfg = RLConfig(algo="grpo", num_generations=2, prompts_per_step=2, max_steps=2, learning_rate=1e-2,
                   max_completion_length=5, save_steps=1)
    train_rl(cfg, model, proc, records, root, tmp_path / "out", rewards=VOWELS)
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] > 0.0  # non-zero LoRA init: the policy differs from the base from the start
    AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
