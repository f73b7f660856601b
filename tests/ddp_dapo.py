"""DAPO steps under 2 processes whose dynamic sampling needs differ, counting what each process runs.

`accelerate launch --config_file configs/accelerate/ddp_cpu.yaml tests/ddp_dapo.py RL_DATA OUT` trains
STEPS steps (2 prompts per process, G = 2, micro-batches of 1 sample, β > 0 and μ = 2 so reference and
old log-probs are computed too) with rewards scripted per rank:

- rank 0: every group varied: it has its 2 groups after the first round;
- rank 1: in a round of 2 records the first group is varied, every other group is flat: it never
  finds its second group and goes on with 1 group after MAX_TRIES rounds.

Each process writes OUT/rank-R.json: the prompts of each generate call, the scoring forwards
(`update.sample_logps` calls), the backward passes and the samples it kept per step.
test_rl_lockstep.py launches it and compares the two.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

STEPS, MAX_TRIES = 2, 3


def scripted_rewards(rank: int):
    from trimpi.train.rl.rewards import RewardSpec

    def scripted(completions, records):
        pairs = len(completions) // 2  # G = 2 samples per record, in record order
        varied = [rank == 0 or (i == 0 and pairs == 2) for i in range(pairs)]
        return [float(k) if v else 0.5 for v in varied for k in range(2)]

    return RewardSpec({"scripted": scripted}, {"scripted": 1.0})


class CountingEngine:
    """An engine that records the number of prompts of each generate call of the one it wraps."""

    shares_weights = True

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def update_weights(self, model) -> None:
        self.engine.update_weights(model)

    def generate(self, prompts, n, params):
        self.calls.append(len(prompts))
        return self.engine.generate(prompts, n, params)

    def close(self) -> None:
        pass


def main(rl_root: Path, out: Path) -> None:
    from test_rl_fixtures import tiny_model

    from trimpi.data.schema import load_records
    from trimpi.generation.engine import HFGenerateEngine
    from trimpi.train.rl import trainer, update
    from trimpi.train.rl.config import RLConfig

    acc = trainer.make_accelerator()
    assert acc.num_processes == 2, "launch this with 2 processes"
    counts = {"logps": 0, "backward": 0, "kept": []}

    def counted(fn, key):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    def kept(samples, *args):
        counts["kept"].append(len(samples))
        return make_batch(samples, *args)

    make_batch = trainer.make_batch
    update.sample_logps = counted(update.sample_logps, "logps")
    trainer.make_batch = kept
    acc.backward = counted(acc.backward, "backward")
    model, proc = tiny_model()
    engine = CountingEngine(HFGenerateEngine(model, proc))
    cfg = RLConfig(algo="dapo", num_generations=2, prompts_per_step=4, max_steps=STEPS,
                   dynamic_sampling_max_tries=MAX_TRIES, beta=0.04, num_iterations=2, per_device_train_batch_size=1,
                   max_completion_length=4, learning_rate=1e-2)
    rows = []
    trainer.train_rl(cfg, model, proc, load_records(rl_root / "train.jsonl"), rl_root, out / "run",
                     rewards=scripted_rewards(acc.process_index), engine=engine, accelerator=acc,
                     on_step=lambda step, row: rows.append(row))
    result = {"generate": engine.calls, **counts, "tries": [r["dynamic_sampling/tries"] for r in rows]}
    (out / f"rank-{acc.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
