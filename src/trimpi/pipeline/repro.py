"""`trimpi repro`: the paper's Table-2 comparison over several settings and seeds.

    name: micro-repro
    model: micro
    seeds: [0, 1]
    base: {policies: 24, scenes: 1000, ...}      # policy-following base (trimpi.train.policy_following)
    settings:
      T-d2: {data: {clevr: {depths: [2], variant: T, ...}}}
      gta:  {data: {gta: {}}, eval: {protocols: [accuracy, in_context, override]}}
    stages: {...}       # shared by every setting; a setting's own `stages` entries replace these
    methods: [in_context, cot_sft, ...]
    eval: {protocols: [accuracy, override, referral], ...}

For each seed: build every setting's dataset, then the policy-following base (excluding every
ClevrPolicy policy of those datasets), then one `trimpi run` per setting from that base:

    OUT/bases/seed-<s>-<hash>/     the base (named by its training options; eval options only re-measure it)
    OUT/runs/<setting>/seed-<s>/   an ordinary run directory (run.json, steps/, report.md)
    OUT/repro.json, repro.md, repro.png   mean and spread over seeds, per setting and method

Everything is resumable: rerunning skips finished bases and steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimpi.data.io import write_bytes_atomic, write_json
from trimpi.errors import ConfigError
from trimpi.pipeline.recipe import METHODS, Recipe, parse_recipe

BASE_RESERVED = {"out", "model", "seed", "exclude", "texts_from", "progress"}
SCORED = ("accuracy", "in_context", "override", "referral")


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

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds: give at least one seed, without repeats")
        return seeds

    @field_validator("base")
    @classmethod
    def _base(cls, base: dict[str, Any]) -> dict[str, Any]:
        import dataclasses

        from trimpi.train.policy_following import BaseOptions

        known = {f.name for f in dataclasses.fields(BaseOptions)} - BASE_RESERVED
        for key in base:
            if key not in known:
                raise ValueError(f"base.{key}: unknown key (expected one of {', '.join(sorted(known))})")
        return base


def setting_recipe(cfg: ReproConfig, setting: str, seed: int, model: str) -> Recipe:
    """The `trimpi run` recipe of one setting and seed, starting from `model`."""
    spec = cfg.settings[setting]
    stages = {**cfg.stages, **spec.stages}
    values = {"name": f"{cfg.name}-{setting}", "seed": seed, "model": model, "data": spec.data, "stages": stages,
              "methods": cfg.methods, "eval": {**cfg.eval, **spec.eval}}
    return parse_recipe(values, f"settings.{setting}")


def load_repro(path: str | Path) -> ReproConfig:
    """Read and validate a repro config; every setting's recipe is checked too (one-line ConfigError)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text())
        cfg = ReproConfig(**values) if isinstance(values, dict) else None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {loc}: {err['msg'].removeprefix('Value error, ')}") from None
    if cfg is None:
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for setting in cfg.settings:
        setting_recipe(cfg, setting, cfg.seeds[0], cfg.model)
    return cfg


def run_dir(out: Path, setting: str, seed: int) -> Path:
    return out / "runs" / setting / f"seed-{seed}"


def data_step(cfg: ReproConfig, setting: str, seed: int):
    """The setting's dataset step (the first of its plan; it does not depend on the model)."""
    from trimpi.pipeline.plan import make_plan

    return make_plan(setting_recipe(cfg, setting, seed, cfg.model)).steps[0]


def build_datasets(cfg: ReproConfig, out: Path, seed: int, echo: Callable[[str], None]) -> dict[str, Path]:
    """Run each setting's data step (inside its run directory); returns setting → dataset directory."""
    from trimpi.pipeline.execute import Context, dataset_path
    from trimpi.pipeline.runner import run_step

    paths = {}
    for setting in cfg.settings:
        target = run_dir(out, setting, seed)
        data = data_step(cfg, setting, seed)
        run_step(data, Context(out=target), echo)
        paths[setting] = dataset_path(data, target)
    return paths


def base_options(cfg: ReproConfig, out: Path, seed: int, datasets: dict[str, Path], progress: bool):
    """The base's options; its directory is named by a hash of its training options and excluded policies."""
    from trimpi.train.policy_following import EVAL_OPTIONS, BaseOptions, dataset_tree_keys

    clevr = [str(p) for s, p in datasets.items() if cfg.settings[s].data.get("clevr") is not None]
    others = [str(p) for s, p in datasets.items() if cfg.settings[s].data.get("clevr") is None]
    keys = sorted(set().union(*(dataset_tree_keys(p) for p in clevr))) if clevr else []
    trained = {k: v for k, v in cfg.base.items() if k not in EVAL_OPTIONS}
    blob = json.dumps({"model": cfg.model, "seed": seed, "base": trained, "exclude": keys, "texts": others},
                      sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return BaseOptions(out=str(out / "bases" / f"seed-{seed}-{digest}"), model=cfg.model, seed=seed,
                       exclude=clevr, texts_from=others, progress=progress, **cfg.base)


def seed_base(cfg: ReproConfig, out: Path, seed: int, progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """Every setting's dataset, then the policy-following base that excludes their policies (base.json)."""
    from trimpi.train.policy_following import build_base

    datasets = build_datasets(cfg, out, seed, echo)
    echo(f"seed {seed}: policy-following base")
    return build_base(base_options(cfg, out, seed, datasets, progress))


def run_seed(cfg: ReproConfig, out: Path, seed: int, progress: bool = False,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Datasets, base and every setting's run for one seed; returns the base record."""
    from trimpi.pipeline.execute import Context
    from trimpi.pipeline.runner import run_recipe

    base = seed_base(cfg, out, seed, progress, echo)
    for setting in cfg.settings:
        target = run_dir(out, setting, seed)
        echo(f"seed {seed}: {setting}")
        run_recipe(setting_recipe(cfg, setting, seed, base["model"]), target,
                   ctx=Context(out=target, progress=progress), echo=echo)
    return base


def run_repro(cfg: ReproConfig, config_path: Path, out: Path, jobs: int = 1, progress: bool = False,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Every seed (in `jobs` parallel processes, each with its share of the CPU threads), then the table."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if jobs <= 1:
        for seed in cfg.seeds:
            run_seed(cfg, out, seed, progress, echo)
    else:
        todo = [seed for seed in cfg.seeds if not seed_finished(cfg, out, seed)]
        run_parallel(config_path, out, todo, jobs, echo)
    table = aggregate(cfg, out)
    table["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_outputs(table, out)
    echo(table_markdown(table))
    echo(f"table: {out / 'repro.md'}")
    return table


def seed_finished(cfg: ReproConfig, out: Path, seed: int) -> bool:
    """Whether running this seed under the current config would find nothing to do: every dataset, the
    base (measured with the current eval options) and every step of every setting's plan are done."""
    from trimpi.pipeline.execute import dataset_path
    from trimpi.pipeline.plan import make_plan
    from trimpi.pipeline.steps import status
    from trimpi.train.policy_following import base_ready, model_dir

    datasets = {}
    for setting in cfg.settings:
        data = data_step(cfg, setting, seed)
        if status(data, run_dir(out, setting, seed)) != "done":
            return False
        datasets[setting] = dataset_path(data, run_dir(out, setting, seed))
    opts = base_options(cfg, out, seed, datasets, progress=False)
    if not base_ready(opts):
        return False
    model = str(model_dir(opts))
    return all(status(step, run_dir(out, setting, seed)) == "done"
               for setting in cfg.settings for step in make_plan(setting_recipe(cfg, setting, seed, model)).steps)


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


def majority_accuracy(data: Path) -> float | None:
    """Accuracy of answering each test record with its policy's most frequent training answer
    (ClevrPolicy); None for datasets without per-policy cases."""
    from trimpi.data.schema import load_records

    if not (data / "train.jsonl").is_file() or not (data / "test.jsonl").is_file():
        return None
    counts: dict[str, Counter] = {}
    for r in load_records(data / "train.jsonl"):
        counts.setdefault(r.policy, Counter())[r.answer] += 1
    test = load_records(data / "test.jsonl")
    if not test or not all(r.answer.startswith("Case") for r in test):
        return None
    hits = sum(counts.get(r.policy, Counter({"": 1})).most_common(1)[0][0] == r.answer for r in test)
    return hits / len(test)


def method_scores(protocols: dict[str, Any]) -> dict[str, float]:
    """The compared numbers of one evaluation: accuracy (or in-context accuracy), override, referral."""
    out = {}
    for name in SCORED:
        p = protocols.get(name) or {}
        if p.get("score") is not None:
            out["accuracy" if name == "in_context" else name] = p["score"]
    return out


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when there are no values; 0 for one value)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(cfg: ReproConfig, out: Path) -> dict[str, Any]:
    """Per setting and method: each seed's scores and their mean and std; plus majority baselines."""
    from trimpi.pipeline.execute import dataset_path
    from trimpi.report import load_run, results

    table: dict[str, Any] = {"name": cfg.name, "model": cfg.model, "seeds": cfg.seeds, "settings": {}, "bases": {}}
    for path in sorted((out / "bases").glob("seed-*/base.json")):
        table["bases"][path.parent.name] = json.loads(path.read_text())
    for setting in cfg.settings:
        per_seed: dict[str, dict[str, list[float]]] = {m: {} for m in cfg.methods}
        majority, seconds, finished = [], [], []
        for seed in cfg.seeds:
            target = run_dir(out, setting, seed)
            if not (target / "run.json").is_file():
                continue
            run = load_run(target)
            if all(info["eval"] in run["done"] for info in run["methods"].values()):
                finished.append(seed)
            seconds.append(sum(d.get("seconds", 0) for d in run["done"].values()))
            data = data_step(cfg, setting, seed)
            m = majority_accuracy(dataset_path(data, target))
            if m is not None:
                majority.append(m)
            for row in results(run):
                for key, value in method_scores(row["protocols"]).items():
                    per_seed[row["method"]].setdefault(key, []).append(value)
        methods = {}
        for method, scores in per_seed.items():
            methods[method] = {"label": METHODS[method][0], **{
                key: {"values": values, **dict(zip(("mean", "std"), mean_std(values)))}
                for key, values in scores.items()}}
        table["settings"][setting] = {"methods": methods, "majority": dict(zip(("mean", "std"), mean_std(majority))),
                                      "seeds": finished, "step_seconds": round(sum(seconds), 1)}
    return table


def cell(entry: dict[str, Any] | None) -> str:
    """`mean ± std` in %; the mean alone for a single seed; a dash for none."""
    if not entry or entry.get("mean") is None:
        return "–"
    if len(entry.get("values", [])) < 2:
        return f"{100 * entry['mean']:.1f}"
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def table_markdown(table: dict[str, Any]) -> str:
    """Accuracy (mean ± std over seeds, %) per method and setting, then override and referral."""
    settings = list(table["settings"])
    methods = list(next(iter(table["settings"].values()))["methods"]) if settings else []
    finished = {s: table["settings"][s].get("seeds", []) for s in settings}
    over = (f"seeds {', '.join(map(str, table['seeds']))}" if all(v == table["seeds"] for v in finished.values())
            else "finished seeds: " + "; ".join(f"{s} {v or 'none'}" for s, v in finished.items()))
    lines = []
    for key, title in (("accuracy", "accuracy without the policy (in-context: with it)"),
                       ("override", "policy override (new policy in context)"),
                       ("referral", "policy referral (exact)")):
        rows = [[table["settings"][s]["methods"][m]["label"] for s in settings[:1]]
                + [cell(table["settings"][s]["methods"][m].get(key)) for s in settings] for m in methods]
        rows = [r for r in rows if any(c != "–" for c in r[1:])]
        if not rows:
            continue
        if key == "accuracy":
            rows.append(["always the policy's most frequent case"]
                        + [cell(table["settings"][s]["majority"]) for s in settings])
        lines += [f"**{title}**, % (mean ± std over {over})", "",
                  "| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(lines)


def plot_table(table: dict[str, Any]) -> bytes | None:
    """Grouped bars: accuracy per setting and method, with the std over seeds as error bars (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(table["settings"])
    if not settings:
        return None
    methods = list(table["settings"][settings[0]]["methods"])
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(settings)), 3.6))
    for k, method in enumerate(methods):
        entries = [table["settings"][s]["methods"][method].get("accuracy") or {} for s in settings]
        means = [100 * (e.get("mean") or 0) for e in entries]
        stds = [100 * (e.get("std") or 0) for e in entries]
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(settings))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=table["settings"][settings[0]]["methods"][method]["label"])
    for i, s in enumerate(settings):
        m = table["settings"][s]["majority"].get("mean")
        if m is not None:
            ax.hlines(100 * m, i - 0.4, i + 0.4, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    ax.set_title("dashed: always the policy's most frequent case", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(table: dict[str, Any], out: Path) -> None:
    write_json(out / "repro.json", table)
    write_bytes_atomic(out / "repro.md", (f"# {table['name']}: {table['model']}\n\n" + table_markdown(table)).encode())
    png = plot_table(table)
    if png is not None:
        write_bytes_atomic(out / "repro.png", png)
