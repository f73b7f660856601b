"""`trimpi repro --jobs 2` end to end on a tiny Qwen2.5-VL: two seeds in parallel child processes (each
holding its own seed lock under the parent's lock on OUT), one shared step store, then the table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

TINY_CLEVR = {"depths": [2], "variant": "T", "policies": 2, "train_per_policy": 4, "test": 2, "cot": 4, "general": 0,
              "width": 64, "height": 48, "workers": 1}
CONFIG = {
    "name": "tiny-repro", "model": "tiny:qwen2_5_vl", "seeds": [0, 1],
    "base": {"variants": ["T"], "depths": [2], "policies": 2, "scenes": 3, "test": 2, "examples": 4, "width": 64,
             "height": 48, "epochs": 1, "batch_size": 2, "eval_batch_size": 4, "max_new_tokens": 4,
             "warmup": {"max_steps": 1, "batch_size": 2, "eval_scenes": 2}},
    "settings": {"T-d2": {"data": {"clevr": TINY_CLEVR, "setting": "T-d2"}}},
    "stages": {"sft": {"max_steps": 1, "batch_size": 2}},
    "methods": ["in_context", "cot_sft"],
    "eval": {"protocols": ["accuracy"], "max_new_tokens": 4, "batch_size": 4},
}


@pytest.mark.slow
def test_repro_runs_seeds_in_parallel_children_and_writes_the_table(tmp_path):
    config = tmp_path / "repro.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "trimpi", "repro", str(config), "--out", str(out), "--jobs", "2",
                          "--no-progress"], capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in sorted((out / "logs").glob("*.log")))
    assert res.returncode == 0, res.stderr + logs
    assert "seed 0: done" in res.stdout and "seed 1: done" in res.stdout
    table = json.loads((out / "repro.json").read_text())
    setting = table["settings"]["T-d2"]
    assert setting["seeds"] == [0, 1] and len(setting["methods"]["cot_sft"]["accuracy"]["values"]) == 2
    assert 0.25 <= setting["chance"]["mean"] <= 0.5  # a depth-2 policy has 2 to 4 cases
    assert set(table["bases"]) == {"seed-0", "seed-1"}
    md = (out / "repro.md").read_text()
    assert "| CoT SFT |" in md and "chance (a random answer of the policy)" in md and "over seeds 0, 1" in md
    for seed in (0, 1):
        run = json.loads((out / "runs" / "T-d2" / f"seed-{seed}" / "run.json").read_text())
        assert run["store"] == "../../.." and (out / "steps" / run["base"]["model"] / "trimpi_stage.json").is_file()
        assert (out / "runs" / "T-d2" / f"seed-{seed}" / "report.md").is_file()
    rerun = subprocess.run([sys.executable, "-m", "trimpi", "repro", str(config), "--out", str(out), "--jobs", "2",
                            "--no-progress"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "started" not in rerun.stdout  # both seeds finished: no child starts
