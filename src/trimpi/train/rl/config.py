"""RL options (TRL GRPOConfig names where TRL has one) and the per-algorithm paper defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from trimpi.data.answers import DEFAULT_TEXT_SCORER
from trimpi.data.gta.scorers import SCORER_NAMES
from trimpi.errors import ConfigError
from trimpi.generation.registry import ENGINES
from trimpi.train.rl.core_algos import LOSS_TYPES, SCALE_REWARDS

ALGOS = ("grpo", "dapo")

# SPEC §4: GRPO clip 0.2/0.3 with β = 0.01; DAPO clip 0.2/0.28, β = 0, dynamic sampling.
ALGO_DEFAULTS = {
    "grpo": dict(epsilon=0.2, epsilon_high=0.3, beta=0.01, dynamic_sampling=False),
    "dapo": dict(epsilon=0.2, epsilon_high=0.28, beta=0.0, dynamic_sampling=True),
}


SMALL_MODEL_PARAMS = 100_000_000  # below this (presets and their checkpoints) the default learning rate is 1e-4


def default_learning_rate(n_params: int) -> float:
    """The paper's 1e-6 for real models; 1e-4 for small ones, which learn nothing at 1e-6 in a few steps."""
    return 1e-4 if n_params < SMALL_MODEL_PARAMS else 1e-6


@dataclass
class RLConfig:
    """Every option of the RL stage. `None` means "the algorithm's default" (see `resolved`)."""

    algo: str = "grpo"
    policy_rollout: bool = False
    num_generations: int = 5  # G samples per prompt (2G per prompt with PolicyRollout)
    prompts_per_step: int = 8  # prompts (groups) per optimizer step, over all processes
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float | None = None
    epsilon: float | None = None
    epsilon_high: float | None = None
    dynamic_sampling: bool | None = None
    dynamic_sampling_max_tries: int = 20
    loss_type: str = "dapo"  # token-mean over the global batch
    scale_rewards: str = "group"
    mask_truncated_completions: bool = False
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_iterations: int = 1  # updates per rollout batch (μ); > 1 makes old log-probs differ
    per_device_train_batch_size: int = 8  # samples per forward/backward micro-batch
    generation_batch_size: int = 16  # prompts per generate() call
    policy_placement: str = "system"
    save_steps: int = 0  # 0: only the final save
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 0
    # Text scorer of the accuracy reward on GTA tool calls' free-text arguments, as `trimpi eval --scorer`:
    # "default" (MiniLM BERTScore when installed, else lexical F1), "bertscore" or "lexical".
    scorer: str = DEFAULT_TEXT_SCORER
    reward_weights: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.9, "format": 0.1})
    engine: str = "hf"  # rollout engine: hf (transformers generate) or vllm (trimpi.generation.vllm_engine)
    vllm_mode: str = "colocate"  # colocate (in this process) or server (a `vllm serve` process)
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    vllm_enable_sleep_mode: bool = False  # GPU only
    vllm_max_model_len: int | None = None  # longest prompt + completion (default: the model's, at most 8192)
    vllm_enforce_eager: bool | None = None  # None: eager on CPU, compiled (CUDA graphs) on GPU
    vllm_importance_sampling_correction: bool = False  # truncated IS on the plain half (update.py)
    vllm_importance_sampling_cap: float = 3.0

    def resolved(self) -> RLConfig:
        """A copy with algorithm defaults filled in, validated (raises ConfigError)."""
        if self.algo not in ALGOS:
            raise ConfigError(f"--algo must be one of {ALGOS}, got {self.algo!r}")
        values = asdict(self)
        for key, default in ALGO_DEFAULTS[self.algo].items():
            if values[key] is None:
                values[key] = default
        cfg = RLConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            (self.loss_type in LOSS_TYPES, f"--loss-type must be one of {LOSS_TYPES}"),
            (self.scale_rewards in SCALE_REWARDS, f"--scale-rewards must be one of {SCALE_REWARDS}"),
            (self.num_generations >= 1, "--num-generations must be >= 1"),
            (self.num_generations >= 2 or self.policy_rollout, "--num-generations must be >= 2 without --policy-rollout"),
            (self.prompts_per_step >= 1, "--prompts-per-step must be >= 1"),
            (self.max_completion_length >= 1, "--max-completion-length must be >= 1"),
            (self.temperature > 0, "--temperature must be > 0"),
            (self.learning_rate > 0, "--lr must be > 0"),
            ((self.beta or 0) >= 0, "--beta must be >= 0"),
            ((self.epsilon or 0) >= 0 and (self.epsilon_high or 0) >= 0, "--epsilon values must be >= 0"),
            (self.dynamic_sampling_max_tries >= 1, "--dynamic-sampling-max-tries must be >= 1"),
            (self.num_iterations >= 1, "--num-iterations must be >= 1"),
            (self.per_device_train_batch_size >= 1, "--per-device-train-batch-size must be >= 1"),
            (self.policy_placement in ("system", "user"), "--policy-placement must be system or user"),
            (self.scorer in SCORER_NAMES, f"--scorer must be one of {', '.join(SCORER_NAMES)}, got {self.scorer!r}"),
            (self.max_steps > 0 or self.epochs > 0, "set --max-steps or --epochs > 0"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (self.vllm_importance_sampling_cap >= 1, "--vllm-importance-sampling-cap must be >= 1"),
            (self.vllm_max_model_len is None or self.vllm_max_model_len >= 1, "--vllm-max-model-len must be >= 1"),
            (not self.vllm_importance_sampling_correction or self.engine == "vllm",
             "--vllm-importance-sampling-correction needs --engine vllm"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    @classmethod
    def from_dict(cls, data: dict) -> RLConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
