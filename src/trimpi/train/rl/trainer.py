"""The RL loop: rollout → rewards/advantages → (reference / old log-probs) → update, per step.

One step = `prompts_per_step` groups (over all processes) sampled from the current policy,
then `num_iterations` optimizer updates on them. Each process takes its own shard of the
records and its own prompts; gradients are averaged by DDP (`accelerate launch`).
Generation is seeded from (seed, step, rank), so a resumed run samples exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from trimpi.data.io import write_json
from trimpi.data.schema import PolicyStore, Record
from trimpi.errors import ConfigError
from trimpi.generation.engine import GenerationEngine, HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.models.processing import tokenizer_of
from trimpi.train.rl import checkpoint as ckpt
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.metrics import SAMPLE_METRICS, TRAIN_METRICS, JsonlLogger, MetricSums, add_sample_metrics, finish
from trimpi.train.rl.rewards import RewardSpec
from trimpi.train.rl.rollout import collect, make_batch, record_stream, sample_groups
from trimpi.train.rl.update import batch_logps, normalizer, policy_update


def make_accelerator(report_to: str | None = None):
    """An Accelerator for RL: CPU when no GPU, DDP tolerant of parameters without gradient."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    log_with = None if report_to in (None, "", "none") else report_to.split(",")
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        log_with=log_with,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + rank) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def total_steps(cfg: RLConfig, num_records: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * num_records / cfg.prompts_per_step))


def _is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def train_rl(
    cfg: RLConfig,
    model,
    processor,
    records: list[Record],
    data_root: str | Path,
    out: str | Path,
    rewards: RewardSpec | None = None,
    ref_model=None,
    engine: GenerationEngine | None = None,
    accelerator=None,
    resume_from_checkpoint: str | None = None,
    start_checkpoint: str | None = None,
    report_to: str | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train `model` with GRPO / DAPO (PolicyRollout when cfg.policy_rollout) and save it to `out`.

    records: training records (non-CoT QA with `answer`); data_root: their dataset directory
    (images, policies/). ref_model: the frozen reference for β > 0 (default: a copy of `model`
    as given, or the adapter-disabled base under LoRA). engine: rollout engine (default: HF
    generate on `model`). resume_from_checkpoint: a checkpoint dir or "last". Metrics go to
    OUT/metrics.jsonl. Returns the last step's metrics.
    """
    cfg = cfg.resolved()
    out = Path(out)
    accelerator = accelerator or make_accelerator(report_to)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.prompts_per_step % world:
        raise ConfigError(f"--prompts-per-step {cfg.prompts_per_step} is not divisible by {world} processes")
    local_prompts = cfg.prompts_per_step // world
    shard = records[rank::world]
    if not shard:
        raise ConfigError(f"process {rank} has no training records ({len(records)} records, {world} processes)")
    rewards = rewards or RewardSpec(weights=dict(cfg.reward_weights))
    seed_everything(cfg.seed)

    if cfg.beta > 0 and ref_model is None and not _is_peft(model):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n_steps = total_steps(cfg, len(records))
    from transformers import get_scheduler

    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, cfg.warmup_steps, n_steps * cfg.num_iterations)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if ref_model is not None:
        ref_model.to(accelerator.device)
    pad_id = tokenizer_of(processor).pad_token_id
    if pad_id is None:
        pad_id = tokenizer_of(processor).eos_token_id
    engine = engine or HFGenerateEngine(unwrapped, processor, batch_size=cfg.generation_batch_size)
    builder = PromptBuilder(processor, data_root, placement=cfg.policy_placement)
    policies = PolicyStore(data_root) if cfg.policy_rollout else None
    sampling = SamplingParams(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k)

    step, position = 0, 0
    resume = ckpt.resolve_resume(out, resume_from_checkpoint)
    if resume is not None:
        state, rank_state = ckpt.load(accelerator, resume, model, optimizer, scheduler)
        step, position = int(state["step"]), int(rank_state["position"])
    logger = JsonlLogger(out / "metrics.jsonl", resume_step=step if resume else None) if accelerator.is_main_process else None
    if accelerator.is_main_process and report_to not in (None, "", "none"):
        accelerator.init_trackers("trimpi-rl", config=asdict(cfg))
    base_state = {"config": asdict(cfg), "start_checkpoint": start_checkpoint, "world_size": world}

    stream = record_stream(shard, cfg.seed + 7919 * rank, start=position)
    cursor = {"position": position}

    def next_records(k: int):
        drawn = [next(stream) for _ in range(k)]
        cursor["position"] = drawn[-1][0] + 1
        return [(pos * world + rank, rec) for pos, rec in drawn]

    def sample_fn(recs, gids):
        return sample_groups(engine, builder, recs, gids, cfg.num_generations, sampling, rewards, policies)

    row: dict = {}
    model.train()
    while step < n_steps:
        t0 = time.perf_counter()
        seed_everything(step_seed(cfg.seed, step, rank))
        engine.update_weights(unwrapped)
        samples, stats = collect(next_records, sample_fn, local_prompts, cfg.dynamic_sampling,
                                 cfg.dynamic_sampling_max_tries)
        t_gen = time.perf_counter() - t0
        batch = make_batch(samples, cfg.scale_rewards, cfg.mask_truncated_completions)
        if cfg.beta > 0:
            if ref_model is not None:
                batch.ref_logps = batch_logps(ref_model, processor, batch, cfg.per_device_train_batch_size, pad_id,
                                              cfg.temperature)
            else:
                with unwrapped.disable_adapter():
                    batch.ref_logps = batch_logps(unwrapped, processor, batch, cfg.per_device_train_batch_size,
                                                  pad_id, cfg.temperature)
        if cfg.num_iterations > 1:
            batch.old_logps = batch_logps(unwrapped, processor, batch, cfg.per_device_train_batch_size, pad_id,
                                          cfg.temperature)
        norm = normalizer(batch, cfg.loss_type, cfg.max_completion_length, world)
        m = MetricSums()
        add_sample_metrics(m, stats.sampled, stats.groups_sampled, stats.groups_zero_std)
        grad_norm = 0.0
        for _ in range(cfg.num_iterations):
            policy_update(accelerator, model, processor, batch, cfg, norm, pad_id, m)
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        m.add("dynamic_sampling/tries", stats.tries)
        m.add("completion_tokens", sum(len(s.completion.token_ids) for s in stats.sampled), 0)
        m.counts["completion_tokens"] = 1.0 / world  # sum over processes
        m.add("step_time", time.perf_counter() - t0)
        m.add("generation_time", t_gen)
        row = finish(m.reduce(SAMPLE_METRICS + TRAIN_METRICS + [
            "dynamic_sampling/tries", "completion_tokens", "step_time", "generation_time"]))
        row.update(step=step, epoch=cursor["position"] * world / len(records), learning_rate=scheduler.get_last_lr()[0],
                   grad_norm=grad_norm, tokens_per_s=row["completion_tokens"] / max(row["step_time"], 1e-9))
        if logger is not None and step % max(cfg.logging_steps, 1) == 0:
            logger.log(row)
            if report_to not in (None, "", "none"):
                accelerator.log(row, step=step)
        if cfg.save_steps > 0 and step % cfg.save_steps == 0 and step < n_steps:
            ckpt.save(accelerator, out, step, model, processor, optimizer, scheduler, base_state,
                      {"position": cursor["position"]}, cfg.save_total_limit)
        if on_step is not None:
            on_step(step, row)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from trimpi.models.loading import save_checkpoint

        final = accelerator.unwrap_model(model)
        if _is_peft(final):  # LoRA: the saved model is the merged one, loadable with from_pretrained
            final.save_pretrained(out / "adapter")
            final = copy.deepcopy(final).merge_and_unload()
        save_checkpoint(final, processor, out)
        write_json(out / "rl_config.json", {**base_state, "steps": step})
    accelerator.wait_for_everyone()
    if report_to not in (None, "", "none"):
        accelerator.end_training()
    return row
