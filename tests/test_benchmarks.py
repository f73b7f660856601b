"""Every benchmark script runs at toy size (seconds), so a change that breaks one is noticed."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny matrices on a shared machine: one thread is fastest


def run(script: str, *args: str, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def fails(script: str, *args: str, cwd: Path) -> str:
    """The one-line message of a benchmark that refuses its arguments."""
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return done.stderr.strip()


def test_eye_compare_scores_every_design_at_equal_cpu(tmp_path):
    out = tmp_path / "eyes.jsonl"
    run("eye_compare.py", "--designs", "siglip,convnext", "--budget", "0.5", "--train", "16", "--test", "12",
        "--workers", "1", "--cache", str(tmp_path / "pools"), "--out", str(out), cwd=tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["design"] for r in rows} == {"siglip", "convnext"} and len(rows) == 8  # a point per quarter
    for r in rows:
        assert r["train_cpu_s"] >= 0.5 * {0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0}[rows.index(r) % 4] - 1e-6
        assert 0 <= r["single"] <= 1 and r["images"] == 12 and r["tokens"] == (16 if r["design"] == "siglip" else 20)
        assert set(r["by_count"]) == {f"{k} {b}" for k in ("color", "shape", "size", "material")
                                      for b in ("1-3", "4-6", "7-10")}
        assert all(0 <= v <= 1 for rates in r["by_count"].values() for v in rates)


def test_rl_speed_times_every_repeat_of_grpo_and_policy_rollout(tmp_path):
    out = tmp_path / "rl.json"
    text = run("rl_speed.py", "--steps", "2", "--warmup", "1", "--g", "2", "--prompts", "1", "--length", "8",
               "--repeats", "2", "--threads", "1", "--out", str(out), cwd=tmp_path)
    res = json.loads(out.read_text())
    assert json.loads(text[text.index("{\n"):]) == res and res["repeats"] == 2  # logs may come before it and res["threads"] == 1
    for name in ("ours_grpo", "ours_poro") + (("trl_grpo",) if "trl_version" in res else ()):
        assert 0 < res[f"{name}_s_per_step"] < 60, name  # a median after warm-up: not NaN
        assert 0 < res[f"{name}_mean_len"] <= 8, name
    assert math.isclose(res["ratio_poro_over_grpo"], res["ours_poro_s_per_step"] / res["ours_grpo_s_per_step"])


def test_import_speed_imports_every_record_by_copy_and_by_link(tmp_path):
    lines = [json.loads(line) for line in run("import_speed.py", "--records", "6", "--size", "32x24", "--workers", "1",
                                              cwd=tmp_path).splitlines()]
    assert [r["mode"] for r in lines] == ["copy", "link"]
    assert all(r["records"] == 6 and r["images"] == 6 and r["wall_s"] >= 0 and r["records_per_s"] > 0 for r in lines)
    overhead = json.loads(run("import_speed.py", "--records", "4", "--size", "32x24", "--workers", "1",
                              "--checks-overhead", "--repeats", "2", cwd=tmp_path))
    assert len(overhead["runs_on_s"]) == len(overhead["runs_off_s"]) == 2
    assert math.isclose(overhead["overhead_s"], overhead["checks_on_s"] - overhead["checks_off_s"], abs_tol=0.011)


def test_render_times_the_numpy_renderer_without_blender(tmp_path):
    text = run("render.py", "--no-blender", "--scenes", "2", "--pool", "2", "--size", "160x120", cwd=tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| numpy")]
    assert len(rows) == 3 and "Blender not run (--no-blender)" in text and "Cycles" not in text
    for row in rows:
        images, wall, cpu = (row.split("|")[k].strip() for k in (2, 3, 4))
        assert int(images) == 2 and float(wall) > 0 and float(cpu) > 0, row
    missing = fails("render.py", "--blender-python", str(tmp_path / "none"), "--scenes", "2", cwd=tmp_path)
    assert "--no-blender" in missing and len(missing.splitlines()) == 1
    assert "--record" in fails("render.py", "--no-blender", "--record", cwd=tmp_path)


def test_vision_ceiling_scores_each_design_on_a_setting(dataset, tmp_path):
    out = tmp_path / "ceiling.json"
    text = run("vision_ceiling.py", "--data", str(dataset), "--steps", "2", "--eval-scenes", "4", "--batch-size",
               "4", "--designs", "112/14,112/28", "--out", str(out), cwd=tmp_path, env=ONE_THREAD)
    res = json.loads(out.read_text())
    assert [r["design"] for r in res["rows"]] == ["112 px / patch 14", "112 px / patch 28"]
    assert res["rows"][0]["image_tokens"] > res["rows"][1]["image_tokens"]
    for r in res["rows"]:
        assert r["steps"] == 2 and r["eval_images"] == 4 and r["probe_policy_records"] > 0
        assert all(0 <= r[k] <= 1 for k in ("single_balanced_accuracy", "pair_balanced_accuracy",
                                            "probe_policy_accuracy"))
    assert f"majority-case accuracy {res['majority']:.3f}" in text and text.count("| 112 px") == 2


def test_micro_base_dry_run_prints_builds_the_cli_accepts(tmp_path):
    """Each printed build is parsed by trimpi's own command line (running them takes minutes)."""
    text = run("micro_base.py", "--dry-run", "--test", "2", "--out", str(tmp_path / "eval"),
               "--blender-python", "bpy-python", "--clevr-dir", str(tmp_path / "CLEVR"), cwd=tmp_path)
    commands = [shlex.split(line[2:]) for line in text.splitlines() if line.startswith("$ ")]
    builds = [c for c in commands if c[3] == "data"]
    outs = [c[c.index("--out") + 1] for c in builds]
    assert [Path(o).name for o in outs] == ["numpy-T", "numpy-M", "blender-T", "clevr-T"]
    assert not (tmp_path / "eval").exists()  # a dry run builds nothing
    for c in builds:
        assert c[1:4] == ["-m", "trimpi", "data"] and c[c.index("--test") + 1] == "2"
        assert parse_cli(c[3:])["seed"] == 2026
    evals = [c for c in commands if c[3] == "eval"]  # after each build: perception once, then every setting
    assert len(evals) == 2 * len(builds) and [c[c.index("--protocols") + 1] for c in evals[:2]] == \
        ["perception", "in_context,forgetting"]
    for c in evals:
        assert parse_cli(c[3:])["model"] == "src/trimpi/models/base"


def parse_cli(argv: list[str]) -> dict:
    """The parameters trimpi's command line would call a subcommand with (nothing runs)."""
    import typer

    from trimpi.cli import app

    command, ctx = typer.main.get_command(app), None
    while argv and hasattr(command, "get_command"):
        ctx = command.make_context(command.name or "trimpi", [argv[0]], parent=ctx, resilient_parsing=True)
        command, argv = command.get_command(ctx, argv[0]), argv[1:]
        assert command is not None
    return command.make_context(command.name, list(argv), parent=ctx).params
