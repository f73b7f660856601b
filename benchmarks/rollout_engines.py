"""Rollout engines side by side in one process: HF generate vs vLLM (colocated), on the presets.

For each preset: rollout throughput (completion tokens per second of `engine.generate`, G
samples for each of P prompts, the policy-aware half included as in PolicyRollout) and the
seconds per PoRo-GRPO step of `train_rl` with each engine (median after a warm-up step; the
vLLM engine is started once, outside the timed steps, and synced every step). fp32, CPU.

    .venv-vllm/bin/python benchmarks/rollout_engines.py [--presets micro,smol] [--out FILE]
(run it in .venv-vllm: `make setup-vllm`; `make bench-rollout` does both)
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
SHAPES = {"micro": (4, 8, 64, 3), "smol": (2, 4, 32, 3)}


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


def throughput(engine, prompts, g: int, length: int) -> tuple[float, int]:
    """(tokens per second, tokens) of one generate call, after an untimed warm-up call."""
    from trimpi.generation.engine import SamplingParams

    params = SamplingParams(max_completion_length=length, temperature=1.0)
    engine.generate(prompts[:2], 2, params)
    torch.manual_seed(0)
    start = time.perf_counter()
    groups = engine.generate(prompts, g, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for group in groups for c in group)
    return tokens / seconds, tokens


def rl_step_seconds(preset, engine_name, root, records, prompts, g, length, steps, tmp) -> tuple[float, float]:
    """(median seconds per step after the first, median generation seconds) of PoRo-GRPO."""
    from trimpi.train.rl.config import RLConfig
    from trimpi.train.rl.rewards import RewardSpec
    from trimpi.train.rl.trainer import train_rl

    model, proc = load(preset)
    engine = None
    if engine_name == "vllm":
        engine = vllm_engine(model, proc)
    cfg = RLConfig(algo="grpo", policy_rollout=True, beta=0.0, num_generations=g, prompts_per_step=prompts,
                   max_steps=steps, learning_rate=1e-5, max_completion_length=length, temperature=1.0,
                   per_device_train_batch_size=16, generation_batch_size=64, engine=engine_name)
    rows: list[dict] = []
    try:
        train_rl(cfg, model, proc, records, root, Path(tmp) / f"{preset}-{engine_name}", engine=engine,
                 rewards=RewardSpec({"v": vowels}, {"v": 1.0}), on_step=lambda step, row: rows.append(row))
    finally:
        if engine is not None:
            engine.close()
    timed = rows[1:] or rows
    return statistics.median(r["step_time"] for r in timed), statistics.median(r["generation_time"] for r in timed)


def vllm_engine(model, proc):
    from trimpi.generation.vllm_engine import VLLMEngine, VLLMOptions

    return VLLMEngine(model, proc, VLLMOptions(max_model_len=2048, kv_cache_memory_bytes=1 << 30))


def bench(preset: str, tmp: Path) -> dict:
    from test_rl_fixtures import make_dataset
    from trimpi.data.schema import load_records
    from trimpi.generation.engine import HFGenerateEngine

    p, g, length, steps = SHAPES[preset]
    root = make_dataset(tmp / f"data-{preset}", n=16, with_policy_image=True)
    records = load_records(root / "train.jsonl")
    model, proc = load(preset)
    prompts = rollout_prompts(proc, root, records[:p])
    row: dict = {"preset": preset, "prompts": len(prompts), "G": g, "max_completion_length": length,
                 "params": sum(x.numel() for x in model.parameters())}
    row["hf_tokens_per_s"], row["hf_tokens"] = throughput(HFGenerateEngine(model, proc, batch_size=64), prompts, g,
                                                          length)
    start = time.perf_counter()
    engine = vllm_engine(model, proc)
    row["vllm_start_s"] = time.perf_counter() - start
    try:
        row["vllm_tokens_per_s"], row["vllm_tokens"] = throughput(engine, prompts, g, length)
        start = time.perf_counter()
        engine.update_weights(model)
        row["vllm_weight_sync_s"] = time.perf_counter() - start
    finally:
        engine.close()
    for name in ("hf", "vllm"):
        row[f"{name}_rl_step_s"], row[f"{name}_rl_generation_s"] = rl_step_seconds(
            preset, name, root, records, p, g, length, steps, tmp)
    row["rollout_speedup"] = row["vllm_tokens_per_s"] / row["hf_tokens_per_s"]
    row["rl_step_speedup"] = row["hf_rl_step_s"] / row["vllm_rl_step_s"]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="micro,smol")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    info = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    import transformers
    import vllm

    info.update(transformers=transformers.__version__, vllm=vllm.__version__)
    print(json.dumps(info), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(preset, Path(tmp)) for preset in args.presets.split(",")]
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
