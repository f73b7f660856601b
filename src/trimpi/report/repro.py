"""The repro table: per setting and method, each seed's scores and their mean ± std, with chance and
the per-policy majority as reference rows; repro.json, repro.md and repro.png.

Built from the finished run directories of `trimpi repro` (trimpi.pipeline.repro), so it can be
rebuilt at any time (`trimpi repro --table-only`).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from trimpi.data.io import write_bytes_atomic, write_json
from trimpi.pipeline.recipe import METHODS
from trimpi.pipeline.repro import ReproConfig, run_dir, setting_recipe
from trimpi.report.baselines import LABELS, dataset_lines
from trimpi.report.plots import plot_repro
from trimpi.report.run import load_run, results

SCORED = ("accuracy", "in_context", "override", "referral")
REFERENCES = ("chance", "majority")


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
    """Per setting and method: each seed's scores and their mean and std; chance and majority; and each
    seed's policy-following base (its in-context accuracy on the base's own settings)."""
    table: dict[str, Any] = {"name": cfg.name, "model": cfg.model, "seeds": cfg.seeds, "settings": {}, "bases": {}}
    for setting in cfg.settings:
        per_seed: dict[str, dict[str, list[float]]] = {m: {} for m in cfg.methods}
        references: dict[str, list[float]] = {k: [] for k in REFERENCES}
        seconds, finished = [], []
        for seed in cfg.seeds:
            target = run_dir(out, setting, seed)
            if not (target / "run.json").is_file():
                continue
            run = load_run(target)
            if all(info["eval"] in run["done"] for info in run["methods"].values()):
                finished.append(seed)
            seconds.append(sum(d.get("seconds", 0) for d in run["done"].values()))
            for key, value in dataset_lines(setting_dataset(cfg, out, setting, seed)).items():
                references[key].append(value)
            for row in results(run):
                for key, value in method_scores(row["protocols"]).items():
                    per_seed[row["method"]].setdefault(key, []).append(value)
            base = base_record(run)
            if base:
                table["bases"].setdefault(f"seed-{seed}", base)
        methods = {}
        for method, scores in per_seed.items():
            methods[method] = {"label": METHODS[method][0], **{
                key: {"values": values, **dict(zip(("mean", "std"), mean_std(values)))}
                for key, values in scores.items()}}
        table["settings"][setting] = {
            "methods": methods, "seeds": finished, "step_seconds": round(sum(seconds), 1),
            **{k: {"values": v, **dict(zip(("mean", "std"), mean_std(v)))} for k, v in references.items()}}
    return table


def setting_dataset(cfg: ReproConfig, out: Path, setting: str, seed: int) -> Path:
    """The dataset directory of a setting's data step, in the repro's step store."""
    from trimpi.pipeline.execute import dataset_path
    from trimpi.pipeline.plan import make_plan

    return dataset_path(make_plan(setting_recipe(cfg, setting, seed)).data, out)


def base_record(run: dict[str, Any]) -> dict[str, Any] | None:
    """A run's policy-following base: its model step, training counts and in-context accuracy per setting."""
    base = run.get("base")
    if not base or base["eval"] not in run["done"]:
        return None
    trained = (run["done"].get(base["model"]) or {}).get("result") or {}
    settings = run["done"][base["eval"]]["result"].get("settings") or {}
    return {"model": base["model"], **{k: trained[k] for k in ("examples", "policies", "dropped_records",
                                                                "excluded_policies") if k in trained},
            "in_context_accuracy": {n: (p.get("in_context") or {}).get("score") for n, p in settings.items()}}


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
            rows += [[LABELS[ref]] + [cell(table["settings"][s].get(ref)) for s in settings] for ref in REFERENCES]
        lines += [f"**{title}**, % (mean ± std over {over})", "",
                  "| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(lines)


def write_outputs(table: dict[str, Any], out: Path) -> None:
    """repro.json, repro.md and repro.png under `out`, each written atomically."""
    write_json(out / "repro.json", table)
    write_bytes_atomic(out / "repro.md", (f"# {table['name']}: {table['model']}\n\n" + table_markdown(table)).encode())
    png = plot_repro(table)
    if png is not None:
        write_bytes_atomic(out / "repro.png", base64.b64decode(png))
