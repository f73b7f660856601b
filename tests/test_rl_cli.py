"""`trimpi train rl` end to end: options, resume, and DDP with 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_rl_fixtures import make_dataset, tiny_model
from typer.testing import CliRunner

from trimpi.cli import app

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rlcli")
    data = make_dataset(tmp / "data", n=8, with_policy_image=True)
    model, proc = tiny_model()
    model.save_pretrained(tmp / "model")
    proc.save_pretrained(tmp / "model")
    return tmp, data, tmp / "model"


def _args(data, model, out, *extra):
    return ["train", "rl", "--data", str(data), "--model", str(model), "--out", str(out), "--policy-rollout",
            "--num-generations", "2", "--prompts-per-step", "2", "--max-completion-length", "6",
            "--reward", "test_rl_trainer:vowels", "--lr", "1e-2", *extra]


def test_cli_train_and_resume(setup, monkeypatch):
    tmp, data, model = setup
    monkeypatch.syspath_prepend(TESTS)
    runner = CliRunner()
    out = tmp / "out"
    res = runner.invoke(app, _args(data, model, out, "--algo", "grpo", "--max-steps", "2", "--save-steps", "1"))
    assert res.exit_code == 0, res.output
    assert (out / "checkpoint-1").is_dir() and (out / "config.json").is_file()
    res = runner.invoke(app, _args(data, model, out, "--algo", "grpo", "--max-steps", "3",
                                   "--resume-from-checkpoint", "last"))
    assert res.exit_code == 0, res.output
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    cfg = json.loads((out / "rl_config.json").read_text())["config"]
    assert cfg["epsilon_high"] == 0.3 and cfg["beta"] == 0.01 and cfg["policy_rollout"]


def test_cli_dapo_defaults_and_bad_option(setup, monkeypatch):
    from trimpi.train.rl.config import RLConfig

    cfg = RLConfig(algo="dapo").resolved()
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.dynamic_sampling) == (0.2, 0.28, 0.0, True)
    tmp, data, model = setup
    env = {**os.environ, "PYTHONPATH": TESTS}
    res = subprocess.run([sys.executable, "-m", "trimpi", *_args(data, model, tmp / "bad", "--loss-type", "foo")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: --loss-type")


def test_ddp_two_cpu_processes(setup):
    tmp, data, model = setup
    out = tmp / "ddp"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trimpi",
           *_args(data, model, out, "--algo", "dapo", "--no-dynamic-sampling", "--prompts-per-step", "4",
                  "--max-steps", "2", "--save-steps", "1", "--per-device-train-batch-size", "3")]
    # --prompts-per-step given twice: the last value (4) wins
    env = {**os.environ, "PYTHONPATH": TESTS, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "checkpoint-1" / "rank-0.pt").is_file() and (out / "checkpoint-1" / "rank-1.pt").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["num_samples"] == 8  # per process: 2 prompts x 2G
