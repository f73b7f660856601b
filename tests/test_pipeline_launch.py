"""Training steps as accelerate jobs (pipeline.launch): the dry run's launch plan, a tiny recipe under two
CPU processes (configs/accelerate/ddp_cpu.yaml) end to end, a failing job as one line, a stopped job's
whole process group gone, and (slow) a job killed mid-stage that resumes to the uninterrupted result."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trimpi.errors import ConfigError, TrimpiError
from trimpi.pipeline import Context, make_plan, parse_recipe, run_recipe
from trimpi.pipeline.launch import Launcher, last_error, run_job, run_launched, step_from_record, step_record
from trimpi.pipeline.steps import Step

ROOT = Path(__file__).resolve().parents[1]
DDP_CPU = str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml")
ZERO3 = str(ROOT / "configs" / "accelerate" / "zero3.yaml")
RECIPE = {
    "name": "tiny", "seed": 0, "model": "tiny:qwen2_5_vl",
    "data": {"clevr": {"depths": [2], "variant": "T", "policies": 2, "train_per_policy": 4, "test": 4, "cot": 4,
                       "general": 2, "width": 64, "height": 48, "workers": 1}},
    # 4 CoT examples, 1 per process and step: one epoch is 2 steps on 2 processes, 4 on one
    "stages": {"sft": {"epochs": 1, "batch_size": 1, "save_steps": 1}},
    "methods": ["in_context", "cot_sft"],
    "eval": {"protocols": ["accuracy"], "max_new_tokens": 4, "batch_size": 4},
}
LAUNCHED = ("cpt", "sft", "rl")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_dry_run_prints_each_steps_launch_command(tmp_path):
    recipe = parse_recipe({**RECIPE, "methods": ["trimpi_grpo"], "accelerate": DDP_CPU})
    lines: list[str] = []
    record = run_recipe(recipe, tmp_path / "out", dry_run=True, echo=lines.append)
    assert not (tmp_path / "out").exists()
    assert len(lines) == len(record["steps"])
    for line, step in zip(lines, record["steps"], strict=True):
        if step["kind"] in LAUNCHED:
            step_json = tmp_path / "out" / "steps" / step["id"] / "launch" / "step.json"
            assert line.endswith(f"launch --config_file {DDP_CPU} -m trimpi step {step_json} --no-progress"), line
        else:
            assert line.endswith(": in process"), line
    assert sorted(s["kind"] for s in record["steps"] if s["kind"] in LAUNCHED) == ["cpt", "rl", "sft"]

    lines = []
    run_recipe(recipe, tmp_path / "out", dry_run=True, echo=lines.append, num_processes=4,
               ctx=Context(out=tmp_path / "out", progress=True))
    assert sum(f"--config_file {DDP_CPU} --num_processes 4 -m trimpi step" in line and line.endswith("step.json")
               for line in lines) == 3
    lines = []  # without accelerate: every step in process, as before
    run_recipe(parse_recipe(RECIPE), tmp_path / "out", dry_run=True, echo=lines.append)
    assert lines and all(line.endswith(": in process") for line in lines)


def test_deepspeed_config_dry_runs_without_deepspeed_and_a_launch_names_the_install(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else find_spec(name, *a))
    recipe = parse_recipe({**RECIPE, "accelerate": ZERO3})
    lines: list[str] = []
    run_recipe(recipe, tmp_path / "out", dry_run=True, echo=lines.append)
    assert any(f"--config_file {ZERO3} -m trimpi step" in line for line in lines)
    with pytest.raises(ConfigError, match=r"zero3.yaml uses DeepSpeed, which is not installed \(pip install deepspeed"):
        run_recipe(recipe, tmp_path / "out", echo=lambda s: None)
    assert not (tmp_path / "out").exists(), "nothing runs before the launch check"


def test_bad_accelerate_config_and_flags_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, match in (("distributed_type: NOPE\n", "distributed_type: unknown value 'NOPE'"),
                        ("- a\n- b\n", "expected an accelerate config"), ("a: [\n", "not valid YAML")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match) as e:
            run_recipe(parse_recipe({**RECIPE, "accelerate": str(bad)}), tmp_path / "o", dry_run=True,
                       echo=lambda s: None)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--num-processes: the recipe names no accelerate: config"):
        run_recipe(parse_recipe(RECIPE), tmp_path / "o", dry_run=True, echo=lambda s: None, num_processes=2)
    with pytest.raises(ConfigError, match="--num-processes: must be at least 1"):
        run_recipe(parse_recipe({**RECIPE, "accelerate": DDP_CPU}), tmp_path / "o", dry_run=True,
                   echo=lambda s: None, num_processes=0)


def test_step_record_round_trips_to_the_same_id():
    plan = make_plan(parse_recipe({**RECIPE, "methods": ["trimpi_grpo"]}))
    for step in plan.steps:
        again = step_from_record(json.loads(json.dumps(step_record(step))))
        assert again.id == step.id and [s.id for s in again.inputs] == [s.id for s in step.inputs]


def test_step_file_must_exist_and_match_its_id(tmp_path):
    from trimpi.pipeline.launch import run_step_file

    with pytest.raises(ConfigError, match="step.json: step file not found"):
        run_step_file(tmp_path / "step.json")
    step = Step("data", {"source": "path", "path": str(tmp_path), "manifest_sha256": None})
    spec = {"id": "data-000000000000", "store": str(tmp_path), "step": step_record(step)}
    (tmp_path / "step.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=f"hashes to {step.id}, not data-000000000000"):
        run_step_file(tmp_path / "step.json")
    (tmp_path / "step.json").write_text(json.dumps({**spec, "id": step.id}))
    assert run_step_file(tmp_path / "step.json", progress=False) == {"dataset": str(tmp_path), "processes": 1}
    assert json.loads((tmp_path / "result.json").read_text()) == {"dataset": str(tmp_path), "processes": 1}


def test_last_error_finds_the_line_that_says_what_went_wrong():
    torchrun = ("[rank0]: Traceback (most recent call last):\n[rank0]:   File \"x.py\", line 3\n"
                "[rank0]: ValueError: shapes do not match\nE1203 failed (exitcode: 1) local_rank: 0\n"
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
                "============================================================\n")
    assert last_error(torchrun) == "ValueError: shapes do not match"
    assert last_error("loading\r10%\rerror: data: x.jsonl: file not found\nTraceback\n") == "data: x.jsonl: file not found"
    assert last_error("just a line\n\n") == "just a line"
    assert last_error("") == "no output"


def test_a_failing_job_is_one_line_with_its_exit_status(tmp_path):
    """A real two-process launch whose step cannot run (an option the library does not know)."""
    data = Step("data", {"source": "path", "path": str(tmp_path / "none"), "manifest_sha256": None})
    base = Step("base", {"model": "tiny:qwen2_5_vl", "dtype": None})
    step = Step("sft", {"stage": "sft", "target": "cot", "options": {"no_such_option": 1}, "seed": 0}, [base, data])
    ctx = Context(out=tmp_path, progress=False, launcher=Launcher(DDP_CPU, "MULTI_GPU"))
    output: list[str] = []
    with pytest.raises(TrimpiError) as e:
        run_launched(step, ctx, write=output.append)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{step.id}: training job failed (exit 1): TypeError: ")
    assert "no_such_option" in message and "launch/log.txt" in message
    assert "no_such_option" in (step.dir(tmp_path) / "launch" / "log.txt").read_text() and "".join(output)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie that init has not reaped yet is not)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def test_stopping_a_job_ends_its_whole_process_group(tmp_path):
    """An interrupt while a job runs (Ctrl-C in the parent) stops the job and the processes it started."""
    pids = tmp_path / "pids"
    script = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(600)']); open({str(pids)!r}, 'w').write(str(c.pid)); print('started', flush=True); "
              "time.sleep(600)")

    def interrupt(text: str) -> None:
        if "started" in text:
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_job([sys.executable, "-c", script], tmp_path / "log.txt", interrupt)
    time.sleep(0.2)
    assert not running(int(pids.read_text()))
    assert time.monotonic() - start < 60
    code, tail = run_job([sys.executable, "-c", "import sys; print('x'); sys.exit(3)"], tmp_path / "log.txt",
                         lambda s: None)
    assert (code, tail.strip()) == (3, "x")

    # SIGTERM on a parent without its own handler (library use) stops the job too, instead of orphaning it
    parent = (f"from pathlib import Path; from trimpi.pipeline.launch import run_job; "
              f"run_job([{sys.executable!r}, '-c', {script!r}], Path({str(tmp_path / 'log2.txt')!r}), lambda s: None)")
    pids.unlink()
    proc = subprocess.Popen([sys.executable, "-c", parent], env=env(), stderr=subprocess.PIPE, text=True)
    while not pids.is_file() or not pids.read_text():
        assert proc.poll() is None and time.monotonic() - start < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    time.sleep(0.2)
    assert not running(int(pids.read_text()))


def test_tiny_recipe_under_two_cpu_processes_end_to_end(tmp_path):
    """`trimpi run` with the ddp_cpu config: the SFT step is a 2-process job, the rest runs once; the report
    lists the same steps as the single-process run."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "accelerate": DDP_CPU}))
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "trimpi", "run", str(recipe), "--out", str(out), "--no-progress"],
                         capture_output=True, text=True, env=env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    single = run_recipe(parse_recipe(RECIPE), tmp_path / "single", dry_run=True, echo=lambda s: None)
    run = json.loads((out / "run.json").read_text())
    assert [s["id"] for s in run["steps"]] == [s["id"] for s in single["steps"]]
    assert all(s["status"] == "done" for s in run["steps"])
    sft = next(s["id"] for s in run["steps"] if s["kind"] == "sft")
    assert json.loads((out / "steps" / sft / "trimpi_stage.json").read_text())["global_step"] == 2  # 2 processes
    assert json.loads((out / "steps" / sft / "done.json").read_text())["result"]["global_step"] == 2
    assert json.loads((out / "steps" / sft / "done.json").read_text())["result"]["processes"] == 2
    assert json.loads((out / "steps" / sft / "done.json").read_text())["result"]["distributed"] == "multi_cpu"
    assert (out / "steps" / sft / "launch" / "log.txt").is_file()
    assert not any((out / "steps" / s["id"] / "launch").exists() for s in run["steps"] if s["kind"] != "sft")
    report = (out / "report.md").read_text()
    assert "CoT SFT" in report and "In-context" in report and "processes=2" in report
    assert all(s["id"] in report for s in single["steps"])


def test_resume_skips_a_checkpoint_torn_by_a_kill(tmp_path):
    """The Trainer writes trainer_state.json last: a newer checkpoint without a readable one was being saved
    when the job was killed, and the run resumes from the one before."""
    from trimpi.train.sft import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None and last_checkpoint(tmp_path) is None
    for n, state in ((1, "{}"), (2, "{}"), (3, '{"global_st'), (10, None)):
        (tmp_path / f"checkpoint-{n}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # by step number, not by name


def _stage_file(out: Path, kind: str) -> Path | None:
    found = sorted((out / "steps").glob(f"{kind}-*/checkpoints/checkpoint-2"))
    return found[0] if found else None


@pytest.mark.slow
def test_a_killed_two_process_stage_resumes_to_the_uninterrupted_result(tmp_path):
    values = {**RECIPE, "methods": ["cot_sft"], "accelerate": DDP_CPU,
              "stages": {"sft": {"max_steps": 16, "batch_size": 1, "save_steps": 1}}}
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(values))
    cmd = [sys.executable, "-m", "trimpi", "run", str(recipe), "--no-progress", "--out"]

    broken = tmp_path / "broken"
    proc = subprocess.Popen([*cmd, str(broken)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.monotonic() + 500
    while _stage_file(broken, "sft") is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C: the parent stops the job
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    sft_dir = next((broken / "steps").glob("sft-*"))
    assert not (sft_dir / "done.json").exists() and not (sft_dir / "trimpi_stage.json").exists()
    left = subprocess.run(["pgrep", "-f", str(sft_dir)], capture_output=True, text=True).stdout.split()
    assert left == [], "no process of the job is left"

    res = subprocess.run([*cmd, str(broken)], capture_output=True, text=True, env=env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(rf"^resume\s+{sft_dir.name}", res.stdout, re.M), res.stdout
    log = (sft_dir / "launch" / "log.txt").read_text()
    assert log.count("$ ") == 2  # launched twice: killed, then resumed

    clean = tmp_path / "clean"
    res = subprocess.run([*cmd, str(clean)], capture_output=True, text=True, env=env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    import torch
    from safetensors.torch import load_file

    a, b = load_file(sft_dir / "model.safetensors"), load_file(clean / "steps" / sft_dir.name / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    resumed = json.loads((sft_dir / "trimpi_stage.json").read_text())
    assert resumed["global_step"] == 16
