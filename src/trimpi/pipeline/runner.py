"""`trimpi run`: validate everything, plan, run the steps that are not done, write the report.

    from trimpi.pipeline import load_recipe, run_recipe
    result = run_recipe(load_recipe("configs/demo.yaml"), "runs/demo")

OUT/run.json records the plan (recipe, methods, the policy-following base, steps); STORE/steps/
<kind>-<hash>/ hold the steps (STORE is OUT unless given: `trimpi repro` shares one store between
its runs, so a base that several settings start from is built once). Rerunning skips finished
steps. OUT is locked while a run works; `after(OUT)` (the caller's report: trimpi.report sits
above this layer) runs last, still under the lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trimpi.data.io import exclusive, mark_owned, write_json
from trimpi.errors import ConfigError
from trimpi.pipeline import launch
from trimpi.pipeline import steps as st
from trimpi.pipeline.adapt import ANSWER_ONLY, adapt_recipe, trace_split, traces_hint
from trimpi.pipeline.execute import EXECUTORS, RESUMABLE, Context
from trimpi.pipeline.options import LARGE_MODEL_PARAMS, model_parameters
from trimpi.pipeline.plan import MATERIALIZED, TINY_PREFIX, Plan, make_plan
from trimpi.pipeline.recipe import METHODS, Recipe

RUN_FILE = "run.json"
ASK_JUDGE = "an LLM judge: add `judge:` to the recipe"  # how a recipe's errors ask for the missing judge


def check_model(name: str, dry_run: bool = False, key: str = "model") -> None:
    """The base model (or the model at recipe `key`) must be a preset, a tiny family, a model directory or a
    Hugging Face id that can be had (cached, or downloadable when online); a dry run only checks the id's form."""
    from trimpi.errors import ModelError
    from trimpi.models.loading import check_hub_id
    from trimpi.models.tiny import FAMILIES

    if name in MATERIALIZED:
        return
    if name.startswith(TINY_PREFIX):
        if name.removeprefix(TINY_PREFIX) not in FAMILIES:
            raise ConfigError(f"{key}: unknown tiny family {name!r} (expected tiny:<{'|'.join(FAMILIES)}>)")
        return
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}: {name}: not a model directory (no config.json)")
        return
    try:
        check_hub_id(name, fetch=not dry_run)
    except ModelError as e:
        raise ConfigError(f"{key}: {e}") from None


def check_data(recipe: Recipe, plan: Plan) -> None:
    """A given dataset directory must exist and hold the files the chosen stages and protocols read."""
    from trimpi.eval.protocols import check_files
    from trimpi.eval.scoring import check_judge, check_unjudged

    spec = recipe.data
    needs_cot = any(s.kind in ("cpt", "sft") and s.config["target"] == "cot" for s in plan.steps)
    if spec.clevr is not None and needs_cot and spec.clevr.get("cot", 1) == 0:
        raise ConfigError("data.clevr.cot: VM-CPT and CoT SFT need reasoning examples (got 0)")
    protocols = {p for e in plan.evals.values() for p in e.config["protocols"]}
    judge = recipe.judge is not None
    if spec.gta is not None and "referral" in protocols and not judge:
        raise ConfigError(f"eval.protocols: referral on GTAPolicy needs {ASK_JUDGE} (exact referral is ClevrPolicy "
                          "only)")
    if spec.gta is not None and "forgetting" in protocols:
        raise ConfigError("eval.protocols: forgetting reads general_test.jsonl, which GTAPolicy does not have")
    for i, other in enumerate((recipe.base or {}).get("datasets") or []):  # their policies are excluded
        if other.get("path") is not None and not Path(other["path"]).is_dir():
            raise ConfigError(f"base.datasets[{i}].path: {other['path']}: dataset directory not found")
    if spec.path is None:
        return
    root = Path(spec.path)
    if not root.is_dir():
        raise ConfigError(f"data.path: {spec.path}: dataset directory not found")
    needed = ["train.jsonl"] + ([f"{trace_split(recipe)}.jsonl"] if needs_cot else [])
    for name in needed:
        if not (root / name).is_file():
            hint = f" ({traces_hint(root)})" if name != "train.jsonl" else ""
            raise ConfigError(f"data.path: {root / name}: file not found{hint}")
    try:
        check_files(root, sorted(protocols), judge, ASK_JUDGE)
        check_judge(root, sorted(protocols), judge, recipe.eval.get("limit"), ASK_JUDGE)
        if any(s.kind == "rl" for s in plan.steps) and not judge:  # the RL reward scores train.jsonl
            check_unjudged(root / "train.jsonl", ask=ASK_JUDGE)
    except Exception as e:  # noqa: BLE001 - DataError / ConfigError from the eval checks, re-keyed
        raise ConfigError(f"data.path: {e}") from None


def validate(recipe: Recipe, only: list[str] | None = None, dry_run: bool = False,
             echo: Callable[[str], None] = print) -> Plan:
    """Check the model, plan the recipe (resolving every option) and check the data; raises a one-line
    ConfigError. A dry run does not check that a hub model can be had (it touches no weights)."""
    check_model(recipe.model, dry_run)
    if recipe.judge is not None and recipe.judge.url is None:  # a local judge model
        check_model(recipe.judge.model, dry_run, key="judge.model")
    from trimpi.models.presets import shipped_base_sha256

    recipe, notes = adapt_recipe(recipe, base_shipped=shipped_base_sha256() is not None)
    for note in notes:
        echo(note)
    if only:
        only = [ANSWER_ONLY.get(m, m) if m not in recipe.methods else m for m in only]
    plan = make_plan(recipe, only, planning_size(recipe.model, dry_run, echo))
    plan.notes = notes
    check_data(recipe, plan)
    return plan


def planning_size(model: str, dry_run: bool, echo: Callable[[str], None]) -> int:
    """The base model's parameter count for the size-dependent defaults. A dry run of a hub model whose
    config.json cannot be had (offline, not cached) still shows its plan, with the defaults of a large
    model, and says so; a real run needs the size and fails in one line."""
    try:
        return model_parameters(model)
    except ConfigError as e:
        if not dry_run:
            raise
        echo(f"note: {e}; size-dependent defaults shown for a model of {LARGE_MODEL_PARAMS:,}+ parameters")
        return LARGE_MODEL_PARAMS


def describe_judge(recipe: Recipe) -> str:
    """The recipe's judge in one phrase: `model at url`, or `local model NAME`."""
    judge = recipe.judge
    return f"{judge.model or 'default'} at {judge.url}" if judge.url else f"local model {judge.model}"


def plan_record(plan: Plan, out: Path, store: Path | None = None) -> dict[str, Any]:
    """What run.json holds: the recipe, each method's model and eval step, the base, every step, and
    where the steps live (relative to OUT)."""
    store = Path(store or out)
    base = None
    if plan.base is not None:
        base = {"model": plan.base.id, "eval": plan.base_eval.id, "chain": _chain(plan.base)}
    return {
        "recipe": plan.recipe.model_dump(),
        "notes": plan.notes,
        "store": os.path.relpath(store.resolve(), Path(out).resolve()),
        "data": plan.data.id,
        "base": base,
        "methods": {m: {"label": METHODS[m][0], "model": plan.models[m].id, "eval": e.id,
                        "chain": _chain(plan.models[m])} for m, e in plan.evals.items()},
        "steps": [{"id": s.id, "kind": s.kind, "config": s.config, "inputs": [i.id for i in s.inputs],
                   "methods": s.methods, "status": st.status(s, store)} for s in plan.steps],
    }


def _chain(step: st.Step) -> list[str]:
    """Model steps from the base to `step`."""
    chain = [step.id]
    while step.inputs and step.inputs[0].kind in st.MODEL_KINDS:
        step = step.inputs[0]
        chain.append(step.id)
    return chain[::-1]


def run_step(step: st.Step, ctx: Context, echo: Callable[[str], None]) -> dict[str, Any]:
    """Run one step unless done; a partial directory resumes (training) or is removed first."""
    state = st.status(step, ctx.out)
    if state == "done":
        echo(f"skip  {step.id} (done)")
        return st.read_done(step, ctx.out)
    if state == "partial" and step.kind not in RESUMABLE:
        st.clear_partial(step, ctx.out)
    echo(f"{'resume' if state == 'partial' and step.kind in RESUMABLE else 'run'}   {step.id} "
         f"({', '.join(step.methods)})")
    step.dir(ctx.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = launch.run_launched(step, ctx) if launch.launched(step, ctx) else EXECUTORS[step.kind](step, ctx)
    return st.mark_done(step, ctx.out, result, time.perf_counter() - start)


def run_recipe(recipe: Recipe, out: str | Path, dry_run: bool = False, only: list[str] | None = None,
               ctx: Context | None = None, echo: Callable[[str], None] = print,
               store: str | Path | None = None, after: Callable[[Path], Any] | None = None,
               num_processes: int | None = None) -> dict[str, Any]:
    """Validate, then (unless dry_run) run every step not yet done, write run.json and call `after(out)`.

    With `only`, just those methods' steps run; run.json (and so the report) still covers every
    method of the recipe (those not run yet show no score). Steps live in `store` (default:
    `out`). When the recipe names an `accelerate:` config, training steps run as accelerate jobs
    (`num_processes` overrides the config's); a dry run prints each step's launch command.
    Returns run.json's content."""
    out = Path(out)
    store = Path(store or out)
    plan = validate(recipe, only, dry_run, echo)
    record = plan_record(plan, out, store)
    recipe = plan.recipe  # as the dataset allows it (pipeline.adapt)
    full = make_plan(recipe, n_params=plan.n_params) if only else plan
    full.notes = plan.notes
    ctx = ctx or Context(out=store)
    ctx.out = store
    ctx.launcher = launch.make_launcher(recipe.accelerate, num_processes)
    if dry_run:
        if recipe.judge is not None:
            echo(f"judge: {describe_judge(recipe)} (eval steps and the RL reward)")
        for s, step in zip(record["steps"], plan.steps, strict=True):
            echo(f"{s['status']:<8} {s['id']:<20} {', '.join(s['methods'])}: {launch.describe(step, ctx)}")
        return record
    if ctx.launcher is not None and any(launch.launched(s, ctx) and st.status(s, store) != "done" for s in plan.steps):
        launch.check_launchable(ctx.launcher)
    with exclusive(out):  # a second process on the same run directory fails here, naming this one's pid
        out.mkdir(parents=True, exist_ok=True)
        mark_owned(out, "run")
        write_json(out / RUN_FILE, plan_record(full, out, store))
        for step in plan.steps:
            run_step(step, ctx, echo)
        record = plan_record(full, out, store)
        write_json(out / RUN_FILE, record)
        if after is not None:
            after(out)
    return record
