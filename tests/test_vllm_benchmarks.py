"""benchmarks/rollout_engines.py at toy size (run in .venv-vllm by `make test-vllm`): HF generate and the
eager vLLM engine, their throughput and a PoRo-GRPO step each, in well under a minute."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` runs this in .venv-vllm")

from test_benchmarks import run  # noqa: E402 - after the skip


def test_rollout_engines_compares_hf_and_vllm_at_toy_size(tmp_path):
    out = tmp_path / "rollout.json"
    text = run("rollout_engines.py", "--presets", "micro", "--modes", "vllm", "--prompts", "1", "--g", "2",
               "--length", "8", "--steps", "2", "--calls", "1", "--out", str(out), cwd=tmp_path,
               env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(out.read_text())
    (row,) = res["results"]
    assert json.loads(text.splitlines()[-1]) == row and res["machine"]["vllm"]
    # one call of 2 prompts (plain + policy-aware) x G 2; a step: 1 prompt x G 2 x 2 halves; 8 tokens at most each
    assert row["prompts"] == 2 and row["G"] == 2 and row["steps"] == 2
    for column in ("hf", "vllm"):
        assert 0 < row[f"{column}_tokens"] <= 32 and row[f"{column}_tokens_per_s"] > 0, column
        assert 0 < row[f"{column}_rl_completion_tokens"] <= 32 and row[f"{column}_rl_step_s"] > 0, column
    assert "vllm_compiled_tokens_per_s" not in row and row["vllm_start_s"] > 0
    assert row["vllm_rl_step_speedup"] == pytest.approx(row["hf_rl_step_s"] / row["vllm_rl_step_s"])
