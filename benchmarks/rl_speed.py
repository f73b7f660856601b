"""RL step time, side by side in one process: our GRPO vs TRL's GRPOTrainer, and PolicyRollout
vs plain GRPO at equal samples per step.

Same model (the `micro` preset when available, otherwise an Idefics3 of the same size built
from config), same data, same G, same completion length, same reward, β = 0, loss_type dapo,
fp32. Reports the median seconds per optimizer step after warm-up steps.

    .venv/bin/python benchmarks/rl_speed.py [--steps 8] [--warmup 2] [--length 64] [--repeats 2] [--out FILE]
(needs `pip install trl` for the TRL column; it is skipped when trl is missing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def vowels(completions, records=None, **kwargs):
    """Dense reward that a random model's outputs vary on (share of vowels)."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [sum(ch in "aeiou" for ch in t) / max(len(t), 1) for t in texts]


def build_model(seed: int = 0):
    from test_rl_fixtures import POLICY_TEXT

    from trimpi.models.tiny import TinySize, build_tiny

    texts = [POLICY_TEXT, "According to Policy: L2-Test, what should be the response?"] * 5
    try:
        from trimpi.models.loading import load_model

        model, proc = load_model("micro", texts=texts, seed=seed, device="cpu")
        return model.float(), proc, "micro preset"
    except Exception:  # noqa: BLE001 - preset not available: same-size Idefics3 from config
        size = TinySize(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=512, vision_hidden=128,
                        vision_layers=4, vision_heads=4, vocab=2048)
        model, proc = build_tiny("idefics3", texts=texts, size=size, seed=seed)
        return model, proc, "Idefics3 256d/4L text, 128d/4L vision (micro-sized, from config)"


def time_ours(root, records, prompts, g, length, steps, policy_rollout, tmp, repeat=0):
    from trimpi.train.rl.config import RLConfig
    from trimpi.train.rl.rewards import RewardSpec
    from trimpi.train.rl.trainer import train_rl

    model, proc, _ = build_model()
    times, lengths = [], []
    cfg = RLConfig(algo="grpo", beta=0.0, policy_rollout=policy_rollout, num_generations=g, prompts_per_step=prompts,
                   max_steps=steps, learning_rate=1e-5, max_completion_length=length,
                   per_device_train_batch_size=prompts * g * (2 if policy_rollout else 1), generation_batch_size=64)
    train_rl(cfg, model, proc, records, root, Path(tmp) / f"ours-{policy_rollout}-{repeat}",
             rewards=RewardSpec({"v": lambda c, r: vowels(c)}, {"v": 1.0}),
             on_step=lambda s, row: (times.append(row["step_time"]), lengths.append(row["completions/mean_length"])))
    return times, lengths


def time_trl(root, records, prompts, g, length, steps, tmp, repeat=0):
    from datasets import Dataset
    from PIL import Image
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, proc, _ = build_model()
    rows = [{"prompt": [{"role": "user", "content": r.query}], "image": Image.open(root / r.images[0]).convert("RGB")}
            for r in records]
    ds = Dataset.from_list(rows * 50)
    stamps, lengths = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    cfg = GRPOConfig(output_dir=str(Path(tmp) / f"trl-{repeat}"), per_device_train_batch_size=prompts * g, num_generations=g,
                     max_completion_length=length, max_steps=steps, learning_rate=1e-5, use_cpu=True, bf16=False,
                     beta=0.0, loss_type="dapo", report_to="none", save_strategy="no", logging_steps=1,
                     temperature=1.0, top_k=0, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[vowels], args=cfg, train_dataset=ds, processing_class=proc,
                          callbacks=[Clock()])
    start = [time.perf_counter()]

    class Start(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if len(start) == len(stamps) + 1:
                start[-1] = time.perf_counter()
            else:
                start.append(time.perf_counter())

    trainer.add_callback(Start())
    trainer.train()
    return [e - s for s, e in zip(start, stamps)], lengths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--g", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from test_rl_fixtures import make_dataset

    from trimpi.data.schema import load_records

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "data", n=8, with_policy_image=True)
        records = load_records(root / "train.jsonl")
        _, _, desc = build_model()
        res: dict = {"model": desc, "prompts_per_step": args.prompts, "G": args.g, "max_completion_length": args.length,
                     "steps": args.steps, "warmup": args.warmup, "threads": torch.get_num_threads(),
                     "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads",
                     "torch": torch.__version__, "repeats": args.repeats, "load_average_start": list(os.getloadavg())}

        def med(ts):
            return statistics.median(ts[args.warmup:]) if len(ts) > args.warmup else float("nan")

        # Interleaved repeats; each configuration keeps its best (lowest) median: the machine is shared.
        best: dict[str, list] = {}

        def keep(name, ts, lens):
            value = med(ts)
            if name not in best or value < best[name][0]:
                best[name] = [value, statistics.mean(lens) if lens else None]

        try:
            import trl

            res["trl_version"] = trl.__version__
        except ImportError:
            trl = None
        for repeat in range(args.repeats):  # each repeat trains into its own stage directory
            keep("ours_grpo", *time_ours(root, records, args.prompts, args.g, args.length, args.steps, False, tmp,
                                         repeat))
            if trl is not None:
                keep("trl_grpo", *time_trl(root, records, args.prompts, args.g, args.length, args.steps, tmp, repeat))
            # PolicyRollout at equal samples per step: G/2 plain + G/2 policy-aware per prompt.
            keep("ours_poro", *time_ours(root, records, args.prompts, args.g // 2, args.length, args.steps, True, tmp,
                                         repeat))
        for name, (value, mean_len) in best.items():
            res[f"{name}_s_per_step"], res[f"{name}_mean_len"] = value, mean_len
        if trl is not None:
            res["ratio_ours_over_trl"] = res["ours_grpo_s_per_step"] / res["trl_grpo_s_per_step"]
        res["ratio_poro_over_grpo"] = res["ours_poro_s_per_step"] / res["ours_grpo_s_per_step"]
        res["load_average_end"] = list(os.getloadavg())
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
