"""`trimpi repro`: the paper's Table-2 comparison over several settings and seeds.

    name: micro-repro
    model: micro
    seeds: [0, 1]
    base: {policies: 24, scenes: 1000, ...}      # the policy-following base (trimpi.pipeline.base)
    settings:
      T-d2: {data: {clevr: {depths: [2], variant: T, ...}}}
      gta:  {data: {gta: {}}, eval: {protocols: [accuracy, in_context, override]}}
    stages: {...}       # shared by every setting; a setting's own `stages` entries replace these
    methods: [in_context, cot_sft, ...]
    eval: {protocols: [accuracy, override, referral], ...}
    judge: {url: ..., model: ...}                # optional, as in a recipe; so are dtype, engine, accelerate

Each setting and seed is one ordinary `trimpi run` recipe (`setting_recipe`) whose `base:` lists
every setting's dataset, so the policy-following base excludes the policies of them all and is the
same steps (same hashes) in every setting's plan. The runs share one step store, so each seed's
datasets and base are built once:

    OUT/steps/<kind>-<hash>/       every step of every run (content-addressed; seeds never share one)
    OUT/runs/<setting>/seed-<s>/   an ordinary run directory (run.json, report.md)
    OUT/repro.json, repro.md, repro.png   the table (trimpi.report.repro, called back by the CLI)

Locks: a whole repro holds OUT's lock; each seed's work holds that seed's lock (OUT/.seed-<s>.lock),
taken by whichever process runs the seed (this one, or a `--seed` child), so parallel seeds never
block one another and no seed runs twice at once. Everything is resumable: rerunning skips finished steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimpi.data.io import exclusive
from trimpi.errors import ConfigError
from trimpi.pipeline.recipe import DuplicateKeyError, Recipe, UniqueKeyLoader, _dataclass_section, parse_recipe


class SettingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any]
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)


class ReproConfig(BaseModel):
    """A whole `trimpi repro` config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "repro"
    model: str = "micro"
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    base: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, SettingSpec]
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    methods: list[str]
    eval: dict[str, Any] = Field(default_factory=lambda: {"protocols": ["accuracy"]})
    # Run-level keys shared by every setting, validated as the recipe's (trimpi.pipeline.recipe.Recipe).
    dtype: str | None = None
    accelerate: str | None = None
    engine: str | None = None
    judge: dict[str, Any] | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds: give at least one seed, without repeats")
        return seeds

    @field_validator("base")
    @classmethod
    def _base(cls, base: dict[str, Any]) -> dict[str, Any]:
        from trimpi.pipeline.base import BaseOptions

        return _dataclass_section(BaseOptions, base, {"datasets"}, "base")  # the settings are the datasets


SHARED = ("dtype", "accelerate", "engine", "judge")  # recipe keys a repro config gives every setting


def setting_recipe(cfg: ReproConfig, setting: str, seed: int) -> Recipe:
    """The `trimpi run` recipe of one setting and seed: its data, the shared base, stages, methods, eval."""
    spec = cfg.settings[setting]
    base = {**cfg.base, "datasets": [s.data for s in cfg.settings.values()]}
    values = {"name": f"{cfg.name}-{setting}", "seed": seed, "model": cfg.model, "data": spec.data, "base": base,
              "stages": {**cfg.stages, **spec.stages}, "methods": cfg.methods, "eval": {**cfg.eval, **spec.eval}}
    values.update({k: v for k in SHARED if (v := getattr(cfg, k)) is not None})
    return parse_recipe(values, f"settings.{setting}")


def load_repro(path: str | Path) -> ReproConfig:
    """Read and validate a repro config; every setting's recipe is checked too (one-line ConfigError)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        cfg = ReproConfig(**values) if isinstance(values, dict) else None
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}:{e.line}: {e.key}: key given twice (the first value would be lost)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {loc}: {err['msg'].removeprefix('Value error, ')}") from None
    if cfg is None:
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for setting in cfg.settings:
        setting_recipe(cfg, setting, cfg.seeds[0])
    return cfg


def run_dir(out: Path, setting: str, seed: int) -> Path:
    return out / "runs" / setting / f"seed-{seed}"


def seed_lock(out: Path, seed: int):
    """The lock of one seed's work under OUT (held by the process running that seed)."""
    return exclusive(out / f"seed-{seed}")


def run_base(cfg: ReproConfig, out: Path, seed: int, progress: bool = False,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Every dataset and the policy-following base of one seed (the steps up to the base's evaluation);
    returns the evaluation's done record."""
    from trimpi.pipeline.execute import Context
    from trimpi.pipeline.plan import make_plan
    from trimpi.pipeline.runner import run_step

    plan = make_plan(setting_recipe(cfg, next(iter(cfg.settings)), seed))
    needed = ancestors(plan.base_eval)
    ctx = Context(out=out, progress=progress)
    with seed_lock(out, seed):
        records = [run_step(step, ctx, echo) for step in plan.steps if step.id in needed]
    return records[-1]


def ancestors(step) -> set[str]:
    """Ids of `step` and every step it depends on."""
    ids = {step.id}
    for s in step.inputs:
        ids |= ancestors(s)
    return ids


def run_seed(cfg: ReproConfig, out: Path, seed: int, progress: bool = False,
             echo: Callable[[str], None] = print, after: Callable[[Path], Any] | None = None) -> None:
    """Every setting's run for one seed (the first builds the datasets and the base the others reuse);
    `after(run directory)` follows each run (the CLI writes its report)."""
    from trimpi.pipeline.execute import Context
    from trimpi.pipeline.runner import run_recipe

    with seed_lock(out, seed):
        for setting in cfg.settings:
            echo(f"seed {seed}: {setting}")
            run_recipe(setting_recipe(cfg, setting, seed), run_dir(out, setting, seed), store=out,
                       ctx=Context(out=out, progress=progress), echo=echo, after=after)


def run_repro(cfg: ReproConfig, config_path: Path, out: Path, jobs: int = 1, progress: bool = False,
              echo: Callable[[str], None] = print, after_run: Callable[[Path], Any] | None = None,
              after: Callable[[Path, float], Any] | None = None) -> None:
    """Every seed (in `jobs` parallel `--seed` processes, each with its share of the CPU threads), then
    `after(out, wall seconds)` (the CLI writes the table), all under OUT's lock."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        if jobs <= 1:
            for seed in cfg.seeds:
                run_seed(cfg, out, seed, progress, echo, after_run)
        else:
            todo = [seed for seed in cfg.seeds if not seed_finished(cfg, out, seed)]
            run_parallel(config_path, out, todo, jobs, echo)
        if after is not None:
            after(out, time.perf_counter() - start)


def seed_finished(cfg: ReproConfig, out: Path, seed: int) -> bool:
    """Whether running this seed under the current config would find nothing to do: every step of every
    setting's plan (datasets, base, methods, evaluations) is done."""
    from trimpi.pipeline.plan import make_plan
    from trimpi.pipeline.steps import status

    return all(status(step, out) == "done"
               for setting in cfg.settings for step in make_plan(setting_recipe(cfg, setting, seed)).steps)


def run_parallel(config_path: Path, out: Path, seeds: list[int], jobs: int, echo: Callable[[str], None]) -> None:
    """One `trimpi repro --seed S` child per seed, at most `jobs` at a time, the CPU threads shared among
    those that run together; logs in OUT/logs/."""
    threads = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(seeds))))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    (out / "logs").mkdir(exist_ok=True)
    pending, running, failed = list(seeds), {}, []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                seed = pending.pop(0)
                log = open(out / "logs" / f"seed-{seed}.log", "a")  # noqa: SIM115 - closed when the child ends
                cmd = [sys.executable, "-m", "trimpi", "repro", str(config_path), "--out", str(out), "--seed",
                       str(seed), "--no-progress"]
                running[seed] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
                echo(f"seed {seed}: started ({threads} threads; log {out / 'logs' / f'seed-{seed}.log'})")
            time.sleep(2)
            for seed, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[seed]
                    echo(f"seed {seed}: {'done' if proc.returncode == 0 else f'failed (exit {proc.returncode})'}")
                    if proc.returncode:
                        failed.append(seed)
    finally:
        for proc, log in running.values():
            proc.terminate()
            proc.wait()
            log.close()
    if failed:
        raise ConfigError(f"seeds {failed} failed; see {out / 'logs'} (rerun to resume)")
