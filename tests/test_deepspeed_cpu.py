"""The paper recipes' DeepSpeed configs for real: DeepSpeed runs on CPU with gloo, so `trimpi train rl` runs
under configs/accelerate/zero2.yaml and zero3.yaml as shipped (2 processes instead of 8, fp32 instead of
bf16), with the reference model loaded apart under ZeRO-3, and a run resumed from a checkpoint (every
process's ZeRO partition of the optimizer, through DeepSpeed's own checkpoint) ends with exactly the
weights of the uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup installs it)")

from test_rl_fixtures import make_dataset, tiny_model  # noqa: E402
from trimpi.data.io import mark_owned  # noqa: E402
from trimpi.models import save_checkpoint  # noqa: E402

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A dataset with a policy image and a tiny starting checkpoint."""
    root = tmp_path_factory.mktemp("deepspeed")
    model, processor = tiny_model()
    return make_dataset(root / "data", n=8, with_policy_image=True), save_checkpoint(model, processor, root / "base")


def train_rl(config: str, data: Path, model: Path, out: Path) -> subprocess.CompletedProcess:
    """4 PoRo-GRPO steps (β > 0, a checkpoint every 2) under `config` with 2 processes, rewarded by the share
    of vowels (a reward a random tiny model has variance in, so the weights move)."""
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(ROOT / config),
           "--num_processes", "2", "--mixed_precision", "no", "-m", "trimpi", "train", "rl",
           "--data", str(data), "--model", str(model), "--out", str(out), "--policy-rollout", "--max-steps", "4",
           "--save-steps", "2", "--num-generations", "2", "--prompts-per-step", "2", "--max-completion-length", "6",
           "--per-device-train-batch-size", "2", "--lr", "1e-2", "--beta", "0.04",
           "--reward", "test_rl_trainer:vowels", "--trust-code", "test_rl_trainer:vowels", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{TESTS}"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.parametrize("config", ["configs/accelerate/zero2.yaml", "configs/accelerate/zero3.yaml"])
def test_rl_under_zero_resumes_to_the_uninterrupted_weights(start, tmp_path, config):
    from safetensors.torch import load_file

    data, base = start
    train_rl(config, data, base, tmp_path / "whole")
    saved = tmp_path / "whole" / "checkpoints" / "checkpoint-2"
    partitions = sorted(p.name for p in (saved / "deepspeed" / "state").glob("*optim_states.pt"))
    assert len(partitions) == 2 and not (saved / "optimizer.pt").exists()  # one ZeRO partition per process

    resumed = tmp_path / "resumed"  # what a run killed after step 2 leaves: its checkpoint
    shutil.copytree(saved, resumed / "checkpoints" / "checkpoint-2")
    mark_owned(resumed, "train rl")  # the killed run had marked its --out as its own
    res = train_rl(config, data, base, resumed)
    assert "resuming from checkpoint-2 (step 2 of 4)" in res.stdout + res.stderr
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 4]

    whole, again, first = (load_file(d / "model.safetensors") for d in (tmp_path / "whole", resumed, base))
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert any(not torch.equal(whole[k], first[k]) for k in whole)  # the run trained
