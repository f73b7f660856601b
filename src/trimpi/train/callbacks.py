"""Trainer callbacks: metrics to a JSONL file, a quiet progress bar, and a deterministic interruption.

transformers prints every logged metrics dict to the console (PrinterCallback, or the progress
bar's `write`); `quiet_console` replaces both, so the per-step numbers go to OUT/metrics.jsonl
and the bar shows the latest loss instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from trimpi.train.stage import METRICS_FILE, resume_metrics


def logged_loss(rows: list[dict]) -> tuple[float, int]:
    """(sum of per-step losses, steps covered) from metrics rows with a training `loss`: each row's
    loss is the mean over the steps since the previous logged row."""
    total, last = 0.0, 0
    for row in sorted((r for r in rows if "loss" in r), key=lambda r: r["step"]):
        total += row["loss"] * (row["step"] - last)
        last = row["step"]
    return total, last


class MetricsJsonl(TrainerCallback):
    """Append every logged metrics dict (with step and wall time) to OUT/metrics.jsonl, main process only.

    At the start of training, rows after the step the run (re)starts from are dropped, so a resumed
    run lists each step once; `train_loss` then averages the whole run, not just the resumed part.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / METRICS_FILE
        self.start = time.time()
        self.earlier: list[dict] = []
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step
        if state.is_world_process_zero:
            self.earlier = resume_metrics(self.out, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time_s": round(time.time() - self.start, 3), **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def train_loss(self, run_loss: float, global_step: int) -> float:
        """Mean per-step loss of the whole run, given the Trainer's mean over this call's steps."""
        total, steps = logged_loss(self.earlier)
        run_steps = global_step - self.start_step
        if steps == 0 or run_steps + steps == 0:
            return run_loss
        return (total + run_loss * run_steps) / (steps + run_steps)


class QuietProgress(ProgressCallback):
    """transformers' progress bar, with the latest loss in the bar instead of a printed dict per log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: f"{logs[k]:.4g}" for k in ("loss", "grad_norm", "learning_rate") if k in logs}
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)


def quiet_console(trainer, progress: bool) -> None:
    """Replace the Trainer's console printing with QuietProgress (or nothing when not `progress`)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(QuietProgress())


class InterruptAt(TrainerCallback):
    """Raise KeyboardInterrupt after `step` optimizer steps (simulates a kill; checkpoints stay)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"interrupted at step {state.global_step}")
