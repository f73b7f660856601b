"""A report a user can trust at a glance (issue 28): every accuracy with its n and 95 % interval, a verdict
that calls a method better than the majority only when its interval clears it, the base model and its
warm-up, reference lines visible at 0, prefill savings flagged as noise, Markdown rendered in HTML, plain
column names and a per-answer confusion table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trimpi.report import load_run, results, write_report
from trimpi.report.html import to_html
from trimpi.report.plots import accuracy_figure
from trimpi.report.run import base_sentence, prefill_noise, verdict
from trimpi.report.stats import clears, fmt_interval, wilson

OPTIONS = ["SHIP", "HOLD", "INSPECT", "REJECT"]


def test_wilson_interval_known_values():
    lo, hi = wilson(7, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.3968, 0.8922)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
    assert fmt_interval(0.5, 8) == "50.0 [21.5–78.5], n=8"
    assert not clears(0.75, 20, 0.6) and clears(0.75, 400, 0.6)


def row(method, label, score, n):
    return {"method": method, "label": label, "protocol": "accuracy", "score": score,
            "protocols": {"accuracy": {"score": score, "n": n}}}


def test_the_verdict_names_no_winner_when_every_interval_reaches_the_majority():
    rows = [row("direct_sft", "Direct SFT", 0.72, 56), row("trimpi_grpo_answers", "TriMPI", 0.70, 56)]
    text = verdict(rows, {"majority": 0.70, "chance": 0.25}, {"Dock-Inspect": "HOLD"}, 56)
    assert text.startswith("**No method beats always answering 'HOLD'** (70.0 %)")
    assert "Direct SFT at 72.0 [" in text and "n=56" in text


def test_the_verdict_names_the_best_method_whose_interval_clears_the_majority():
    rows = [row("direct_sft", "Direct SFT", 0.95, 200), row("cot_sft", "CoT SFT", 0.80, 200)]
    text = verdict(rows, {"majority": 0.70}, {"P": "HOLD"}, 200)
    assert text.startswith("**Direct SFT internalized the policy best**: 95.0 [")
    assert "above always answering 'HOLD' (70.0 [" in text


def test_the_base_sentence_says_random_weights_and_no_warm_up():
    run = {"recipe": {"model": "micro"}, "steps": [{"kind": "base", "config": {"shipped_sha256": None}}]}
    text = base_sentence(run)
    assert "`micro` (no pretrained weights: random initialisation" in text and "not warmed up" in text
    run["steps"].append({"kind": "warmup", "config": {}})
    assert "warmed up with the perception warm-up" in base_sentence(run)


def test_reference_lines_at_zero_stay_visible():
    fig = accuracy_figure([row("direct_sft", "Direct SFT", 0.5, 56)], {"in_context": 0.0, "majority": 0.7})
    ax = fig.axes[0]
    assert ax.get_ylim()[0] < 0  # a line at 0 % is drawn above the x-axis, not under it
    assert all(line.get_zorder() > ax.patches[0].get_zorder() for line in ax.lines if line.get_ydata()[0] == 0)
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.endswith(": 0.0 %") for label in labels)


def test_prefill_savings_are_flagged_as_noise():
    eff = [{"prefill_savings_pct": -28.9}, {"prefill_savings_pct": -134.2}]
    assert "negative saving, -134.2 %" in prefill_noise(eff) and "differ by 105 points" in prefill_noise(eff)
    assert prefill_noise([{"prefill_savings_pct": 70.0}, {"prefill_savings_pct": 75.0}]) is None


def test_html_renders_markdown_emphasis_lists_and_code():
    html = to_html("**No method beats** `HOLD`\n\n| *chance* | 25 |\n|---|---|\n| a | b |\n\n- a note", {})
    assert "<strong>No method beats</strong> <code>HOLD</code>" in html and "<em>chance</em>" in html
    assert "<li>a note</li>" in html and "*" not in html.split("<body>")[1]


@pytest.fixture
def choice_run(tmp_path) -> Path:
    """A run of two methods on a choice dataset (test answers HOLD ×6, SHIP ×2; train: HOLD the most)."""
    data = tmp_path / "data"
    data.mkdir()
    kind = {"type": "choice", "options": OPTIONS}
    test = ["HOLD"] * 6 + ["SHIP"] * 2
    for split, answers in (("train", ["HOLD"] * 5 + ["SHIP"] * 3), ("test", test)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(
            {"id": f"{split}{i}", "task": "custom", "split": split, "policy": "P", "policy_path": None, "images": [],
             "query": "q", "answer": a, "response": f"\\boxed{{{a}}}", "answer_type": kind}) + "\n"
            for i, a in enumerate(answers)))
    out = tmp_path / "run"
    steps = [("data-a", "data", []), ("base-b", "base", ["data-a"]), ("eval-d", "eval", ["base-b", "data-a"]),
             ("eval-e", "eval", ["base-b", "data-a"])]
    run = {"recipe": {"name": "dock", "model": "micro", "seed": 0}, "data": "data-a",
           "notes": ["note: no perception warm-up: DATA has no scene graphs"],
           "methods": {"direct_sft": {"label": "Direct SFT", "model": "base-b", "eval": "eval-d", "chain": ["base-b"]},
                       "in_context": {"label": "In-context", "model": "base-b", "eval": "eval-e", "chain": ["base-b"]}},
           "steps": [{"id": i, "kind": k, "config": {"shipped_sha256": None} if k == "base" else {}, "inputs": ins,
                      "methods": ["m"], "status": "done"} for i, k, ins in steps]}
    out.mkdir()
    (out / "run.json").write_text(json.dumps(run))
    preds = ["HOLD"] * 6 + ["HOLD", None]  # always HOLD, once no answer at all
    results_ = {"data-a": {"dataset": str(data)},
                "eval-d": {"protocols": {"accuracy": {"score": 0.75, "n": 8}}},
                "eval-e": {"protocols": {"in_context": {"score": 0.0, "n": 8},
                                         "efficiency": {"tokens_with_policy": 500.0, "tokens_without_policy": 50.0,
                                                        "token_savings_pct": 90.0, "prefill_s_with_policy": 0.01,
                                                        "prefill_s_without_policy": 0.02,
                                                        "prefill_savings_pct": -100.0, "device": "cpu", "score": 0.9}}}}
    for i, _, _ in steps:
        d = out / "steps" / i
        d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({"id": i, "result": results_.get(i, {}), "seconds": 1.0}))
    (out / "steps" / "eval-d" / "predictions_accuracy.jsonl").write_text("".join(
        json.dumps({"id": f"test{k}", "gold": g, "pred": p}) + "\n" for k, (g, p) in enumerate(zip(test, preds))))
    return out


def test_the_report_tells_the_truth_about_a_run_on_the_majority_line(choice_run):
    md = write_report(choice_run)["md"].read_text()
    head = md.split("## Results")[0]
    assert "**No method beats always answering 'HOLD'** (75.0 %)" in head
    assert "no pretrained weights" in head and "not warmed up" in head and "- no perception warm-up" in head
    assert "| method | ranked by | accuracy % [95 % interval], n | without the policy | with the policy in the prompt |" \
        in md
    assert "headline" not in md and "policy_in_context" not in md.split("## Steps")[0]
    assert "| Direct SFT | without the policy | 75.0 [40.9–92.9], n=8 |" in md
    assert "| *always the policy's most frequent answer* | reference | 75.0 [40.9–92.9], n=8 |" in md
    assert "| HOLD | 0 | 6 | 0 | 0 | 0 | 6/6 |" in md and "| SHIP | 0 | 1 | 0 | 0 | 1 | 0/2 |" in md
    assert "**Without the policy a request costs 50 prompt tokens instead of 500: 90.0 % fewer.**" in md
    assert "-100 (noise)" in md and "Prefill times are timing noise here" in md
    html = (choice_run / "report.html").read_text()
    assert "<em>always the policy&#x27;s most frequent answer</em>" in html
    assert "*always" not in html and "**" not in html


def test_results_carry_n(choice_run):
    rows = {r["method"]: r for r in results(load_run(choice_run))}
    assert rows["direct_sft"]["protocols"]["accuracy"]["n"] == 8
