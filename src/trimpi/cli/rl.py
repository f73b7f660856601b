"""`trimpi train rl`: GRPO / DAPO with PolicyRollout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trimpi.cli import vllm_options
from trimpi.cli.safety import ApiKeyEnv, TrustCode


def rl(
    data: Annotated[Path, typer.Option(help="Dataset directory (train.jsonl, images, policies/).")],
    model: Annotated[str, typer.Option(help="Starting checkpoint: a directory, a cached HF id or a preset.")],
    out: Annotated[Path, typer.Option(help="Output directory (final model, checkpoints, metrics.jsonl).")],
    algo: Annotated[str, typer.Option(help="grpo (clip 0.2/0.3, beta 0.01) or dapo (clip 0.2/0.28, beta 0, "
                                           "dynamic sampling).")] = "grpo",
    policy_rollout: Annotated[bool, typer.Option(help="PolicyRollout: also sample G completions with the policy "
                                                      "in context; all 2G form one group.")] = False,
    num_generations: Annotated[int, typer.Option(help="G completions per prompt (and per policy prompt).")] = 5,
    prompts_per_step: Annotated[int, typer.Option(help="Prompts (groups) per optimizer step, all processes.")] = 8,
    epochs: Annotated[float, typer.Option(help="Passes over the training records.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (overrides --epochs when > 0).")] = 0,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-6; 1e-4 below 100M parameters).")] = None,
    beta: Annotated[float | None, typer.Option(help="KL coefficient to the starting model (k3).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Lower clip range epsilon_low.")] = None,
    epsilon_high: Annotated[float | None, typer.Option(help="Upper clip range epsilon_high.")] = None,
    loss_type: Annotated[str, typer.Option(help="grpo | dapo (token mean) | dr_grpo | bnpo.")] = "dapo",
    scale_rewards: Annotated[str, typer.Option(help="Divide advantages by the group std, batch std or none.")] = "group",
    mask_truncated_completions: Annotated[bool, typer.Option(help="No loss on completions cut by the length "
                                                                  "limit.")] = False,
    max_completion_length: Annotated[int, typer.Option(help="Maximum generated tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    dynamic_sampling: Annotated[bool | None, typer.Option("--dynamic-sampling/--no-dynamic-sampling",
                                                          help="Drop equal-reward groups and resample "
                                                               "(default: on for dapo).")] = None,
    dynamic_sampling_max_tries: Annotated[int, typer.Option(help="Resampling rounds before going on.")] = 20,
    num_iterations: Annotated[int, typer.Option(help="Updates per rollout batch (mu).")] = 1,
    per_device_train_batch_size: Annotated[int, typer.Option(help="Samples per forward/backward micro-batch.")] = 8,
    generation_batch_size: Annotated[int, typer.Option(help="Prompts per generate() call.")] = 16,
    policy_placement: Annotated[str, typer.Option(help="Where the policy goes in policy-aware prompts: system "
                                                       "or user.")] = "system",
    reward: Annotated[list[str], typer.Option(help="Reward: accuracy, format or module:function; repeat.")] = [  # noqa: B006
        "accuracy", "format"],
    reward_weights: Annotated[str | None, typer.Option(help="Weights, e.g. accuracy=0.9,format=0.1.")] = None,
    scorer: Annotated[str, typer.Option(help="GTA text scorer of the accuracy reward: default, bertscore or "
                                             "lexical (the same default as `trimpi eval`).")] = "default",
    judge: Annotated[str | None, typer.Option(help="LLM judge of records with answer type 'judge' (as `trimpi "
                                                   "eval --judge`): an OpenAI-compatible URL or a local model.")]
    = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name served at the --judge URL.")] = None,
    api_key_env: ApiKeyEnv = None,
    trust_code: TrustCode = [],  # noqa: B006
    split: Annotated[str, typer.Option(help="JSONL file of --data to train on.")] = "train",
    save_steps: Annotated[int, typer.Option(help="Save a checkpoint every N steps (0: final model only).")] = 0,
    save_total_limit: Annotated[int, typer.Option(help="Checkpoints to keep.")] = 2,
    resume_from_checkpoint: Annotated[str, typer.Option(help="A checkpoint directory, or 'last': the newest in "
                                                             "--out, if any (a rerun resumes by itself).")] = "last",
    overwrite: Annotated[bool, typer.Option(help="Train again over a finished output directory.")] = False,
    report_to: Annotated[str, typer.Option(help="none, tensorboard, wandb, ... (accelerate trackers).")] = "none",
    lora_r: Annotated[int, typer.Option(help="LoRA rank (0: full-parameter training, the paper's setting).")] = 0,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default: 2 x rank).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 / bfloat16 (default: fp32 on CPU).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar (step, reward, "
                                                                           "accuracy, ETA).")] = True,
    engine: Annotated[str, typer.Option(help="Rollout engine: hf (transformers generate) or vllm.")] = "hf",
    vllm_mode: Annotated[str, typer.Option(help="colocate (vLLM in this process) or server (a `vllm serve` "
                                                "process).")] = "colocate",
    vllm_gpu_memory_utilization: Annotated[float, typer.Option(help="GPU memory share vLLM may take.")] = 0.3,
    vllm_tensor_parallel_size: Annotated[int, typer.Option(help="vLLM tensor parallel size.")] = 1,
    vllm_enable_sleep_mode: Annotated[bool, typer.Option(help="Free vLLM's GPU memory between rollouts.")] = False,
    vllm_max_model_len: vllm_options.MaxModelLen = None,
    vllm_enforce_eager: vllm_options.EnforceEager = None,
    vllm_importance_sampling_correction: Annotated[bool, typer.Option(
        help="Truncated importance sampling for the vLLM/trainer log-prob mismatch (plain half only).")] = False,
    vllm_importance_sampling_cap: Annotated[float, typer.Option(help="Cap of the TIS weight.")] = 3.0,
) -> None:
    """RL with GRPO or DAPO, optionally with PolicyRollout; writes a from_pretrained-loadable model."""
    import dataclasses

    from trimpi.cli.safety import local_inputs, main_process
    from trimpi.data.answers import Scoring, check_custom_code, needs_judge
    from trimpi.data.io import owned_output
    from trimpi.data.schema import load_records
    from trimpi.errors import ConfigError, DataError
    from trimpi.generation.judge import make_answer_judge
    from trimpi.models.loading import load_model
    from trimpi.pipeline.options import model_parameters
    from trimpi.train.distributed import zero3_enabled
    from trimpi.train.rl.config import RLConfig, default_learning_rate
    from trimpi.train.rl.rewards import RewardSpec
    from trimpi.train.rl.trainer import make_accelerator, reference_loaded_apart, train_rl
    from trimpi.train.stage import prepare_stage_dir
    from trimpi.trust import trust_code as trust

    trust(trust_code)
    if max_steps < 0:
        raise ConfigError(f"--max-steps: must be at least 1, or 0 to run --epochs, got {max_steps}")
    claim = owned_output(out, "train rl", overwrite, local_inputs(data=data, model=model), lock=main_process())
    with claim:  # refuse a foreign or locked --out, or one holding an input, before loading anything
        prepare_stage_dir(out, overwrite)  # refuse a finished --out before loading anything
        if engine == "vllm":
            from trimpi.generation.vllm_engine import import_vllm

            import_vllm()  # a missing vLLM fails now, in one line, not after the model is loaded
        path = data / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: file not found (expected a dataset directory with {split}.jsonl)")
        records = load_records(path)
        check_custom_code(records, str(path))
        if needs_judge(records) and judge is None:
            raise ConfigError(f"{path}: records with answer type 'judge' need --judge (an OpenAI-compatible URL or a "
                              "local model)")
        cfg = RLConfig(  # every option checked before anything loads; the learning rate may follow the model size
            algo=algo, policy_rollout=policy_rollout, num_generations=num_generations,
            prompts_per_step=prompts_per_step,
            epochs=epochs, max_steps=max_steps, learning_rate=1e-6 if lr is None else lr, beta=beta, epsilon=epsilon,
            epsilon_high=epsilon_high, dynamic_sampling=dynamic_sampling,
            dynamic_sampling_max_tries=dynamic_sampling_max_tries,
            loss_type=loss_type, scale_rewards=scale_rewards, mask_truncated_completions=mask_truncated_completions,
            max_completion_length=max_completion_length, temperature=temperature, num_iterations=num_iterations,
            per_device_train_batch_size=per_device_train_batch_size, generation_batch_size=generation_batch_size,
            policy_placement=policy_placement, save_steps=save_steps, save_total_limit=save_total_limit, seed=seed,
            scorer=scorer, engine=engine, vllm_mode=vllm_mode, vllm_gpu_memory_utilization=vllm_gpu_memory_utilization,
            vllm_tensor_parallel_size=vllm_tensor_parallel_size, vllm_enable_sleep_mode=vllm_enable_sleep_mode,
            vllm_max_model_len=vllm_max_model_len, vllm_enforce_eager=vllm_enforce_eager,
            vllm_importance_sampling_correction=vllm_importance_sampling_correction,
            vllm_importance_sampling_cap=vllm_importance_sampling_cap,
        ).resolved()
        scoring = Scoring(cfg.scorer)
        rewards = RewardSpec.parse(reward, reward_weights, scoring)  # names and weights checked before anything loads
        accelerator = make_accelerator(report_to)
        if judge:
            scoring.judge = make_answer_judge(judge, judge_model, data, api_key_env=api_key_env, dtype=dtype,
                                              device=accelerator.device)
        net, processor = load_model(model, dtype=dtype, device=accelerator.device, data=data, seed=seed)
        if lr is None:  # under ZeRO-3 the loaded parameters are empty placeholders: size from the config then
            lr = default_learning_rate(model_parameters(model) if zero3_enabled(accelerator)
                                       else sum(p.numel() for p in net.parameters()))
        if lora_r > 0:
            from trimpi.models.lora import apply_lora

            net = apply_lora(net, lora_r, lora_alpha, dropout=0.0)  # dropout would make the ratio noisy
        ref_model = reference_loaded_apart(cfg, net, accelerator, lambda: load_model(
            model, dtype=dtype, device=accelerator.device, data=data, seed=seed)[0])
        cfg = dataclasses.replace(cfg, learning_rate=cfg.learning_rate if lr is None else lr,
                                  reward_weights=rewards.weights)
        row = train_rl(cfg, net, processor, records, data, out, rewards=rewards, ref_model=ref_model,
                       accelerator=accelerator, resume_from_checkpoint=resume_from_checkpoint,
                       start_checkpoint=str(model), report_to=report_to, overwrite=overwrite, progress=progress)
        if accelerator.is_main_process:
            typer.echo(f"model: {out}\nmetrics: {out / 'metrics.jsonl'}\nlast step: {row.get('step', 0)} "
                       f"reward {row.get('reward', 0.0):.3f}")
