"""Rollout engines side by side in one process: HF generate vs vLLM (colocated, eager and compiled).

For each preset: rollout throughput (completion tokens per second of `engine.generate`, G
samples for each of P prompts, the policy-aware half included as in PolicyRollout) and the
seconds per PoRo-GRPO step of `train_rl` with each engine (median after a warm-up step; a vLLM
engine is started once, outside the timed steps, and synced every step). vLLM runs eager (its CPU
default) and compiled (`enforce_eager=False`: torch.compile, which costs time at start). fp32, CPU.

    .venv-vllm/bin/python benchmarks/rollout_engines.py [--presets micro,smol] [--out FILE]
        [--modes vllm,vllm_compiled] [--prompts P] [--g G] [--length L] [--steps S] [--calls 3]
(run it in .venv-vllm: `make setup-vllm`; `make bench-rollout` does both). --prompts/--g/--length/--steps
override every preset's shape (SHAPES) and --modes picks the vLLM columns: a toy-size run for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# preset -> (prompts per rollout, G, completion length, RL steps): smol is ~30x slower per token
SHAPES = {"micro": (4, 8, 64, 4), "smol": (2, 4, 32, 4)}
VLLM_MODES = {"vllm": True, "vllm_compiled": False}  # column -> enforce_eager


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def vowels(completions, records=None):
    """A dense reward random outputs vary on (share of vowels)."""
    return [sum(ch in "aeiou" for ch in t) / max(len(t), 1) for t in completions]


def load(preset: str):
    from test_rl_fixtures import POLICY_TEXT
    from trimpi.models.loading import load_model

    texts = [POLICY_TEXT, "According to Policy: L2-Test, what should be the response?"] * 5
    return load_model(preset, texts=texts, seed=0, device="cpu", dtype="float32")


def rollout_prompts(proc, root, records):
    from trimpi.data.schema import PolicyStore
    from trimpi.generation.prompts import PromptBuilder

    builder, store = PromptBuilder(proc, root), PolicyStore(root)
    return [builder(r) for r in records] + [builder(r, store.get(r)) for r in records]


def throughput(engine, prompts, g: int, length: int, calls: int = 3) -> tuple[float, int]:
    """(tokens per second, tokens) over `calls` generate calls, after an untimed warm-up call."""
    from trimpi.generation.engine import SamplingParams

    params = SamplingParams(max_completion_length=length, temperature=1.0)
    engine.generate(prompts[:2], 2, params)
    torch.manual_seed(0)
    start = time.perf_counter()
    groups = [group for _ in range(calls) for group in engine.generate(prompts, g, params)]
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for group in groups for c in group)
    return tokens / seconds, tokens


def rl_step_seconds(preset, column, root, records, prompts, g, length, steps, tmp) -> tuple[float, float, float]:
    """(median seconds per step after the first, median generation seconds, median completion tokens)
    of PoRo-GRPO with the engine of `column` (hf, vllm or vllm_compiled)."""
    from trimpi.train.rl.config import RLConfig
    from trimpi.train.rl.rewards import RewardSpec
    from trimpi.train.rl.trainer import train_rl

    model, proc = load(preset)
    engine = vllm_engine(model, proc, VLLM_MODES[column]) if column in VLLM_MODES else None
    cfg = RLConfig(algo="grpo", policy_rollout=True, beta=0.0, num_generations=g, prompts_per_step=prompts,
                   max_steps=steps, learning_rate=1e-5, max_completion_length=length, temperature=1.0,
                   per_device_train_batch_size=16, generation_batch_size=64, engine="hf" if engine is None else "vllm")
    rows: list[dict] = []
    try:
        train_rl(cfg, model, proc, records, root, Path(tmp) / f"{preset}-{column}", engine=engine,
                 rewards=RewardSpec({"v": vowels}, {"v": 1.0}), on_step=lambda step, row: rows.append(row))
    finally:
        if engine is not None:
            engine.close()
    timed = rows[1:] or rows
    return tuple(statistics.median(r[k] for r in timed) for k in ("step_time", "generation_time", "completion_tokens"))


def vllm_engine(model, proc, enforce_eager: bool):
    from trimpi.generation.vllm_engine import VLLMEngine, VLLMOptions

    return VLLMEngine(model, proc, VLLMOptions(max_model_len=2048, kv_cache_memory_bytes=1 << 30,
                                               enforce_eager=enforce_eager))


def shape(preset: str, args) -> tuple[int, int, int, int]:
    """(prompts, G, completion length, RL steps) of a preset, with the command line's overrides."""
    given = (args.prompts, args.g, args.length, args.steps)
    return tuple(v if v is not None else d for v, d in zip(given, SHAPES[preset]))


def bench(preset: str, tmp: Path, args) -> dict:
    from test_rl_fixtures import make_dataset
    from trimpi.data.schema import load_records
    from trimpi.generation.engine import HFGenerateEngine

    p, g, length, steps = shape(preset, args)
    modes = {m: VLLM_MODES[m] for m in args.modes}
    root = make_dataset(tmp / f"data-{preset}", n=16, with_policy_image=True)
    records = load_records(root / "train.jsonl")
    model, proc = load(preset)
    prompts = rollout_prompts(proc, root, records[:p])
    row: dict = {"preset": preset, "prompts": len(prompts), "G": g, "max_completion_length": length,
                 "steps": steps, "params": sum(x.numel() for x in model.parameters())}
    row["hf_tokens_per_s"], row["hf_tokens"] = throughput(HFGenerateEngine(model, proc, batch_size=64), prompts, g,
                                                          length, args.calls)
    for column, eager in modes.items():
        start = time.perf_counter()
        engine = vllm_engine(model, proc, eager)
        row[f"{column}_start_s"] = time.perf_counter() - start
        try:
            row[f"{column}_tokens_per_s"], row[f"{column}_tokens"] = throughput(engine, prompts, g, length,
                                                                                args.calls)
            start = time.perf_counter()
            engine.update_weights(model)
            row[f"{column}_weight_sync_s"] = time.perf_counter() - start
        finally:
            engine.close()
    for column in ("hf", *modes):
        row[f"{column}_rl_step_s"], row[f"{column}_rl_generation_s"], row[f"{column}_rl_completion_tokens"] = (
            rl_step_seconds(preset, column, root, records, p, g, length, steps, tmp))
    for column in modes:
        row[f"{column}_rollout_speedup"] = row[f"{column}_tokens_per_s"] / row["hf_tokens_per_s"]
        row[f"{column}_rl_step_speedup"] = row["hf_rl_step_s"] / row[f"{column}_rl_step_s"]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="micro,smol")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument("--modes", default=",".join(VLLM_MODES), help="vLLM columns: vllm, vllm_compiled")
    for name in ("prompts", "g", "length", "steps"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override every preset's shape")
    parser.add_argument("--calls", type=int, default=3, help="timed generate calls per throughput column")
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in args.modes if m not in VLLM_MODES]:
        parser.error(f"unknown --modes {','.join(unknown)}; expected some of {','.join(VLLM_MODES)}")
    info = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    import transformers
    import vllm

    info.update(transformers=transformers.__version__, vllm=vllm.__version__)
    print(json.dumps(info), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(preset, Path(tmp), args) for preset in args.presets.split(",")]
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
