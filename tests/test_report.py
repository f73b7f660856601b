"""The report: numbers from crafted step results, plots embedded as PNGs, a self-contained HTML page."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from trimpi.report import efficiency_rows, headline, load_run, results, reward_curves, write_report

EFF = {"tokens_with_policy": 400.0, "tokens_without_policy": 40.0, "token_savings_pct": 90.0,
       "prefill_s_with_policy": 0.2, "prefill_s_without_policy": 0.05, "prefill_savings_pct": 75.0, "device": "cpu",
       "score": 0.9}


def write_run(out: Path) -> None:
    steps = [("data-a", "data", []), ("base-b", "base", ["data-a"]), ("eval-ic", "eval", ["base-b", "data-a"]),
             ("sft-c", "sft", ["base-b", "data-a"]), ("eval-sft", "eval", ["sft-c", "data-a"]),
             ("rl-d", "rl", ["sft-c", "data-a"]), ("eval-rl", "eval", ["rl-d", "data-a"])]
    run = {
        "recipe": {"name": "crafted", "model": "tiny:qwen2_5_vl", "seed": 7, "methods": ["in_context", "cot_sft",
                                                                                          "trimpi_grpo_no_cpt"]},
        "methods": {
            "in_context": {"label": "In-context", "model": "base-b", "eval": "eval-ic", "chain": ["base-b"]},
            "cot_sft": {"label": "CoT SFT", "model": "sft-c", "eval": "eval-sft", "chain": ["base-b", "sft-c"]},
            "trimpi_grpo_no_cpt": {"label": "TriMPI-GRPO w/o VM-CPT", "model": "rl-d", "eval": "eval-rl",
                                   "chain": ["base-b", "sft-c", "rl-d"]},
        },
        "steps": [{"id": i, "kind": k, "config": {"k": i, **({"policy_rollout": True} if k == "rl" else {})},
                   "inputs": ins, "methods": ["m"], "status": "done"} for i, k, ins in steps],
    }
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps(run))
    protocols = {
        "eval-ic": {"in_context": {"score": 0.25}, "efficiency": EFF},
        "eval-sft": {"accuracy": {"score": 0.5, "n": 8}, "override": {"score": 0.125}},
        "eval-rl": {"accuracy": {"score": 0.875}, "efficiency": EFF},
    }
    for i, _, _ in steps:
        d = out / "steps" / i
        d.mkdir(parents=True)
        if i == "sft-c":
            continue  # unfinished: reported without a time
        result = {"protocols": protocols[i]} if i in protocols else {}
        (d / "done.json").write_text(json.dumps({"id": i, "result": result, "seconds": 2.5}))
    rows = [{"step": k, "reward/plain": 0.1 * k, "reward/policy": 0.2 * k, "num_samples": 4.0} for k in (1, 2, 3)]
    (out / "steps" / "rl-d" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_headline_protocol():
    assert headline("in_context", {"in_context": {"score": 0.3}, "accuracy": {"score": 0.9}}) == ("in_context", 0.3)
    assert headline("cot_sft", {"efficiency": {"score": 0.9}, "accuracy": {"score": 0.4}}) == ("accuracy", 0.4)
    assert headline("cot_sft", {"efficiency": {"score": 0.9}}) == ("-", None)


def test_results_curves_and_efficiency(tmp_path):
    write_run(tmp_path / "run")
    run = load_run(tmp_path / "run")
    rows = {r["method"]: r for r in results(run)}
    assert rows["in_context"]["score"] == 0.25 and rows["cot_sft"]["score"] == 0.5
    assert rows["trimpi_grpo_no_cpt"]["protocol"] == "accuracy" and rows["trimpi_grpo_no_cpt"]["score"] == 0.875
    curves = reward_curves(run)
    assert list(curves) == ["TriMPI-GRPO w/o VM-CPT"]
    assert curves["TriMPI-GRPO w/o VM-CPT"]["ordinary"] == [(1, 0.1), (2, 0.2), (3, 0.1 * 3)]
    assert curves["TriMPI-GRPO w/o VM-CPT"]["policy-aware"][-1] == (3, 0.2 * 3)
    eff = efficiency_rows(results(run))
    assert [e["label"] for e in eff] == ["In-context", "TriMPI-GRPO w/o VM-CPT"] and eff[0]["token_savings_pct"] == 90


def test_report_markdown_and_self_contained_html(tmp_path):
    out = tmp_path / "run"
    write_run(out)
    paths = write_report(out)
    md = paths["md"].read_text()
    assert "| CoT SFT | without the policy | 50.0 [21.5–78.5], n=8 | 50.0 [21.5–78.5], n=8 | - | 12.5 |" in md
    assert "| In-context | with the policy in the prompt | 25.0 | - | 25.0 | - |" in md
    assert "| TriMPI-GRPO w/o VM-CPT | 400 | 40 | 90 | 0.2 | 0.05 | 75 | cpu |" in md
    assert "| sft-c | m | - | - |" in md and "| rl-d | m | 2.5 | - |" in md
    assert "Seed 7" in md and "name: crafted" in md and "| torch |" in md
    for name in ("accuracy", "rewards", "savings"):
        assert f"({name}.png)" in md and (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    html = paths["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "src=\"http" not in html and "href=" not in html and ".png)" not in html
    assert "<td>TriMPI-GRPO w/o VM-CPT</td>" in html and "<h1>trimpi report: crafted</h1>" in html


def test_report_without_rl_or_efficiency(tmp_path):
    out = tmp_path / "run"
    write_run(out)
    run = json.loads((out / "run.json").read_text())
    run["methods"] = {"cot_sft": run["methods"]["cot_sft"]}
    run["steps"] = [s for s in run["steps"] if s["id"] in ("data-a", "base-b", "sft-c", "eval-sft")]
    (out / "run.json").write_text(json.dumps(run))
    md = write_report(out)["md"].read_text()
    assert "No RL step in this run." in md and "Not measured" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1


def test_step_summary():
    from trimpi.report import step_summary

    assert step_summary({"global_step": 3, "train_loss": 1.5, "attribute_accuracy": {"attributes": 0.75}}) == \
        "global_step=3 train_loss=1.5 attribute_accuracy=0.75"
    assert step_summary({"steps": 2, "reward": 0.25, "metrics": "metrics.jsonl"}) == "steps=2 reward=0.25"
    assert step_summary({"global_step": 1, "existence_accuracy": {"balanced_accuracy": 0.5},
                         "vision_pretraining": {"probe_policy_accuracy": 0.625}}) == \
        "global_step=1 existence_balanced_accuracy=0.5 probe_policy_accuracy=0.625"
    assert step_summary({}) == "-"


def test_reference_lines_chance_majority_and_in_context(tmp_path):
    from _fixtures_train import write_dataset
    from trimpi.report import chance_accuracy, reference_lines, results_markdown

    out = tmp_path / "run"
    write_run(out)
    data = write_dataset(tmp_path / "data", n=6)  # one policy with two cases; test = two training records
    run = json.loads((out / "run.json").read_text())
    run["data"] = "data-a"
    (out / "run.json").write_text(json.dumps(run))
    (out / "steps" / "data-a" / "done.json").write_text(json.dumps({"result": {"dataset": str(data)}}))
    assert chance_accuracy(data) == 0.5
    lines = reference_lines(load_run(out))
    assert lines == {"chance": 0.5, "majority": lines["majority"], "in_context": 0.25}
    md = results_markdown(results(load_run(out)), lines)
    assert "| *chance (a random answer of the policy)* | reference | 50.0 |" in md
    assert "| *always the policy's most frequent answer* | reference |" in md
    assert md.count("In-context") == 1  # in-context is its method row, not repeated
    report = write_report(out)["md"].read_text()
    assert "*chance (a random answer of the policy)*" in report and (out / "accuracy.png").is_file()


def test_reference_lines_without_a_dataset_or_cases(tmp_path):
    from trimpi.report import chance_accuracy, reference_lines

    out = tmp_path / "run"
    write_run(out)
    assert reference_lines(load_run(out)) == {"in_context": 0.25}
    assert chance_accuracy(tmp_path) is None


def test_reference_lines_of_an_imported_choice_dataset_use_its_answer_type(tmp_path):
    """Chance is one over the options; majority scores the policy's most frequent training answer with the
    records' own scorer (so "B" counts as the second option); tool calls have neither line."""
    from trimpi.data.io import write_jsonl
    from trimpi.report import chance_accuracy, majority_accuracy

    kind = {"type": "choice", "options": ["refund", "credit", "reject", "escalate"]}

    def rows(answers, split):
        return [{"id": f"{split}{i}", "task": "custom", "split": split, "policy": "returns", "query": "q?",
                 "answer": a, "response": f"\\boxed{{{a}}}", "answer_type": kind, "images": [], "meta": {}}
                for i, a in enumerate(answers)]

    write_jsonl(tmp_path / "train.jsonl", rows(["credit", "credit", "B", "refund"], "train"))
    write_jsonl(tmp_path / "test.jsonl", rows(["credit", "refund", "b", "escalate"], "test"))
    assert chance_accuracy(tmp_path) == 0.25
    assert majority_accuracy(tmp_path) == 0.5  # "credit" answers test 0 and test 2 ("b")
    write_jsonl(tmp_path / "test.jsonl", [{**r, "answer_type": "tool_call"} for r in rows(["{}"], "test")])
    assert chance_accuracy(tmp_path) is None and majority_accuracy(tmp_path) is None


def test_the_report_names_the_recipes_judge(tmp_path):
    from trimpi.report.run import judge_sentence

    out = tmp_path / "run"
    write_run(out)
    assert "Judge of" not in write_report(out)["md"].read_text()
    run = json.loads((out / "run.json").read_text())
    run["recipe"]["judge"] = {"url": "http://localhost:8000/v1", "model": "qwen-judge"}
    (out / "run.json").write_text(json.dumps(run))
    assert judge_sentence(run["recipe"]["judge"]) in write_report(out)["md"].read_text()
    assert "`qwen-judge` at http://localhost:8000/v1" in judge_sentence(run["recipe"]["judge"])
    assert "local model `smol`" in judge_sentence({"url": None, "model": "smol"})


def test_fault3_rl_rows_logged_twice_count_once_in_the_curves(tmp_path):
    out = tmp_path / "run"
    write_run(out)
    metrics = out / "steps" / "rl-d" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    replayed = rows + [{**rows[1], "reward/plain": 0.9}]  # step 2 written again by a second process
    metrics.write_text("".join(json.dumps(r) + "\n" for r in replayed))
    curve = reward_curves(load_run(out))["TriMPI-GRPO w/o VM-CPT"]["ordinary"]
    assert [s for s, _ in curve] == [1, 2, 3] and curve[1] == (2, 0.9)
