"""cpt and sft run to completion under `accelerate launch` with 2 CPU processes (DDP, gloo).

configs/accelerate/ddp_cpu.yaml starts two real ranks; `--cpu --num_processes 2` runs too but
accelerate starts a single process for it without an MPI launcher.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._fixtures_train import write_dataset
from trimpi.models import save_checkpoint
from trimpi.models.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[1]


def _launch(stage_args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"),
           "-m", "trimpi", "train", *stage_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}  # this checkout's trimpi
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_cpt_then_sft_under_two_cpu_processes(tmp_path):
    data = write_dataset(tmp_path / "data", n=8)
    model, processor = build_tiny("idefics3")
    save_checkpoint(model, processor, tmp_path / "base")
    common = ["--data", str(data), "--batch-size", "2", "--grad-accum", "2", "--save-steps", "1", "--lr", "1e-3"]
    res = _launch(["cpt", "--model", str(tmp_path / "base"), "--out", str(tmp_path / "cpt"), "--epochs", "1", *common])
    assert res.returncode == 0, res.stderr[-3000:]
    res = _launch(["sft", "--model", str(tmp_path / "cpt"), "--out", str(tmp_path / "sft"), "--lora-rank", "4",
                   "--max-steps", "2", *common])
    assert res.returncode == 0, res.stderr[-3000:]
    for stage, steps in (("cpt", 1), ("sft", 2)):  # 8 examples / (2 per process x 2 processes x 2 accum) = 1 step
        summary = json.loads((tmp_path / stage / "trimpi_stage.json").read_text())
        assert summary["global_step"] == steps
        assert (tmp_path / stage / "model.safetensors").is_file()
    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "sft")
    assert not any("lora" in k for k in merged.state_dict())
