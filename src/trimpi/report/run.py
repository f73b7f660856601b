"""The run report: report.md and a self-contained report.html (plots as embedded base64 PNGs).

Built from OUT/run.json (the plan) and each step's done.json, eval scores.json and RL
metrics.jsonl (in the step store run.json names), so `write_report(OUT)` can be rerun at any
time. It opens with a one-line verdict (the method that internalized the policy best, called better
than always giving the majority answer only when its 95 % interval clears that line), the base model
and whether it was warmed up, and what the dataset changed in the recipe. Sections: results per method
(every accuracy with its n and Wilson 95 % interval) with chance, majority and in-context as reference
lines, accuracy bar chart, per-answer confusion (choice answers), the policy-following base, RL reward
curves for ordinary vs policy-aware samples with each PolicyRollout run's halves compared at the start of RL
(report.rewards), token savings (prefill time flagged when it is timing
noise), per-step timings, seeds, versions and configs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import yaml

from trimpi.data.io import write_bytes_atomic
from trimpi.report.baselines import LABELS, majority_answers, reference_lines, test_size
from trimpi.report.confusion import method_confusions
from trimpi.report.html import to_html
from trimpi.report.plots import plot_accuracy, plot_rewards, plot_savings
from trimpi.report.rewards import START_STEPS, premise_markdown, reward_curves
from trimpi.report.stats import clears, fmt_interval
from trimpi.train.stage import ATTRIBUTE_ACCURACY, EXISTENCE_ACCURACY, VISION_PRETRAINING

PLAIN = {  # protocol -> what a user calls it
    "accuracy": "without the policy", "in_context": "with the policy in the prompt",
    "override": "updated policy in the prompt", "policy_in_context": "policy put back in the prompt",
    "referral": "cites the policy", "forgetting": "general questions (forgetting)", "perception": "perception",
    "efficiency": "prompt tokens saved",
}
NOISE_SPREAD = 30.0  # prefill savings of one dataset differing by more points between methods are timing noise


def load_run(out: Path) -> dict[str, Any]:
    """run.json plus each step's done.json (under "done", by step id) and RL metrics rows."""
    run = json.loads((out / "run.json").read_text())
    run["out"] = str(out)
    store = out / run.get("store", ".")
    done, rl = {}, {}
    for s in run["steps"]:
        d = store / "steps" / s["id"]
        if (d / "done.json").is_file():
            done[s["id"]] = json.loads((d / "done.json").read_text())
        if s["kind"] == "rl" and (d / "metrics.jsonl").is_file():
            rl[s["id"]] = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    run["done"], run["rl"] = done, rl
    return run


def headline(method: str, protocols: dict[str, Any]) -> tuple[str, float | None]:
    """The number a method is ranked by: in-context accuracy for the base model, else accuracy."""
    order = ["in_context"] if method == "in_context" else ["accuracy", "override", "policy_in_context"]
    for name in order + list(protocols):
        p = protocols.get(name) or {}
        if "score" in p and name != "efficiency":
            return name, p["score"]
    return "-", None


def results(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: label, headline protocol and score, all protocol scores, eval step id."""
    rows = []
    for method, info in run["methods"].items():
        protocols = (run["done"].get(info["eval"]) or {}).get("result", {}).get("protocols", {})
        name, score = headline(method, protocols)
        rows.append({"method": method, "label": info["label"], "protocol": name, "score": score,
                     "protocols": protocols, "eval": info["eval"], "chain": info["chain"]})
    return rows


def efficiency_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Methods with an efficiency result: tokens and prefill seconds with / without the policy."""
    out = []
    for r in rows:
        e = r["protocols"].get("efficiency")
        if e and "tokens_with_policy" in e:
            out.append({"label": r["label"], **{k: e.get(k) for k in (
                "tokens_with_policy", "tokens_without_policy", "token_savings_pct", "prefill_s_with_policy",
                "prefill_s_without_policy", "prefill_savings_pct", "device")}})
    return out


def fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.2f}" if pct else f"{value:.4g}"
    return str(value)


def table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def dataset_dir(run: dict[str, Any]) -> Path | None:
    data = ((run["done"].get(run.get("data")) or {}).get("result") or {}).get("dataset")
    return Path(data) if data else None


def verdict(rows: list[dict[str, Any]], lines: dict[str, float], always: dict[str | None, str],
            n_test: int | None) -> str:
    """One line: which method internalized the policy best, or that none beats always giving the majority answer."""
    trained = [r for r in rows if r["method"] != "in_context" and r["protocol"] == "accuracy" and r["score"] is not None]
    if not trained:
        return "No method has been evaluated without the policy yet."
    best = max(trained, key=lambda r: r["score"])
    n = _n(best, "accuracy")
    majority = lines.get("majority")
    answer = next(iter(always.values())) if len(always) == 1 else "each policy's most frequent answer"
    line = f"always answering {answer!r}" if len(always) == 1 else f"always giving {answer}"
    if majority is None:
        return (f"Best without the policy: {best['label']}, {fmt_interval(best['score'], n)} (no majority line: "
                "the answers are not a fixed set).")
    ref = f"{line} ({fmt_interval(majority, n_test)})"
    winners = [r for r in trained if clears(r["score"], _n(r, "accuracy") or 0, majority)]
    if not winners:
        return (f"**No method beats {line}** ({100 * majority:.1f} %): the best, {best['label']} at "
                f"{fmt_interval(best['score'], n)}, has a 95 % interval that reaches that line.")
    top = max(winners, key=lambda r: r["score"])
    return (f"**{top['label']} internalized the policy best**: {fmt_interval(top['score'], _n(top, 'accuracy'))} "
            f"without the policy, above {ref} with 95 % confidence.")


def base_sentence(run: dict[str, Any]) -> str:
    """The base model, whether it has pretrained weights, and whether it was warmed up."""
    recipe = run["recipe"]
    base = next((s for s in run["steps"] if s["kind"] == "base"), None)
    model = recipe["model"]
    weights = ""
    if model in ("micro", "micro-scratch") and base is not None:
        shipped = base["config"].get("shipped_sha256")
        weights = (" (shipped pretrained weights)" if shipped else
                   " (no pretrained weights: random initialisation, tokenizer trained on the data)")
    warmed = any(s["kind"] == "warmup" for s in run["steps"])
    return (f"Base model `{model}`{weights}; " + ("warmed up with the perception warm-up." if warmed else
                                                   "not warmed up (no perception warm-up ran)."))


def markdown(run: dict[str, Any], rows, eff, images: dict[str, str | None], lines: dict[str, float]) -> str:
    """The whole report as markdown; images are referenced as `![name](name.png)` placeholders."""
    recipe = run["recipe"]
    data = dataset_dir(run)
    n_test = test_size(data)
    always = majority_answers(data) if data and "majority" in lines else {}
    parts = [f"# trimpi report: {recipe['name']}", "", verdict(rows, lines, always, n_test), "",
             base_sentence(run) + f" Seed {recipe['seed']}, {len(rows)} methods. Accuracies are percentages on the "
             "test split with their 95 % (Wilson) interval and n; without the policy in the prompt unless the column "
             "says otherwise." + judge_sentence(recipe.get("judge"))]
    notes = run.get("notes") or []
    parts += [""] * bool(notes) + [f"- {note.removeprefix('note: ')}" for note in notes]
    parts += ["", "## Results", "", results_markdown(rows, lines, n_test)]
    if images.get("accuracy"):
        parts += ["", "![accuracy per method](accuracy.png)"]
    confusions = method_confusions(run, rows, data)
    if confusions:
        parts += ["", "## Answers given, per gold answer", ""]
        for label, table_md in confusions.items():
            parts += [f"{label} ({'with the policy in the prompt' if label == 'In-context' else 'without the policy'}):",
                      "", table_md, ""]
    parts += ["", "## Policy-following base", "", base_markdown(run)]
    parts += ["", "## RL reward: ordinary vs policy-aware samples", "", *rewards_markdown(run, images)]
    parts += ["", "## Efficiency: prompt tokens and prefill time", ""]
    if eff:
        noisy = prefill_noise(eff)
        parts.append(efficiency_headline(eff))
        parts += ["", table(["method", "tokens with the policy", "tokens without", "tokens saved %",
                             "prefill s with", "prefill s without", "prefill time saved %", "device"],
                            [[e["label"]] + [fmt(e[k]) for k in ("tokens_with_policy", "tokens_without_policy",
                                                                 "token_savings_pct", "prefill_s_with_policy",
                                                                 "prefill_s_without_policy")]
                             + [fmt(e["prefill_savings_pct"]) + (" (noise)" if noisy else ""), fmt(e["device"])]
                             for e in eff])]
        if noisy:
            parts += ["", f"Prefill times are timing noise here ({noisy}): read the token savings, not the "
                          "prefill column."]
        if images.get("savings"):
            parts += ["", "![savings](savings.png)"]
    else:
        parts.append("Not measured (add `efficiency` to eval.protocols).")
    parts += ["", "## Steps and timings", "",
              table(["step", "methods", "seconds", "result"],
                    [[s["id"], ", ".join(s["methods"]), fmt((run["done"].get(s["id"]) or {}).get("seconds")),
                      step_summary((run["done"].get(s["id"]) or {}).get("result") or {})] for s in run["steps"]]),
              "", "## Versions", "", table(["package", "version"], [[k, v] for k, v in versions().items()]),
              "", "## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```",
              "", "## Step configs", "", "```json",
              json.dumps({s["id"]: {"config": s["config"], "inputs": s["inputs"]} for s in run["steps"]},
                         indent=1, sort_keys=True), "```", ""]
    return "\n".join(parts)


def rewards_markdown(run: dict[str, Any], images: dict[str, str | None]) -> list[str]:
    """The reward plot and, for each PolicyRollout run, its halves' mean reward at the start of RL."""
    if not images.get("rewards"):
        return ["No RL step in this run."]
    lines = premise_markdown(reward_curves(run))
    if not lines:
        return ["![reward curves](rewards.png)", "", "No RL step used PolicyRollout: no policy-aware samples."]
    intro = f"PolicyRollout's premise (the start of RL: the first {START_STEPS} logged steps; shaded in the plot):"
    return ["![reward curves](rewards.png)", "", intro, "", *lines]


def judge_sentence(judge: dict[str, Any] | None) -> str:
    """The report's sentence naming the recipe's LLM judge (its prompts are in each evaluation's scores.json), or ''."""
    if not judge:
        return ""
    url = judge.get("url")
    who = f"`{judge.get('model') or 'default'}` at {url}" if url else f"local model `{judge['model']}`"
    return f" Judge of referral and judged answers: {who} (its prompts are recorded in each evaluation's scores.json)."


def _n(row: dict[str, Any], protocol: str) -> int | None:
    return (row["protocols"].get(protocol) or {}).get("n")


ANSWER_SCORED = ("accuracy", "in_context", "override", "policy_in_context", "forgetting")


def cell(row: dict[str, Any], protocol: str) -> str:
    """A protocol's score (%): with its interval and n when it is an accuracy, else the number alone."""
    p = row["protocols"].get(protocol) or {}
    if "score" not in p:
        return "-"
    return fmt_interval(p["score"], p.get("n")) if protocol in ANSWER_SCORED else fmt(p["score"], True)


def results_markdown(rows: list[dict[str, Any]], lines: dict[str, float] | None = None,
                     n_test: int | None = None) -> str:
    """The results table: one row per method, its headline accuracy and every protocol (%, with 95 % interval
    and n for accuracies), then the reference lines (chance, majority; in-context is a method row)."""
    protocols = sorted({p for r in rows for p in r["protocols"]} - {"efficiency"})
    body = [[r["label"], PLAIN.get(r["protocol"], r["protocol"]), cell(r, r["protocol"]) if r["score"] is not None
             else "-"] + [cell(r, p) for p in protocols] for r in rows]
    body += [[f"*{LABELS[k]}*", "reference", fmt_interval(v, n_test)] + ["-"] * len(protocols)
             for k, v in (lines or {}).items() if k != "in_context"]
    return table(["method", "ranked by", "accuracy % [95 % interval], n"] + [PLAIN.get(p, p) for p in protocols],
                 body)


def prefill_noise(eff: list[dict[str, Any]]) -> str | None:
    """Why the measured prefill savings are timing noise, or None when they look like a measurement: dropping
    tokens cannot make a prefill slower, and one dataset's methods share their prompts."""
    saved = [e["prefill_savings_pct"] for e in eff if e.get("prefill_savings_pct") is not None]
    if not saved:
        return None
    reasons = []
    if min(saved) < 0:
        reasons.append(f"a negative saving, {min(saved):.1f} %, although every prompt got shorter")
    if max(saved) - min(saved) > NOISE_SPREAD:
        reasons.append(f"methods measuring the same prompts differ by {max(saved) - min(saved):.0f} points")
    return "; ".join(reasons) or None


def efficiency_headline(eff: list[dict[str, Any]]) -> str:
    """Token savings, the number to read: the same prompts for every method."""
    e = eff[0]
    return (f"**Without the policy a request costs {fmt(e['tokens_without_policy'])} prompt tokens instead of "
            f"{fmt(e['tokens_with_policy'])}: {e['token_savings_pct']:.1f} % fewer.**")


def base_markdown(run: dict[str, Any]) -> str:
    """The policy-following base: its training examples and in-context accuracy on each of its settings."""
    base = run.get("base")
    if not base:
        return "None: the methods start from the recipe's model."
    trained = (run["done"].get(base["model"]) or {}).get("result") or {}
    settings = ((run["done"].get(base["eval"]) or {}).get("result") or {}).get("settings") or {}
    parts = [f"Model step `{base['model']}` (chain {' → '.join(base['chain'])}): "
             + ", ".join(f"{k.replace('_', ' ')} {trained[k]}" for k in ("examples", "policies", "dropped_records",
                                                                       "excluded_policies") if k in trained), ""]
    if settings:
        parts.append(table(["base setting", "in-context accuracy (%)"],
                           [[name, fmt((p.get("in_context") or {}).get("score"), True)]
                            for name, p in settings.items()]))
    else:
        parts.append("Not evaluated yet.")
    return "\n".join(parts)


def step_summary(result: dict[str, Any]) -> str:
    """A few numbers of a finished step: optimizer steps, final losses and rewards, warm-up accuracies
    (captions, yes/no answers, and the vision probe's policy accuracy: the perception ceiling)."""
    keys = ("global_step", "train_loss", "steps", "reward", "processes", "distributed")
    parts = [f"{k}={fmt(result[k])}" for k in keys if k in result]
    attrs = (result.get(ATTRIBUTE_ACCURACY) or {}).get("attributes")
    if attrs is not None:
        parts.append(f"attribute_accuracy={fmt(attrs)}")
    exist = (result.get(EXISTENCE_ACCURACY) or {}).get("balanced_accuracy")
    if exist is not None:
        parts.append(f"existence_balanced_accuracy={fmt(exist)}")
    for name, protocols in (result.get("settings") or {}).items():  # the base's in-context accuracy per setting
        parts.append(f"in_context[{name}]={fmt((protocols.get('in_context') or {}).get('score'))}")
    ceiling = (result.get(VISION_PRETRAINING) or {}).get("probe_policy_accuracy")
    if ceiling is not None:
        parts.append(f"probe_policy_accuracy={fmt(ceiling)}")
    return " ".join(parts) or "-"


def versions() -> dict[str, str]:
    """trimpi, Python, torch, transformers (as eval records them) plus the other training libraries."""
    from importlib.metadata import PackageNotFoundError, version

    from trimpi.eval.files import versions as core

    out = dict(core())
    for pkg in ("peft", "accelerate", "datasets", "pydantic", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_report(out: str | Path) -> dict[str, Path]:
    """Write OUT/report.md (with its PNGs) and the self-contained OUT/report.html; return their paths."""
    out = Path(out)
    run = load_run(out)
    rows = results(run)
    eff = efficiency_rows(rows)
    lines = reference_lines(run)
    images = {"accuracy": plot_accuracy(rows, lines), "rewards": plot_rewards(reward_curves(run), START_STEPS),
              "savings": plot_savings(eff)}
    md = markdown(run, rows, eff, images, lines)
    for name, data in images.items():
        if data:
            write_bytes_atomic(out / f"{name}.png", base64.b64decode(data))
    write_bytes_atomic(out / "report.md", md.encode())
    write_bytes_atomic(out / "report.html", to_html(md, images).encode())
    return {"md": out / "report.md", "html": out / "report.html"}


def report_run(out: str | Path, echo=print) -> dict[str, Path]:
    """Write the report of run directory `out`; print its results table and where the report is."""
    paths = write_report(out)
    run = load_run(Path(out))
    rows, lines = results(run), reference_lines(run)
    data = dataset_dir(run)
    echo("verdict: " + verdict(rows, lines, majority_answers(data) if data else {}, test_size(data)).replace("**", ""))
    echo(results_markdown(rows, lines, test_size(data)))
    echo(f"report: {paths['md']}\n        {paths['html']}")
    return paths
