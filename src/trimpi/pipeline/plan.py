"""From a recipe to a graph of steps: methods share every step whose config and inputs agree.

    data ─ base ─ (warmup) ─┬─ eval[in_context]
                            ├─ sft(answer) ─ eval                    Direct SFT
                            ├─ sft(cot) ─┬─ eval                     CoT SFT
                            │            ├─ rl(grpo) / rl(dapo)      CoT SFT + GRPO / DAPO
                            │            └─ rl(poro_*)               TriMPI w/o VM-CPT
                            └─ cpt ─ sft(cot) ─ rl(poro_*) / rl(*)   TriMPI / TriMPI w/o PoRo
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimpi.data.io import sha256_file
from trimpi.errors import ConfigError
from trimpi.pipeline.recipe import METHODS, Recipe
from trimpi.pipeline.steps import Step

TINY_PREFIX = "tiny:"
MATERIALIZED = ("micro", "smol")  # presets saved once as a checkpoint (their tokenizer depends on the data)


@dataclass
class Plan:
    """Every step in execution order, and for each method the step that evaluates it."""

    recipe: Recipe
    steps: list[Step] = field(default_factory=list)
    evals: dict[str, Step] = field(default_factory=dict)
    models: dict[str, Step] = field(default_factory=dict)


class Planner:
    """Builds steps, reusing one object per step id so that shared steps are run once."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.plan = Plan(recipe)
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


def data_config(recipe: Recipe) -> dict[str, Any]:
    """The data step's config: the full build options, or an existing directory and its manifest hash."""
    spec = recipe.data
    if spec.clevr is not None:
        from trimpi.data.clevr.config import ClevrConfig

        cfg = ClevrConfig(**{"seed": recipe.seed, **spec.clevr})
        setting = spec.setting or f"{cfg.variant}-d{cfg.depths[0]}"
        return {"source": "clevr", "clevr": cfg.model_dump(), "setting": setting}
    if spec.gta is not None:
        gta = {"gta_dir": None, "profiles_per_step": 1, "seed": recipe.seed, **spec.gta}
        return {"source": "gta", "gta": gta}
    path = Path(spec.path).resolve()
    manifest = path / "manifest.json"
    return {"source": "path", "path": str(path),
            "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None}


def base_config(recipe: Recipe) -> tuple[dict[str, Any], bool]:
    """The base-model step's config, and whether the step needs the dataset (presets, tiny models)."""
    name = recipe.model
    materialized = name in MATERIALIZED or name.startswith(TINY_PREFIX)
    cfg = {"model": name, "dtype": recipe.dtype}
    if materialized:
        cfg["seed"] = recipe.seed
    return cfg, materialized


def stage_config(recipe: Recipe, section: str, **fixed) -> dict[str, Any]:
    """A training step's config: the recipe section (direct_sft falls back to sft) plus fixed fields."""
    options = dict(recipe.stages.get(section) or {})
    if section == "direct_sft" and "direct_sft" not in recipe.stages:
        options = dict(recipe.stages.get("sft") or {})
    return {**fixed, "options": options, "seed": recipe.seed}


def method_protocols(recipe: Recipe, method: str) -> list[str]:
    """What a method's evaluation runs: the base model is scored with the policy in context."""
    asked = list(recipe.eval.get("protocols") or ["accuracy"])
    if method == "in_context":
        return ["in_context"] + [p for p in asked if p == "efficiency"]
    return [p for p in asked if p != "in_context"] or ["accuracy"]


def chain_step(planner: Planner, link: str, model: Step, data: Step, method: str) -> Step:
    """The step for one link of a method's chain, on top of `model`."""
    recipe = planner.recipe
    if link == "cpt":
        return planner.step("cpt", stage_config(recipe, "cpt", stage="cpt", target="cot"), [model, data], method)
    if link in ("sft", "direct_sft"):
        target = "cot" if link == "sft" else "answer"
        return planner.step("sft", stage_config(recipe, link, stage="sft", target=target), [model, data], method)
    algo = link.removeprefix("poro_")
    cfg = stage_config(recipe, algo, algo=algo, policy_rollout=link.startswith("poro_"))
    return planner.step("rl", cfg, [model, data], method)


def make_plan(recipe: Recipe, only: list[str] | None = None) -> Plan:
    """Steps for the recipe's methods (or `only` these), shared where configs and inputs agree."""
    methods = list(recipe.methods)
    if only:
        for m in only:
            if m not in methods:
                raise ConfigError(f"--only: method {m!r} is not in the recipe (has {', '.join(methods)})")
        methods = [m for m in methods if m in only]
    planner = Planner(recipe)
    first = methods[0]
    data = planner.step("data", data_config(recipe), [], first)
    cfg, needs_data = base_config(recipe)
    base = planner.step("base", cfg, [data] if needs_data else [], first)
    if recipe.warmup is not None:
        base = planner.step("warmup", {"options": dict(recipe.warmup), "seed": recipe.seed}, [base, data], first)
    for method in methods:
        model = base
        for link in METHODS[method][1]:
            model = chain_step(planner, link, model, data, method)
        protocols = method_protocols(recipe, method)
        options = {k: v for k, v in recipe.eval.items() if k != "protocols"}
        inputs = [model, data] + ([base] if "forgetting" in protocols and model is not base else [])
        config = {"protocols": protocols, "options": options, "seed": recipe.seed, "dtype": recipe.dtype}
        planner.plan.evals[method] = planner.step("eval", config, inputs, method)
        planner.plan.models[method] = model
    return planner.plan
