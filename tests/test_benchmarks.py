"""Every benchmark script runs at toy size (seconds), so a change that breaks one is noticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_eye_compare_scores_every_design_at_equal_cpu(tmp_path):
    out = tmp_path / "eyes.jsonl"
    run("eye_compare.py", "--designs", "siglip,convnext", "--budget", "0.5", "--train", "16", "--test", "12",
        "--workers", "1", "--cache", str(tmp_path / "pools"), "--out", str(out), cwd=tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["design"] for r in rows} == {"siglip", "convnext"} and len(rows) == 8  # a point per quarter
    for r in rows:
        assert r["train_cpu_s"] >= 0.5 * {0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0}[rows.index(r) % 4] - 1e-6
        assert 0 <= r["single"] <= 1 and r["images"] == 12 and r["tokens"] == (16 if r["design"] == "siglip" else 20)
