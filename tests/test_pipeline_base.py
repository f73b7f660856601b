"""The policy-following base end to end on a tiny Qwen2.5-VL: its own data, init, warm-up, in-context SFT
without the excluded policies, and its in-context evaluation per setting are ordinary cached steps that
appear in run.json and the report, and the methods start from it."""

from __future__ import annotations

import json

import pytest

from trimpi.pipeline import parse_recipe, run_recipe
from trimpi.report import write_report

TINY_CLEVR = {"depths": [2], "variant": "T", "policies": 2, "train_per_policy": 4, "test": 2, "cot": 4, "general": 0,
              "width": 64, "height": 48, "workers": 1}
RECIPE = {
    "name": "tiny-base", "seed": 0, "model": "tiny:qwen2_5_vl",
    "data": {"clevr": TINY_CLEVR},
    "base": {"variants": ["T", "M"], "depths": [2], "policies": 2, "scenes": 3, "test": 2, "examples": 4,
             "width": 64, "height": 48, "epochs": 1, "batch_size": 2, "eval_batch_size": 4, "max_new_tokens": 4,
             "warmup": {"max_steps": 1, "batch_size": 2, "eval_scenes": 2},
             "datasets": [{"clevr": {**TINY_CLEVR, "variant": "M"}}]},
    "stages": {"sft": {"max_steps": 1, "batch_size": 2}},
    "methods": ["in_context", "cot_sft"],
    "eval": {"protocols": ["accuracy"], "max_new_tokens": 4, "batch_size": 4},
}


@pytest.mark.slow
def test_policy_following_base_runs_as_pipeline_steps(tmp_path):
    out = tmp_path / "run"
    record = run_recipe(parse_recipe(RECIPE), out, echo=lambda s: None, after=write_report)
    base = record["base"]
    kinds = [sid.split("-")[0] for sid in base["chain"]]
    assert kinds == ["base", "warmup", "sft"] and record["methods"]["in_context"]["model"] == base["model"]
    assert record["methods"]["cot_sft"]["chain"][:3] == base["chain"]  # CoT SFT starts from the base
    done = {s["id"]: json.loads((out / "steps" / s["id"] / "done.json").read_text()) for s in record["steps"]}
    trained = done[base["model"]]["result"]
    assert trained["target"] == "in_context" and trained["examples"] >= 1
    assert trained["excluded_policies"] == 4  # the recipe's 2 T policies and the listed dataset's 2 M policies
    assert set(done[base["eval"]]["result"]["settings"]) == {"T-d2", "M-d2"}
    for setting in ("T-d2", "M-d2"):
        assert (out / "steps" / base["eval"] / setting / "scores.json").is_file()
    md = (out / "report.md").read_text()
    assert "## Policy-following base" in md and "| T-d2 |" in md and "| M-d2 |" in md
    lines: list[str] = []
    run_recipe(parse_recipe(RECIPE), out, echo=lines.append)
    assert all(line.startswith("skip") for line in lines)
