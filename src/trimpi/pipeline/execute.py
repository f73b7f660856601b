"""Run one step of a plan by calling the library: data builders, stages, RL and evaluation.

Inputs are positional: training steps take [model, data]; eval takes [model, data, (baseline)];
a base step takes the datasets whose text trains a preset's tokenizer; the base's in-context SFT
takes [model, its own data, excluded datasets...]. Each executor is a function of the step's
config, its inputs' directories and its own directory (`Step.dir(ctx.out)`): it writes into that
directory and returns a small JSON-able result that goes into done.json. Training steps resume
from their own checkpoints when a directory is partial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trimpi.pipeline.options import TINY_PREFIX, judge_args, judge_key_env
from trimpi.pipeline.steps import Step, clear_partial
from trimpi.train.stage import RESULT_KEYS, finished_summary

if TYPE_CHECKING:
    from trimpi.train.rl.config import RLConfig
    from trimpi.train.rl.rewards import RewardSpec

RESUMABLE = ("warmup", "cpt", "sft", "rl")  # kinds whose partial directory resumes instead of restarting


@dataclass
class Context:
    """What executors need beyond the step: where steps live, hooks and display options."""

    out: Path  # the step store: steps live in OUT/steps/<kind>-<hash>/
    progress: bool = False
    callbacks: list = field(default_factory=list)  # transformers callbacks for warmup / cpt / sft
    on_rl_step: Callable[[int, dict], None] | None = None
    # pipeline.launch.Launcher: cpt / sft / rl steps run as accelerate jobs (hooks above stay in process)
    launcher: Any = None


def dataset_path(step: Step, out: Path) -> Path:
    """The dataset directory a data step provides."""
    cfg = step.config
    if cfg["source"] == "path":
        return Path(cfg["path"])
    if cfg["source"] == "gta":
        return step.dir(out) / "gta"
    return setting_dirs(step, out)[0]


def setting_dirs(step: Step, out: Path) -> list[Path]:
    """Every dataset directory a data step provides (the policy-following base's data has one per
    variant and depth; any other data step has one)."""
    cfg = step.config
    if cfg["source"] == "policy_base":
        return [step.dir(out) / v / f"{v}-d{d}" for v, c in cfg["clevr"].items() for d in c["depths"]]
    if cfg["source"] == "clevr":
        return [step.dir(out) / "clevr" / cfg["setting"]]
    return [dataset_path(step, out)]


def model_path(step: Step, out: Path) -> str:
    """The checkpoint (directory, or a Hugging Face id / path for an unmaterialized base) a step provides."""
    if step.kind == "base" and not step.inputs:
        return step.config["model"]
    return str(step.dir(out) / "model") if step.kind == "base" else str(step.dir(out))


def run_data(step: Step, ctx: Context) -> dict[str, Any]:
    cfg = step.config
    if cfg["source"] == "clevr":
        from trimpi.data.clevr.build import build_clevr
        from trimpi.data.clevr.config import ClevrConfig

        build_clevr(ClevrConfig.checked(**cfg["clevr"]), step.dir(ctx.out) / "clevr", overwrite=True,
                    progress=ctx.progress)
    elif cfg["source"] == "policy_base":
        from trimpi.data.clevr.build import build_clevr
        from trimpi.data.clevr.config import ClevrConfig

        for variant, build in cfg["clevr"].items():
            build_clevr(ClevrConfig.checked(**build), step.dir(ctx.out) / variant, overwrite=True,
                        progress=ctx.progress)
    elif cfg["source"] == "gta":
        from trimpi.data.gta.build import build_gta

        g = cfg["gta"]
        build_gta(out=step.dir(ctx.out) / "gta", gta_dir=Path(g["gta_dir"]) if g["gta_dir"] else None,
                  profiles_per_step=g["profiles_per_step"], seed=g["seed"], overwrite=True)
    return {"dataset": str(dataset_path(step, ctx.out))}


def run_base(step: Step, ctx: Context) -> dict[str, Any]:
    """Presets and tiny models are built once (tokenizer trained on the inputs' text) and saved as a checkpoint."""
    if not step.inputs:
        return {"model": step.config["model"]}
    from trimpi.data.schema import dataset_texts
    from trimpi.models.loading import load_model, save_checkpoint
    from trimpi.models.presets import preset_texts

    name, seed = step.config["model"], step.config["seed"]
    texts = [t for data in step.inputs for root in setting_dirs(data, ctx.out) for t in dataset_texts(root)]
    if name.startswith(TINY_PREFIX):
        from trimpi.models.tiny import build_tiny

        model, processor = build_tiny(name.removeprefix(TINY_PREFIX), texts=preset_texts(texts=texts), seed=seed)
    else:
        model, processor = load_model(name, dtype="float32", device="cpu", texts=texts, seed=seed)
    out = step.dir(ctx.out) / "model"
    save_checkpoint(model, processor, out)
    return {"model": str(out), "parameters": sum(p.numel() for p in model.parameters())}


def run_warmup_step(step: Step, ctx: Context) -> dict[str, Any]:
    from trimpi.train.warmup import WarmupOptions, run_warmup

    summary = finished_summary(step.dir(ctx.out))
    if summary is None:
        model, data = step.inputs
        opts = WarmupOptions(data=str(dataset_path(data, ctx.out)), out=str(step.dir(ctx.out)),
                             model=model_path(model, ctx.out), seed=step.config["seed"], progress=ctx.progress,
                             **step.config["options"])
        summary = run_warmup(opts, callbacks=ctx.callbacks)
    return _stage_result(summary)


def run_train_stage(step: Step, ctx: Context) -> dict[str, Any]:
    """VM-CPT (all-but-visual mask) or SFT (completion mask; cot or answer target, or the policy-following
    base's in-context examples: the policy in the system turn, records of excluded policies left out)."""
    from trimpi.train.sft import StageOptions, run_stage

    summary = finished_summary(step.dir(ctx.out))
    if summary is None:
        model, data = step.inputs[:2]
        cfg = step.config
        examples, counts = None, {}
        if cfg["target"] == "in_context":
            examples, counts = base_examples(step, ctx)
        opts = StageOptions(data=str(dataset_path(data, ctx.out)), model=model_path(model, ctx.out),
                            out=str(step.dir(ctx.out)), stage=cfg["stage"],
                            target="cot" if cfg["target"] == "in_context" else cfg["target"], seed=cfg["seed"],
                            progress=ctx.progress, **cfg["options"])
        summary = {**run_stage(opts, callbacks=ctx.callbacks, examples=examples), **counts}
    return _stage_result({**summary, "target": step.config["target"]})


def base_examples(step: Step, ctx: Context) -> tuple[list[dict], dict[str, int]]:
    """The in-context examples of the base's own data, without the excluded datasets' policies."""
    from trimpi.pipeline.base import dataset_tree_keys, in_context_examples

    own, *excluded = step.inputs[1:]
    keys = set().union(*(dataset_tree_keys(root) for d in excluded for root in setting_dirs(d, ctx.out)))
    return in_context_examples(setting_dirs(own, ctx.out), keys)


def _stage_result(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("stage", "target", "examples", "global_step", "train_loss", *RESULT_KEYS, "policies", "dropped_records",
            "excluded_policies")
    return {k: summary[k] for k in keep if k in summary}


def rl_config(step: Step):
    """The RLConfig of an rl step (its options are resolved by the plan)."""
    from trimpi.train.rl.config import RLConfig

    cfg = step.config
    return RLConfig(algo=cfg["algo"], policy_rollout=cfg["policy_rollout"], seed=cfg["seed"], **cfg["options"])


def run_rl_step(step: Step, ctx: Context) -> dict[str, Any]:
    """GRPO / DAPO (PolicyRollout when configured) on train.jsonl; resumes from the last RL checkpoint.

    A checkpoint that cannot be loaded into the model (e.g. a family saved under other key
    names) is discarded: the step restarts from its input model, as an uninterrupted run would.
    """
    from trimpi.data.schema import load_records
    from trimpi.errors import DataError, TrimpiError

    root = dataset_path(step.inputs[1], ctx.out)
    path = root / "train.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: file not found (RL trains on train.jsonl)")
    records = load_records(path)
    if (done := finished_summary(step.dir(ctx.out))) is not None:  # finished, but not yet recorded as done
        return {"steps": done["global_step"], "reward": done["last_step"].get("reward"), "metrics": "metrics.jsonl"}
    try:
        row = _train_rl(step, ctx, records, root, resume="last")
    except TrimpiError as e:
        if "checkpoint" not in str(e):
            raise
        clear_partial(step, ctx.out)
        step.dir(ctx.out).mkdir(parents=True, exist_ok=True)  # another process of a job may be first
        row = _train_rl(step, ctx, records, root, resume=None)
    return {"steps": row.get("step", 0), "reward": row.get("reward"), "metrics": "metrics.jsonl"}


def _train_rl(step: Step, ctx: Context, records, root: Path, resume: str | None) -> dict[str, Any]:
    from trimpi.models.loading import load_model
    from trimpi.train.rl.trainer import make_accelerator, reference_loaded_apart, train_rl

    accelerator = make_accelerator()
    cfg = rl_config(step)
    rewards = rl_rewards(step, cfg, root, accelerator.device)
    start = model_path(step.inputs[0], ctx.out)

    def load():
        return load_model(start, device=accelerator.device, data=root, seed=step.config["seed"])

    net, processor = load()
    ref_model = reference_loaded_apart(cfg, net, accelerator, lambda: load()[0])
    return train_rl(cfg, net, processor, records, root, step.dir(ctx.out), rewards=rewards, ref_model=ref_model,
                    accelerator=accelerator, resume_from_checkpoint=resume, start_checkpoint=start,
                    progress=ctx.progress, on_step=ctx.on_rl_step)


def rl_rewards(step: Step, cfg: RLConfig, root: Path, device: Any = None) -> RewardSpec:
    """An rl step's rewards: the built-ins of its config, accuracy judged by the recipe's judge when it names
    one (the AnswerJudge of `trimpi train rl --judge`, so a judged record's reward is its eval score)."""
    from trimpi.generation.judge import make_answer_judge
    from trimpi.train.rl.trainer import config_rewards

    spec, served = judge_args(step.config.get("judge"))
    key_env = judge_key_env(step.config.get("judge"))
    return config_rewards(cfg, make_answer_judge(spec, served, root, api_key_env=key_env, device=device)
                          if spec else None)


def run_eval_step(step: Step, ctx: Context) -> dict[str, Any]:
    """`trimpi eval` on the step's model, judged by the recipe's judge if it names one; forgetting is measured
    against the base model. A data step with several settings (the policy-following base's) is evaluated on
    each, in a subdirectory per setting."""
    from trimpi.eval.runner import EvalOptions, run_eval

    model, data = step.inputs[:2]
    baseline = model_path(step.inputs[2], ctx.out) if len(step.inputs) > 2 else None
    opts = EvalOptions(protocols=list(step.config["protocols"]), progress=ctx.progress, **step.config["options"])
    judge, judge_model = judge_args(step.config.get("judge"))
    roots = setting_dirs(data, ctx.out)
    per_setting = {}
    for root in roots:
        out = step.dir(ctx.out) / (root.name if len(roots) > 1 else "")
        results = run_eval(model_path(model, ctx.out), root, out, opts, judge=judge, judge_model=judge_model,
                           judge_api_key_env=judge_key_env(step.config.get("judge")), baseline_model=baseline, dtype=step.config.get("dtype"), seed=step.config["seed"])
        per_setting[root.name] = next(iter(results.values()))["protocols"]
    if len(roots) > 1:
        return {"settings": per_setting}
    return {"scores": "scores.json", "protocols": per_setting[roots[0].name]}


EXECUTORS: dict[str, Callable[[Step, Context], dict[str, Any]]] = {
    "data": run_data, "base": run_base, "warmup": run_warmup_step, "cpt": run_train_stage, "sft": run_train_stage,
    "rl": run_rl_step, "eval": run_eval_step,
}
