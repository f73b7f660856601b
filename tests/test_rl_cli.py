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
PYTHONPATH = f"{TESTS}{os.pathsep}{Path(__file__).parents[1] / 'src'}"  # this checkout's trimpi, not an installed one


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
            "--reward", "test_rl_trainer:vowels", "--trust-code", "test_rl_trainer:vowels", "--lr", "1e-2", *extra]


class Killed(Exception):
    pass


def test_fault2_rl_rerun_after_a_kill_resumes_by_itself(setup, monkeypatch):
    from trimpi.train.rl.metrics import StepLogger

    tmp, data, model = setup
    monkeypatch.syspath_prepend(TESTS)
    out = tmp / "killed"
    args = _args(data, model, out, "--algo", "grpo", "--max-steps", "4", "--save-steps", "2")
    log = StepLogger.log

    def killed_after_step_3(self, row):
        log(self, row)
        if row["step"] == 3:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(StepLogger, "log", killed_after_step_3)
        assert isinstance(CliRunner().invoke(app, args).exception, Killed)
    assert not (out / "trimpi_stage.json").exists()
    res = CliRunner().invoke(app, args)  # the same command again
    assert res.exit_code == 0, res.output
    assert "resuming from checkpoint-2 (step 2 of 4)" in res.output
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    summary = json.loads((out / "trimpi_stage.json").read_text())
    assert summary["global_step"] == 4 and summary["config"]["epsilon_high"] == 0.3
    assert summary["config"]["beta"] == 0.01 and summary["config"]["policy_rollout"]


def test_fault2_rl_refuses_finished_out_without_overwrite(setup, monkeypatch):
    from trimpi.errors import TrimpiError

    tmp, data, model = setup
    monkeypatch.syspath_prepend(TESTS)
    out = tmp / "finished"
    args = _args(data, model, out, "--max-steps", "1")
    assert CliRunner().invoke(app, args).exit_code == 0
    trained = (out / "model.safetensors").read_bytes()
    res = CliRunner().invoke(app, [*args, "--lr", "1.0"])
    assert isinstance(res.exception, TrimpiError) and "already holds a finished stage" in str(res.exception)
    assert "\n" not in str(res.exception) and (out / "model.safetensors").read_bytes() == trained
    res = CliRunner().invoke(app, [*args, "--overwrite", "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_rl_and_sft_lora_adapt_the_same_language_modules(setup, monkeypatch):
    from trimpi.models.lora import lora_target_regex

    tmp, data, model = setup
    monkeypatch.syspath_prepend(TESTS)
    out = tmp / "lora"
    res = CliRunner().invoke(app, _args(data, model, out, "--max-steps", "1", "--lora-r", "2"))
    assert res.exit_code == 0, res.output
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == lora_target_regex()
    from safetensors.torch import load_file

    keys = load_file(out / "adapter" / "adapter_model.safetensors")
    assert keys and not any("vision" in k or "connector" in k for k in keys)
    assert any("text_model" in k or "language_model" in k for k in keys)


def test_cli_dapo_defaults_and_bad_option(setup, monkeypatch):
    from trimpi.train.rl.config import RLConfig

    cfg = RLConfig(algo="dapo").resolved()
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.dynamic_sampling) == (0.2, 0.28, 0.0, True)
    tmp, data, model = setup
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
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
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert all((out / "checkpoints" / "checkpoint-1" / f"rank-{r}.pt").is_file() for r in (0, 1))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["num_samples"] == 8  # per process: 2 prompts x 2G
