"""Trainer callbacks: a metrics JSONL file and a deterministic interruption (for resume tests)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class MetricsJsonl(TrainerCallback):
    """Append every logged metrics dict (with step and wall time) to a JSONL file, main process only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time_s": round(time.time() - self.start, 3), **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")


class InterruptAt(TrainerCallback):
    """Raise KeyboardInterrupt after `step` optimizer steps (simulates a kill; checkpoints stay)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"interrupted at step {state.global_step}")
