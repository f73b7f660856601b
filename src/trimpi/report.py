"""The run report: report.md and a self-contained report.html (plots as embedded base64 PNGs).

Built from OUT/run.json (the plan) and each step's done.json, eval scores.json and RL
metrics.jsonl, so `write_report(OUT)` can be rerun at any time. Sections: results per method
(headline accuracy and every protocol), accuracy bar chart, RL reward curves for ordinary vs
policy-aware samples, token and prefill savings, per-step timings, seeds, versions and configs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import yaml

from trimpi.data.io import write_bytes_atomic

CURVES = (("reward/plain", "ordinary"), ("reward/policy", "policy-aware"))


def load_run(out: Path) -> dict[str, Any]:
    """run.json plus each step's done.json (under "done", by step id) and RL metrics rows."""
    run = json.loads((out / "run.json").read_text())
    done, rl = {}, {}
    for s in run["steps"]:
        d = out / "steps" / s["id"]
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


def reward_curves(run: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """For each RL step (named by the methods using it): (step, value) series per curve name."""
    labels = {}
    for info in run["methods"].values():
        for sid in info["chain"]:
            labels.setdefault(sid, []).append(info["label"])
    curves = {}
    for sid, rows in run["rl"].items():
        name = " / ".join(labels.get(sid, [sid]))
        curves[name] = {label: [(r["step"], r[key]) for r in rows if key in r and r.get("num_samples", 1)]
                        for key, label in CURVES}
    return curves


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plot_accuracy(rows: list[dict[str, Any]]) -> str | None:
    """Bar chart of headline accuracy per method (base64 PNG)."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(scored)), 3.2))
    ax.bar([r["label"] for r in scored], [100 * r["score"] for r in scored], color="#4c72b0")
    ax.set_ylabel("headline accuracy (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    return _fig_png(fig)


def plot_rewards(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> str | None:
    """Mean reward per RL step, ordinary vs policy-aware samples, one panel per RL run (base64 PNG)."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, series) in zip(axes[0], curves.items(), strict=True):
        for label, points in series.items():
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("RL step")
        ax.set_ylabel("mean reward")
        ax.legend(fontsize=8)
    return _fig_png(fig)


def plot_savings(eff: list[dict[str, Any]]) -> str | None:
    """Token and prefill savings (%) from dropping the policy (base64 PNG)."""
    if not eff:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(eff)), 3))
    xs = range(len(eff))
    ax.bar([x - 0.2 for x in xs], [e["token_savings_pct"] or 0 for e in eff], width=0.4, label="prompt tokens")
    ax.bar([x + 0.2 for x in xs], [e["prefill_savings_pct"] or 0 for e in eff], width=0.4, label="prefill time")
    ax.set_xticks(list(xs), [e["label"] for e in eff], rotation=30, fontsize=8)
    ax.set_ylabel("saved without policy (%)")
    ax.legend(fontsize=8)
    return _fig_png(fig)


def fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.2f}" if pct else f"{value:.4g}"
    return str(value)


def table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def markdown(run: dict[str, Any], rows, eff, images: dict[str, str | None]) -> str:
    """The whole report as markdown; images are referenced as `![name](name.png)` placeholders."""
    recipe = run["recipe"]
    parts = [f"# trimpi report: {recipe['name']}", "",
             f"Model `{recipe['model']}`, seed {recipe['seed']}, {len(rows)} methods. "
             "Scores are percentages on the test split, without the policy in the prompt "
             "(in-context: with it).", "", "## Results", "",
             results_markdown(rows)]
    if images.get("accuracy"):
        parts += ["", "![accuracy per method](accuracy.png)"]
    parts += ["", "## RL reward: ordinary vs policy-aware samples", ""]
    parts += ["![reward curves](rewards.png)"] if images.get("rewards") else ["No RL step in this run."]
    parts += ["", "## Efficiency: prompt tokens and prefill time", ""]
    if eff:
        parts.append(table(["method", "tokens with", "tokens without", "token savings %", "prefill s with",
                            "prefill s without", "prefill savings %", "device"],
                           [[e["label"]] + [fmt(e[k]) for k in ("tokens_with_policy", "tokens_without_policy",
                                                                "token_savings_pct", "prefill_s_with_policy",
                                                                "prefill_s_without_policy", "prefill_savings_pct",
                                                                "device")] for e in eff]))
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


def results_markdown(rows: list[dict[str, Any]]) -> str:
    """The results table: one row per method, headline score and every protocol's score (%)."""
    protocols = sorted({p for r in rows for p in r["protocols"]} - {"efficiency"})
    return table(["method", "headline", "score (%)"] + protocols,
                 [[r["label"], r["protocol"], fmt(r["score"], True)]
                  + [fmt((r["protocols"].get(p) or {}).get("score"), True) for p in protocols] for r in rows])


def step_summary(result: dict[str, Any]) -> str:
    """A few numbers of a finished step: optimizer steps, final losses and rewards, warm-up accuracies
    (captions, yes/no answers, and the vision probe's policy accuracy: the perception ceiling)."""
    parts = [f"{k}={fmt(result[k])}" for k in ("global_step", "train_loss", "steps", "reward") if k in result]
    attrs = (result.get("attribute_accuracy") or {}).get("attributes")
    if attrs is not None:
        parts.append(f"attribute_accuracy={fmt(attrs)}")
    exist = (result.get("existence_accuracy") or {}).get("balanced_accuracy")
    if exist is not None:
        parts.append(f"existence_balanced_accuracy={fmt(exist)}")
    ceiling = (result.get("vision_pretraining") or {}).get("probe_policy_accuracy")
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


def to_html(md: str, images: dict[str, str | None]) -> str:
    """A minimal markdown → HTML rendering (headings, tables, code, images inlined as data URIs)."""
    body, in_code, in_table = [], False, False
    for line in md.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            tag = "td" if in_table else "th"
            body.append(("" if in_table else "<table>") + "<tr>" + "".join(
                f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1:line.index(")")].removesuffix(".png")
            if images.get(name):
                body.append(f'<img alt="{name}" src="data:image/png;base64,{images[name]}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}pre{background:#f6f6f6;padding:8px;"
             "overflow-x:auto;font-size:12px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>trimpi report</title><style>{style}</style>" \
           f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def write_report(out: str | Path) -> dict[str, Path]:
    """Write OUT/report.md (with its PNGs) and the self-contained OUT/report.html; return their paths."""
    out = Path(out)
    run = load_run(out)
    rows = results(run)
    eff = efficiency_rows(rows)
    images = {"accuracy": plot_accuracy(rows), "rewards": plot_rewards(reward_curves(run)),
              "savings": plot_savings(eff)}
    md = markdown(run, rows, eff, images)
    for name, data in images.items():
        if data:
            write_bytes_atomic(out / f"{name}.png", base64.b64decode(data))
    write_bytes_atomic(out / "report.md", md.encode())
    write_bytes_atomic(out / "report.html", to_html(md, images).encode())
    return {"md": out / "report.md", "html": out / "report.html"}
