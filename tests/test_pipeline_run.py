"""End to end on a tiny Qwen2.5-VL: a rerun skips every step; runs killed mid-stage and rerun give
the same report numbers and the same model outputs as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trimpi.pipeline import Context, parse_recipe, run_recipe
from trimpi.report import load_run, report_run, results, write_report
from trimpi.train.callbacks import InterruptAt

RECIPE = {
    "name": "tiny", "seed": 0, "model": "tiny:qwen2_5_vl",
    "data": {"clevr": {"depths": [2], "variant": "T", "policies": 2, "train_per_policy": 4, "test": 4, "cot": 4,
                       "general": 2, "width": 64, "height": 48, "workers": 1}},
    "stages": {"cpt": {"max_steps": 3, "batch_size": 2, "save_steps": 1},
               "sft": {"max_steps": 3, "batch_size": 2, "save_steps": 1},
               "grpo": {"max_steps": 3, "num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8,
                        "save_steps": 1, "temperature": 1.0}},
    "methods": ["in_context", "cot_sft", "trimpi_grpo"],
    "eval": {"protocols": ["accuracy", "forgetting", "efficiency"], "max_new_tokens": 8, "efficiency_samples": 1,
             "efficiency_repeats": 1, "batch_size": 4},
}


class StopRL(Exception):
    pass


def stop_rl_at(step: int):
    def hook(k: int, row: dict) -> None:
        if k >= step:
            raise StopRL(f"stopped at RL step {k}")
    return hook


def _row_key(row: dict):
    """What must agree per prediction: the completion, or the token counts (efficiency rows)."""
    return row.get("completion", (row.get("tokens_with_policy"), row.get("tokens_without_policy")))


def fingerprint(out: Path) -> dict:
    """The report's numbers (scores, token counts), model completions and RL statistics of a run."""
    run = load_run(out)
    rows = {r["method"]: (r["score"], {p: {k: v for k, v in s.items() if k in ("score", "n", "tokens_with_policy",
                                                                             "tokens_without_policy")}
                                       for p, s in r["protocols"].items()}) for r in results(run)}
    completions = {}
    for path in sorted((out / "steps").glob("eval-*/predictions_*.jsonl")):
        completions[path.parent.name + path.name] = [_row_key(json.loads(x)) for x in path.read_text().splitlines()]
    rl = {sid: [(r["step"], r["reward"], round(r["entropy"], 5), round(r["loss"], 6)) for r in rows_]
          for sid, rows_ in run["rl"].items()}
    return {"results": rows, "completions": completions, "rl": rl}


def test_rerun_skips_and_interrupted_runs_match_uninterrupted(tmp_path):
    recipe = parse_recipe(RECIPE)
    clean = tmp_path / "clean"
    run_recipe(recipe, clean, echo=lambda s: None, after=write_report)
    md = (clean / "report.md").read_text()
    assert "CoT SFT" in md and "TriMPI (PoRo-GRPO)" in md and "In-context" in md
    assert "- TriMPI (PoRo-GRPO): mean reward over steps 1–3, policy-aware " in md  # the planned step's PoRo flag
    html = (clean / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "src=\"http" not in html
    steps = sorted(p.name for p in (clean / "steps").iterdir())
    assert [s.split("-")[0] for s in steps].count("sft") == 2  # CoT SFT on the base and after VM-CPT
    assert all((clean / "steps" / s / "done.json").is_file() for s in steps)
    scores = json.loads(next((clean / "steps").glob("eval-*/scores.json")).read_text())
    forgetting = [json.loads(p.read_text())["protocols"].get("forgetting")
                  for p in (clean / "steps").glob("eval-*/scores.json")]
    assert sum(f is not None and "baseline_accuracy" in f for f in forgetting) == 2  # CoT SFT and TriMPI vs the base
    assert scores["model"].startswith(str(clean / "steps"))

    lines: list[str] = []
    run_recipe(recipe, clean, echo=lines.append, after=lambda d: report_run(d, lines.append))
    ran = [line for line in lines if not line.startswith(("skip", "report", "verdict", " ", "| "))]
    assert ran == [] and sum(line.startswith("skip") for line in lines) == len(steps)
    table = next(line for line in lines if line.startswith("| method"))  # the results table is printed
    assert "CoT SFT" in table and "TriMPI (PoRo-GRPO)" in table

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):  # killed during the first training stage (CoT SFT), after a checkpoint
        run_recipe(recipe, broken, ctx=Context(out=broken, callbacks=[InterruptAt(2)]), echo=lambda s: None)
    partial = [p for p in (broken / "steps").iterdir() if not (p / "done.json").is_file()]
    assert [p.name.split("-")[0] for p in partial] == ["sft"] and (partial[0] / "checkpoints").is_dir()
    with pytest.raises(StopRL):  # killed during RL, after a checkpoint
        run_recipe(recipe, broken, ctx=Context(out=broken, on_rl_step=stop_rl_at(2)), echo=lambda s: None)
    partial = [p for p in (broken / "steps").iterdir() if not (p / "done.json").is_file()]
    assert [p.name.split("-")[0] for p in partial] == ["rl"]
    (broken / "steps" / "eval-stale").mkdir()  # an unrelated stray directory is ignored
    lines = []
    run_recipe(recipe, broken, echo=lines.append, after=write_report)
    assert any(line.startswith("resume") and "rl-" in line for line in lines)
    assert fingerprint(broken) == fingerprint(clean)
