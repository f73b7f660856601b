"""Two DDP processes (gloo, CPU) produce the update one process makes on the whole batch: the RL
policy update (every loss type) and the SFT Trainer's optimizer step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def two_processes(train_data, rl_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_grads")
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"), str(TESTS / "ddp_grads.py"), str(train_data),
           str(rl_data[0]), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT / 'src'}"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_ddp_rl_gradients_equal_one_process_gradients(two_processes, rl_data):
    from ddp_grads import rl_gradients

    one = rl_gradients(rl_data[0])
    # bnpo is by definition a token mean per process that DDP then averages
    halves = [rl_gradients(rl_data[0], share=(rank, 2))["bnpo"] for rank in (0, 1)]
    one["bnpo"] = (halves[0] + halves[1]) / 2
    two = torch.load(two_processes / "rl-2.pt", weights_only=True)
    assert set(one) == set(two) == {"grpo", "dr_grpo", "bnpo", "dapo"}
    for loss_type, g in one.items():
        assert g.abs().sum() > 0, loss_type
        assert torch.allclose(two[loss_type], g, atol=1e-6, rtol=1e-4), loss_type


def test_ddp_sft_step_equals_one_process_step(two_processes, train_data, tmp_path):
    from ddp_grads import sft_step
    from trimpi.models.tiny import build_tiny

    one = sft_step(train_data, tmp_path, per_device=4)
    start = torch.cat([p.detach().flatten() for p in build_tiny("idefics3")[0].parameters()])
    two = torch.load(two_processes / "sft-2.pt", weights_only=True)
    assert not torch.allclose(one, start)  # the step moved the weights
    assert torch.allclose(two, one, atol=1e-6, rtol=1e-4)
