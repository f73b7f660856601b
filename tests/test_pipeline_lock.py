"""Fault 3: two processes on the same run directory. The second fails at once with one line naming the
first one's pid, and writes nothing (no step trains twice, no metrics row is doubled)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

RECIPE = {"name": "t", "model": "tiny:qwen2_5_vl", "methods": ["cot_sft"],
          "data": {"clevr": {"depths": [2], "policies": 2, "train_per_policy": 4, "test": 4, "cot": 2, "general": 2}}}


@contextmanager
def held(out: Path):
    """Another process holding the lock of `out` (as a running `trimpi run` does)."""
    code = (f"from trimpi.data.io import exclusive\nimport time\nwith exclusive({str(out)!r}):\n"
            "    print('ok', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_fault3_second_run_on_same_out_fails_naming_pid(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    with held(out) as pid:
        res = subprocess.run([sys.executable, "-m", "trimpi", "run", str(recipe), "--out", str(out), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {pid}" in lines[0] and str(out) in lines[0], res.stderr
    assert not (out / "run.json").exists() and not (out / "steps").exists()
