"""The paper recipes (configs/paper/) as shipped: `trimpi run --dry-run` is the launch plan of an 8-GPU node
(each VM-CPT / SFT / RL step an `accelerate launch` job with the recipe's DeepSpeed config, data and
evaluation in process). Scaled down (tiny Qwen2.5-VL, tiny data, one step per stage, two CPU processes with
configs/accelerate/ddp_cpu.yaml) the same plan runs through every step: one recipe in the default suite's
plan check, every recipe end to end under `-m slow` (HF generation; 3–10 minutes each on 2 cores; with vLLM:
tests/test_vllm_paper_recipes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trimpi.errors import ConfigError
from trimpi.pipeline import load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
DDP_CPU = ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"
TINY_MODEL = "tiny:qwen2_5_vl"  # the shipped models are not on this machine; the plan's shape does not depend on it
LAUNCHED = ("cpt", "sft", "rl")


def scale_down(values: dict) -> dict:
    """A paper recipe at test size: the same methods, stages, options and protocols, with a tiny Qwen2.5-VL,
    a few records, one optimizer step per stage and two CPU processes instead of 8 GPUs under ZeRO."""
    small = {"max_steps": 1, "batch_size": 1, "grad_accum": 1, "save_steps": 1, "gradient_checkpointing": False}
    rl = {"max_steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_completion_length": 8, "save_steps": 1,
          "per_device_train_batch_size": 2, "generation_batch_size": 2, "dynamic_sampling_max_tries": 1}
    stages = {name: {**opts, **(rl if name in ("grpo", "dapo") else small)}
              for name, opts in values["stages"].items()}
    data = dict(values["data"])
    if "clevr" in data:
        data["clevr"] = {**data["clevr"], "policies": 2, "train_per_policy": 2, "test": 2, "cot": 4, "general": 2,
                         "width": 64, "height": 48, "workers": 1}
    evaluation = {**values["eval"], "batch_size": 4, "max_new_tokens": 4, "efficiency_samples": 1,
                  "efficiency_repeats": 1, "judge_samples": 1}
    return {**values, "model": TINY_MODEL, "dtype": None, "accelerate": str(DDP_CPU), "data": data,
            "stages": stages, "eval": evaluation}


def _invoke_run(recipe: Path, tmp_path: Path, *args: str):
    import typer

    from trimpi.cli.run import run

    app = typer.Typer()
    app.command()(run)
    return CliRunner().invoke(app, [str(recipe), "--out", str(tmp_path / "out"), "--no-progress", *args])


def _dry_run_lines(recipe: Path, tmp_path: Path, *args: str) -> list[str]:
    result = _invoke_run(recipe, tmp_path, "--dry-run", "--model", TINY_MODEL, *args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_paper_recipe_as_shipped_dry_runs_offline_without_its_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))  # the 7B model is surely not cached there
    recipe = ROOT / "configs" / "paper" / "qwen2.5-vl-7b-clevr-t-d6.yaml"
    result = _invoke_run(recipe, tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("note: ") and "Qwen/Qwen2.5-VL-7B-Instruct" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert sum("zero3.yaml -m trimpi step" in line for line in lines) == 12
    assert not (tmp_path / "out").exists()

    result = _invoke_run(recipe, tmp_path)  # a real run needs the model: one line, nothing written
    assert isinstance(result.exception, ConfigError) and "Qwen/Qwen2.5-VL-7B-Instruct" in str(result.exception)
    assert "\n" not in str(result.exception) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_recipe_dry_run_is_an_8_gpu_launch_plan(path, tmp_path):
    shipped = yaml.safe_load(path.read_text())
    config = (path.parent / shipped["accelerate"]).resolve()
    accel = yaml.safe_load(config.read_text())
    assert accel["distributed_type"] == "DEEPSPEED" and accel["num_processes"] == 8
    assert accel["deepspeed_config"]["zero_stage"] == (3 if "-7b-" in path.name else 2)

    lines = _dry_run_lines(path, tmp_path)
    steps = lines[:-1]
    assert lines[-1].startswith("plan: ") and "(nothing run)" in lines[-1]
    launched = [line for line in steps if line.split()[1].split("-")[0] in LAUNCHED]
    # one VM-CPT, three SFT (Direct, CoT, CoT after VM-CPT), eight RL runs: each its own job
    assert len(launched) == 12
    for line in launched:
        sid = line.split()[1]
        step_json = tmp_path / "out" / "steps" / sid / "launch" / "step.json"
        assert line.endswith(f"launch --config_file {config} -m trimpi step {step_json} --no-progress"), line
    assert all(line.endswith(": in process") for line in steps if line not in launched)
    assert not (tmp_path / "out").exists()

    lines = _dry_run_lines(path, tmp_path, "--num-processes", "4")  # a node with 4 GPUs
    assert sum(f"--config_file {config} --num_processes 4 -m trimpi step" in line for line in lines) == 12
    lines = _dry_run_lines(path, tmp_path, "--accelerate", str(DDP_CPU))  # the whole recipe on two CPU processes
    assert sum(f"--config_file {DDP_CPU} -m trimpi step" in line for line in lines) == 12


def test_scaled_down_recipe_keeps_the_paper_plan(tmp_path):
    """Scaling down changes sizes, not the plan: the same step kinds for the same methods, protocols and
    stage options other than sizes."""
    path = ROOT / "configs" / "paper" / "qwen2.5-vl-7b-clevr-m-d6.yaml"
    shipped = run_recipe(load_recipe(path, {"model": TINY_MODEL}), tmp_path / "a", dry_run=True, echo=lambda s: 0)
    small_file = tmp_path / "small.yaml"
    small_file.write_text(yaml.safe_dump(scale_down(yaml.safe_load(path.read_text()))))
    small = run_recipe(load_recipe(small_file), tmp_path / "b", dry_run=True, echo=lambda s: 0)

    def shape(record):
        return [(s["kind"], tuple(s["methods"]), s["config"].get("protocols"), s["config"].get("target"),
                 s["config"].get("algo"), s["config"].get("policy_rollout")) for s in record["steps"]]

    assert shape(small) == shape(shipped)
    for a, b in zip(small["steps"], shipped["steps"], strict=True):
        if a["kind"] in ("cpt", "sft"):
            assert a["config"]["options"]["lora_rank"] == b["config"]["options"]["lora_rank"]
            assert a["config"]["options"]["lr"] == b["config"]["options"]["lr"]
        if a["kind"] == "rl":
            for key in ("beta", "epsilon", "epsilon_high", "dynamic_sampling", "loss_type", "learning_rate"):
                assert a["config"]["options"][key] == b["config"]["options"][key], key


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_scaled_down_paper_recipe_runs_every_step_under_two_processes(path, tmp_path):
    run_scaled_down(path, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2.5-vl-3b-clevr-t-d4", "qwen2.5-vl-7b-clevr-m-d4"])
def test_scaled_down_paper_recipe_runs_under_its_own_deepspeed_config(name, tmp_path):
    """The recipe's own ZeRO config as shipped (bf16, ZeRO-2 for 3B, ZeRO-3 for 7B), on 2 CPU processes."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup installs it)")
    path = ROOT / "configs" / "paper" / f"{name}.yaml"
    shipped = (path.parent / yaml.safe_load(path.read_text())["accelerate"]).resolve()
    stage = yaml.safe_load(shipped.read_text())["deepspeed_config"]["zero_stage"]
    run = run_scaled_down(path, tmp_path, accelerate=shipped)
    for s in (s for s in run["steps"] if s["kind"] in LAUNCHED):
        result = json.loads((tmp_path / "run" / "steps" / s["id"] / "done.json").read_text())["result"]
        assert result["processes"] == 2 and result["distributed"] == f"deepspeed-zero{stage}", s["id"]


def run_scaled_down(path: Path, tmp_path: Path, engine: str = "hf", model: str = TINY_MODEL,
                    accelerate: Path = DDP_CPU) -> dict:
    """Run the scaled-down recipe with `engine`, `model` and the `accelerate` config (with 2 processes) in a
    child process; check every step and the report. Returns run.json."""
    small = tmp_path / path.name
    values = {**scale_down(yaml.safe_load(path.read_text())), "engine": engine, "model": model,
              "accelerate": str(accelerate)}
    small.write_text(yaml.safe_dump(values))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, "-m", "trimpi", "run", str(small), "--out", str(out), "--no-progress",
                          "--num-processes", "2"], capture_output=True, text=True, env=env, timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert all(s["status"] == "done" for s in run["steps"])
    assert set(run["methods"]) == set(yaml.safe_load(path.read_text())["methods"])
    for s in run["steps"]:
        launch = out / "steps" / s["id"] / "launch"
        assert (launch / "result.json").is_file() == (s["kind"] in LAUNCHED), s["id"]
        if s["kind"] in LAUNCHED:
            assert "--config_file " + str(accelerate) in (launch / "log.txt").read_text()
    report = (out / "report.md").read_text()
    assert all(info["label"] in report for info in run["methods"].values())
    return run
