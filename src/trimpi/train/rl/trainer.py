"""The RL stage: setup, then per step rollout → advantages → log-probs → update, then save and mark.

One step = `prompts_per_step` groups (over all processes) sampled from the current policy,
then `num_iterations` optimizer updates on them. Each process takes its own shard of the
records and its own prompts; gradients are averaged by DDP or DeepSpeed (`accelerate launch`;
what ZeRO-3 changes is in `trimpi.train.distributed`). Processes stay in step, as ZeRO-3's
collective forwards need: the same dynamic-sampling rounds (`rollout.collect`) and the same
number of micro-batches (`update.step_micro_batches`) on each, whatever each one keeps.
Generation is seeded from (seed, step, rank), so a resumed run samples exactly what the
uninterrupted run would have.

The output directory is a stage directory (`trimpi.train.stage`): a finished one is refused
unless `overwrite`, an unfinished one resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trimpi.data.answers import Judge, Scoring
from trimpi.data.schema import PolicyStore, Record, most_prompt_images
from trimpi.errors import ConfigError
from trimpi.generation.engine import GenerationEngine, HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import PromptBuilder
from trimpi.generation.registry import build_engine
from trimpi.models.processing import tokenizer_of
from trimpi.train.distributed import (
    deepspeed_launched,
    fill_deepspeed_auto,
    gathered_parameters,
    prepare_frozen,
    zero3_enabled,
)
from trimpi.train.rl import checkpoint as ckpt
from trimpi.train.rl.config import RLConfig
from trimpi.train.rl.metrics import MetricSums, StepLogger, add_sample_metrics, step_row
from trimpi.train.rl.rewards import RewardSpec, builtin_rewards
from trimpi.train.rl.rollout import ShardStream, collect, make_batch, sample_groups
from trimpi.train.rl.update import fill_logps, normalizer, optimizer_step, policy_update
from trimpi.train.stage import mark_finished, prepare_stage_dir


def make_accelerator(report_to: str | None = None):
    """An Accelerator for RL: CPU when no GPU, DDP tolerant of parameters without gradient. The loop
    accumulates micro-batches itself (`deepspeed_values`): accelerate's own accumulation stays at 1, which
    also keeps it from reading a DeepSpeed config's `gradient_accumulation_steps: auto` as a number."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin

    cpu = not torch.cuda.is_available()
    if cpu and deepspeed_launched():  # as the HF Trainer does: gloo processes first, then DeepSpeed on them
        PartialState(cpu=True)
        cpu = False  # Accelerator(cpu=True) would drop DeepSpeed for DDP
    return Accelerator(
        cpu=cpu,
        log_with=report_to.split(",") if _tracking(report_to) else None,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1),
    )


def _tracking(report_to: str | None) -> bool:
    return report_to not in (None, "", "none")


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


def needs_reference(cfg: RLConfig, model) -> bool:
    """Whether the loop needs a reference model apart from `model`: β > 0 without LoRA (under LoRA
    the adapter-disabled policy is the reference)."""
    return cfg.resolved().beta > 0 and not _is_peft(model)


def reference_model(cfg: RLConfig, model, ref_model=None, zero3: bool = False):
    """The frozen reference for β > 0: `ref_model`, or a copy of the starting model; None when not
    `needs_reference`. Under ZeRO-3 (`zero3`) the model holds placeholders, so a copy would hold no
    weights: the reference must be given, loaded apart (`reference_loaded_apart`)."""
    if not needs_reference(cfg, model) or ref_model is not None:
        return ref_model
    if zero3:
        raise ConfigError("beta > 0 under ZeRO-3 needs a reference model loaded apart (pass ref_model)")
    return copy.deepcopy(model).eval().requires_grad_(False)


def reference_loaded_apart(cfg: RLConfig, model, accelerator, load: Callable[[], Any]):
    """The `ref_model` to pass `train_rl` for `model` under ZeRO-3: `load()` (the starting model loaded
    again, partitioned like the policy under zero3_init_flag), frozen; None when the run is not under
    ZeRO-3 or needs no reference (`train_rl` then copies the starting model itself)."""
    if not (zero3_enabled(accelerator) and needs_reference(cfg, model)):
        return None
    return load().eval().requires_grad_(False)


def config_rewards(cfg: RLConfig, judge: Judge | None = None) -> RewardSpec:
    """The built-in rewards weighted by cfg.reward_weights, accuracy scored with cfg.scorer (and `judge`)."""
    return RewardSpec(funcs=builtin_rewards(Scoring(cfg.scorer, judge)), weights=dict(cfg.reward_weights))


def rollout_engine(cfg: RLConfig, policy, processor, synced_gpus: bool = False,
                   max_images: int | None = None, run_dir: str | Path | None = None) -> GenerationEngine:
    """The engine cfg.engine names, sampling from `policy` (vLLM: its weights synced in every step).
    synced_gpus: HF generate in step on every process (ZeRO-3). max_images: the most images a rollout
    prompt shows (vLLM reserves room for that many)."""
    if cfg.engine == "hf":
        return HFGenerateEngine(policy, processor, batch_size=cfg.generation_batch_size, synced_gpus=synced_gpus)
    from trimpi.generation.vllm_engine import VLLMOptions

    options = VLLMOptions(mode=cfg.vllm_mode, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                          tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                          enable_sleep_mode=cfg.vllm_enable_sleep_mode, max_model_len=cfg.vllm_max_model_len,
                          enforce_eager=cfg.vllm_enforce_eager, run_dir=str(run_dir) if run_dir else None)
    return build_engine(cfg.engine, policy, processor, cfg.generation_batch_size, options, seed=cfg.seed,
                        max_images=max_images)


def deepspeed_values(cfg: RLConfig, world: int) -> dict:
    """The DeepSpeed config entries the RL loop sets (where they are "auto") for `world` processes:
    accelerate fills the batch sizes only from a prepared dataloader, and the loop has none. Each
    micro-batch's loss is already its share of the step's loss and the loop marks the step's last
    micro-batch (`micro_step`), so DeepSpeed must not divide by accumulation steps of its own: 1."""
    micro = cfg.per_device_train_batch_size
    return {"train_micro_batch_size_per_gpu": micro, "train_batch_size": micro * world,
            "gradient_accumulation_steps": 1, "gradient_clipping": cfg.max_grad_norm}


def sync_weights(accelerator, engine: GenerationEngine, policy) -> None:
    """engine.update_weights(policy); an engine that copies the weights gets them whole (collective
    under ZeRO-3), one that samples from the policy itself does not need them gathered."""
    shared = getattr(engine, "shares_weights", False)
    with contextlib.nullcontext() if shared else gathered_parameters(accelerator, policy):
        engine.update_weights(policy)


def pad_token_id(processor) -> int:
    tok = tokenizer_of(processor)
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


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
    resume_from_checkpoint: str | None = "last",
    start_checkpoint: str | None = None,
    report_to: str | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Train `model` with GRPO / DAPO (PolicyRollout when cfg.policy_rollout) and save it to `out`.

    records: training records (non-CoT QA with `answer`); data_root: their dataset directory
    (images, policies/). rewards: default `config_rewards(cfg)`, the built-ins weighted by
    cfg.reward_weights with accuracy scored by cfg.scorer (pass a RewardSpec to add a judge). ref_model: the frozen reference for β > 0 (default: a copy of `model`
    as given, or the adapter-disabled base under LoRA; under ZeRO-3 it must be given: `reference_loaded_apart`). engine: rollout engine (default: HF
    generate on `model`). resume_from_checkpoint: "last" (the newest checkpoint in `out`, if
    any), a checkpoint directory, or None to start from step 1. overwrite: train again over a
    finished `out`. progress: a progress bar (step, reward, accuracy, ETA). on_step(step, row):
    called after every step. Metrics go to OUT/metrics.jsonl. Returns the last step's metrics.
    """
    # --- setup
    cfg = cfg.resolved()
    out = prepare_stage_dir(out, overwrite)
    accelerator = accelerator or make_accelerator(report_to)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.prompts_per_step % world:
        raise ConfigError(f"--prompts-per-step {cfg.prompts_per_step} is not divisible by {world} processes")
    shard = records[rank::world]
    if not shard:
        raise ConfigError(f"process {rank} has no training records ({len(records)} records, {world} processes)")
    rewards = rewards or config_rewards(cfg)
    seed_everything(cfg.seed)

    ref_model = reference_model(cfg, model, ref_model, zero3_enabled(accelerator))
    n_steps = total_steps(cfg, len(records))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    from transformers import get_scheduler

    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, cfg.warmup_steps, n_steps * cfg.num_iterations)
    fill_deepspeed_auto(accelerator, deepspeed_values(cfg, world))
    model, optimizer = accelerator.prepare(model, optimizer)
    policy = accelerator.unwrap_model(model)
    ref_model = prepare_frozen(accelerator, ref_model)
    pad_id = pad_token_id(processor)
    policies = PolicyStore(data_root) if cfg.policy_rollout else None
    own_engine = engine is None
    if own_engine:
        with gathered_parameters(accelerator, policy):  # a vLLM engine starts from a copy of the whole model
            engine = rollout_engine(cfg, policy, processor, synced_gpus=zero3_enabled(accelerator),
                                    max_images=most_prompt_images(shard, policies), run_dir=out)
    sample = functools.partial(
        sample_groups, engine, PromptBuilder(processor, data_root, placement=cfg.policy_placement),
        num_generations=cfg.num_generations, rewards=rewards,
        params=SamplingParams(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k), policies=policies)

    step, position = 0, 0
    resume = ckpt.resolve_resume(out, resume_from_checkpoint)
    if resume is not None:
        state, rank_state = ckpt.load(accelerator, resume, model, optimizer, scheduler)
        step, position = int(state["step"]), int(rank_state["position"])
        accelerator.print(f"{out}: resuming from {resume.name} (step {step} of {n_steps})")
    stream = ShardStream(shard, cfg.seed + 7919 * rank, world, rank, start=position)
    kinds = ("plain", "policy") if cfg.policy_rollout else ("plain",)
    logger = StepLogger(out, step, n_steps, accelerator, cfg.logging_steps, _tracking(report_to), progress,
                        accuracy=kinds if "accuracy" in rewards.weights else ())
    if accelerator.is_main_process and _tracking(report_to):
        accelerator.init_trackers("trimpi-rl", config=asdict(cfg))
    base_state = {"config": asdict(cfg), "start_checkpoint": start_checkpoint, "world_size": world}

    # --- train
    row: dict = {}
    model.train()
    while step < n_steps:
        t0 = time.perf_counter()
        seed_everything(step_seed(cfg.seed, step, rank))
        sync_weights(accelerator, engine, policy)
        samples, stats = collect(stream.take, sample, cfg.prompts_per_step // world,
                                 cfg.dynamic_sampling, cfg.dynamic_sampling_max_tries)
        t_gen = time.perf_counter() - t0
        batch = make_batch(samples, cfg.scale_rewards, cfg.mask_truncated_completions)
        fill_logps(batch, cfg, policy, ref_model, processor, pad_id)
        norm = normalizer(batch, cfg.loss_type, cfg.max_completion_length, world)
        m = MetricSums()
        add_sample_metrics(m, stats.sampled, stats.groups_sampled, stats.groups_zero_std)
        for _ in range(cfg.num_iterations):
            policy_update(accelerator, model, processor, batch, cfg, norm, pad_id, m)
            grad_norm = optimizer_step(accelerator, model, optimizer, scheduler, cfg.max_grad_norm)
        step += 1
        row = step_row(m, stats, world, time.perf_counter() - t0, t_gen)
        row.update(step=step, epoch=stream.position * world / len(records), learning_rate=scheduler.get_last_lr()[0],
                   grad_norm=grad_norm)
        logger.log(row)
        if cfg.save_steps > 0 and step % cfg.save_steps == 0 and step < n_steps:
            ckpt.save(accelerator, out, step, model, processor, optimizer, scheduler, base_state,
                      {"position": stream.position}, cfg.save_total_limit)
        if on_step is not None:
            on_step(step, row)

    # --- save the model, then mark the stage finished
    logger.close()
    if own_engine:
        engine.close()
    accelerator.wait_for_everyone()
    ckpt.save_final(accelerator, model, processor, out)
    if accelerator.is_main_process:
        last = {k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))}
        mark_finished(out, {"stage": "rl", "global_step": step, **base_state, "last_step": last})
    accelerator.wait_for_everyone()
    if _tracking(report_to):
        accelerator.end_training()
    return row
