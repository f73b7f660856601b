"""RL stage: GRPO / DAPO with PolicyRollout (SPEC §4).

Prompts and generation engines live one layer below, in `trimpi.generation`.

Modules, in data-flow order:
    config      RLConfig: every option (TRL names) and the per-algorithm paper defaults
    encoding    right-padded scoring batches (prompt + sampled ids) and their log-probs
    rewards     reward signature fn(completions, records) -> floats; accuracy, format, RewardSpec
    rollout     sample_groups (plain or PolicyRollout), make_batch (advantages), collect (dynamic sampling)
    core_algos  pure math: group advantages, clipped objective, k3 KL, loss aggregation per loss_type
    update      log-probs under the stored (no-policy) prompt; micro-batched policy update
    metrics     per-step metrics reduced over processes; metrics.jsonl, trackers, progress bar
    checkpoint  save_pretrained checkpoints with optimizer / scheduler / RNG / data position (weights_only)
    trainer     train_rl(): setup, the loop, save and mark the stage finished

Python entry point: `trimpi.train.rl.trainer.train_rl(cfg, model, processor, records, data_root, out)`.
"""
