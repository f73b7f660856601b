"""Colocated vLLM under the 7B recipes' ZeRO-3 config (run in .venv-vllm by `make test-vllm-slow`, about
2 minutes on 2 cores): each of 2 processes starts its own engine from the gathered weights and syncs the
gathered weights into it before every rollout, while the trainer keeps its ZeRO-3 partitions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm-slow` runs this in .venv-vllm")
pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup-vllm installs it)")

from _vllm_fixtures import tiny  # noqa: E402
from test_rl_fixtures import make_dataset  # noqa: E402
from test_vllm_paper_recipes import VLLM_STARTED  # noqa: E402
from trimpi.models.loading import save_checkpoint  # noqa: E402

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@pytest.mark.slow
def test_poro_grpo_with_colocated_vllm_under_zero3(tmp_path):
    from safetensors.torch import load_file

    data = make_dataset(tmp_path / "data", n=8, with_policy_image=True)
    model, processor = tiny("qwen2_5_vl")
    base = save_checkpoint(model, processor, tmp_path / "base")
    out = tmp_path / "rl"
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "zero3.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "-m", "trimpi", "train", "rl", "--data", str(data), "--model", str(base), "--out", str(out),
           "--engine", "vllm", "--policy-rollout", "--max-steps", "2", "--save-steps", "1", "--num-generations", "2",
           "--prompts-per-step", "2", "--max-completion-length", "6", "--per-device-train-batch-size", "2",
           "--lr", "1e-2", "--beta", "0.04", "--reward", "test_rl_trainer:vowels",
           "--trust-code", "test_rl_trainer:vowels", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{TESTS}"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count(VLLM_STARTED) == 2  # one engine per process
    partitions = list((out / "checkpoints" / "checkpoint-1" / "deepspeed" / "state").glob("*optim_states.pt"))
    assert len(partitions) == 2
    trained, first = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert trained.keys() == first.keys() and any(not torch.equal(trained[k], first[k]) for k in first)
