"""From a recipe to a graph of steps: methods share every step whose config and inputs agree.

    data ─ base ─ (warmup) ─┬─ eval[in_context]
                            ├─ sft(answer) ─ eval                    Direct SFT
                            ├─ sft(cot) ─┬─ eval                     CoT SFT
                            │            ├─ rl(grpo) / rl(dapo)      CoT SFT + GRPO / DAPO
                            │            └─ rl(poro_*)               TriMPI w/o VM-CPT
                            ├─ cpt ─ sft(cot) ─ rl(poro_*) / rl(*)   TriMPI / TriMPI w/o PoRo
                            └─ cpt(answer) ─ sft(answer) ─ rl(poro_*) TriMPI with direct answers (no traces)

With a `base:` section the methods start from a policy-following base instead (pipeline.base):

    data(base) ─ base ─ warmup ─ sft(in_context) ─┬─ eval[in_context, per base setting]
    data, base.datasets ──────────────────────────┘  (excluded policies; non-ClevrPolicy text also
                                                      trains a preset's tokenizer, the base step)

Every step's config holds its options fully resolved (pipeline.options), so a changed default
changes the hash of the steps it affects and of everything downstream. The recipe's judge is in the
config of the methods' eval and RL steps (the base's in-context evaluation on ClevrPolicy is never judged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.io import sha256_file
from trimpi.errors import ConfigError
from trimpi.pipeline import base as pf
from trimpi.pipeline import options as op
from trimpi.pipeline.base import BaseOptions
from trimpi.pipeline.options import MATERIALIZED, TINY_PREFIX
from trimpi.pipeline.recipe import METHODS, DataSpec, Recipe
from trimpi.pipeline.steps import Step

__all__ = ["MATERIALIZED", "TINY_PREFIX", "Plan", "make_plan"]


@dataclass
class Plan:
    """Every step in execution order, and for each method the step that evaluates it."""

    recipe: Recipe
    n_params: int  # the base model's size, which the size-dependent defaults follow
    steps: list[Step] = field(default_factory=list)
    evals: dict[str, Step] = field(default_factory=dict)
    models: dict[str, Step] = field(default_factory=dict)
    data: Step | None = None  # the recipe's dataset
    notes: list[str] = field(default_factory=list)  # what the dataset changed in the recipe (pipeline.adapt)
    base: Step | None = None  # the policy-following base (recipe `base:`) and its evaluation
    base_eval: Step | None = None


class Planner:
    """Builds steps, reusing one object per step id so that shared steps are run once."""

    def __init__(self, recipe: Recipe, n_params: int):
        self.recipe = recipe
        self.plan = Plan(recipe, n_params)
        self._by_id: dict[str, Step] = {}

    def step(self, kind: str, config: dict[str, Any], inputs: list[Step], method: str) -> Step:
        new = Step(kind, config, list(inputs))
        step = self._by_id.get(new.id)
        if step is None:
            step = self._by_id[new.id] = new
            self.plan.steps.append(step)
        if method not in step.methods:
            step.methods.append(method)
        for s in inputs:  # a shared input serves this method too
            _tag(s, method)
        return step


def _tag(step: Step, method: str) -> None:
    if method not in step.methods:
        step.methods.append(method)
    for s in step.inputs:
        _tag(s, method)


def data_config(spec: DataSpec, seed: int) -> dict[str, Any]:
    """A data step's config: the full build options, or an existing directory and its manifest hash."""
    if spec.clevr is not None:
        from trimpi.data.clevr.config import ClevrConfig

        cfg = ClevrConfig(**{"seed": seed, **spec.clevr})
        setting = spec.setting or f"{cfg.variant}-d{cfg.depths[0]}"
        return {"source": "clevr", "clevr": cfg.model_dump(), "setting": setting}
    if spec.gta is not None:
        return {"source": "gta", "gta": op.gta_options(spec.gta, seed)}
    path = Path(spec.path).resolve()
    manifest = path / "manifest.json"
    return {"source": "path", "path": str(path),
            "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None}


def base_config(recipe: Recipe) -> tuple[dict[str, Any], bool]:
    """The base-model step's config, and whether the step needs the dataset (presets, tiny models)."""
    from trimpi.models.presets import shipped_base_sha256

    name = recipe.model
    materialized = name in MATERIALIZED or name.startswith(TINY_PREFIX)
    cfg = {"model": name, "dtype": recipe.dtype}
    if materialized:
        cfg["seed"] = recipe.seed
    if name == "micro":  # shipped weights (or, without them, micro-scratch): new weights rebuild every step
        cfg["shipped_sha256"] = shipped_base_sha256()
    return cfg, materialized


def stage_options(recipe: Recipe, section: str) -> dict[str, Any]:
    """A training section's recipe options (direct_sft falls back to sft)."""
    if section == "direct_sft" and "direct_sft" not in recipe.stages:
        section = "sft"
    return dict(recipe.stages.get(section) or {})


def method_protocols(recipe: Recipe, method: str) -> list[str]:
    """What a method's evaluation runs: the base model is scored with the policy in context."""
    asked = list(recipe.eval.get("protocols") or ["accuracy"])
    if method == "in_context":
        return ["in_context"] + [p for p in asked if p == "efficiency"]
    return [p for p in asked if p != "in_context"] or ["accuracy"]


def with_judge(config: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """An eval or RL step's config with the recipe's judge, when it names one (without, the config is unchanged)."""
    judge = op.judge_options(recipe.judge)
    return config if judge is None else {**config, "judge": judge}


def chain_step(planner: Planner, link: str, model: Step, data: Step, method: str, n_params: int) -> Step:
    """The step for one link of a method's chain, on top of `model`."""
    recipe, seed = planner.recipe, planner.recipe.seed
    if link in ("cpt", "cpt_answer", "sft", "direct_sft"):
        stage = "cpt" if link.startswith("cpt") else "sft"
        target = "cot" if link in ("cpt", "sft") else "answer"
        section = "stages.cpt" if stage == "cpt" else f"stages.{link}"
        values = stage_options(recipe, section.removeprefix("stages."))
        if link == "cpt_answer":
            values.pop("split", None)  # a traces file named for VM-CPT; without traces it reads train.jsonl
        options = op.stage_options(section, values, stage, target, n_params)
        return planner.step(stage, {"stage": stage, "target": target, "options": options, "seed": seed},
                            [model, data], method)
    algo = link.removeprefix("poro_")
    poro = link.startswith("poro_")
    options = op.rl_options(f"stages.{algo}", dict(recipe.stages.get(algo) or {}), algo, poro, n_params)
    config = {"algo": algo, "policy_rollout": poro, "options": options, "seed": seed}
    return planner.step("rl", with_judge(config, recipe), [model, data], method)


def plan_base(planner: Planner, n_params: int, method: str) -> Step:
    """The policy-following base's steps (pipeline.base); returns its final model step."""
    recipe, seed = planner.recipe, planner.recipe.seed
    opts = BaseOptions(**recipe.base)
    datasets: dict[str, Step] = {}
    for spec in opts.datasets + [recipe.data.model_dump(exclude_none=True)]:
        s = planner.step("data", data_config(DataSpec(**spec), seed), [], method)
        datasets.setdefault(s.id, s)
    own = planner.step("data", pf.data_config(opts, seed), [], method)
    cfg, materialized = base_config(recipe)
    # a preset's tokenizer: the base's ClevrPolicy text covers every ClevrPolicy set; other datasets add theirs
    texts = [own] + [d for d in datasets.values() if d.config["source"] != "clevr"]
    init = planner.step("base", cfg, texts if materialized else [], method)
    warm = planner.step("warmup", {"options": op.warmup_options("base.warmup", opts.warmup), "seed": seed},
                        [init, own], method)
    sft = {"epochs": opts.epochs, "lr": opts.lr, "batch_size": opts.batch_size, "lora_rank": 0, "save_steps": 100}
    options = op.stage_options("base", sft, "sft", "cot", n_params)
    model = planner.step("sft", {"stage": "sft", "target": "in_context", "options": options, "seed": seed},
                         [warm, own, *datasets.values()], method)
    ev = {"batch_size": opts.eval_batch_size, "max_new_tokens": opts.max_new_tokens}
    keys = {"batch_size": "base.eval_batch_size", "max_new_tokens": "base.max_new_tokens"}
    config = {"protocols": ["in_context"], "options": op.eval_options("base", ev, ["in_context"], keys),
              "seed": seed, "dtype": recipe.dtype}
    planner.plan.base, planner.plan.base_eval = model, planner.step("eval", config, [model, own], method)
    return model


def make_plan(recipe: Recipe, only: list[str] | None = None, n_params: int | None = None) -> Plan:
    """Steps for the recipe's methods (or `only` these), shared where configs and inputs agree.
    `n_params`: the base model's size when the caller knows it (default: `options.model_parameters`)."""
    methods = list(recipe.methods)
    if only:
        for m in only:
            if m not in methods:
                raise ConfigError(f"--only: method {m!r} is not in the recipe (has {', '.join(methods)})")
        methods = [m for m in methods if m in only]
    n_params = n_params or op.model_parameters(recipe.model)
    planner = Planner(recipe, n_params)
    first = methods[0]
    data = planner.plan.data = planner.step("data", data_config(recipe.data, recipe.seed), [], first)
    if recipe.base is not None:
        base = plan_base(planner, n_params, first)
    else:
        cfg, needs_data = base_config(recipe)
        base = planner.step("base", cfg, [data] if needs_data else [], first)
        if recipe.warmup is not None:
            options = op.warmup_options("warmup", recipe.warmup)
            base = planner.step("warmup", {"options": options, "seed": recipe.seed}, [base, data], first)
    for method in methods:
        model = base
        for link in METHODS[method][1]:
            model = chain_step(planner, link, model, data, method, n_params)
        protocols = method_protocols(recipe, method)
        options = {k: v for k, v in recipe.eval.items() if k != "protocols"}
        inputs = [model, data] + ([base] if "forgetting" in protocols and model is not base else [])
        config = {"protocols": protocols, "options": op.eval_options("eval", options, protocols),
                  "seed": recipe.seed, "dtype": recipe.dtype}
        planner.plan.evals[method] = planner.step("eval", with_judge(config, recipe), inputs, method)
        planner.plan.models[method] = model
    return planner.plan
