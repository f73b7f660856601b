"""RL stage: GRPO / DAPO with PolicyRollout (rollout engines, rewards, advantages, losses, trainer)."""
