"""Efficiency: prompt tokens and measured prefill time with vs without the policy.

Token counts are the length of the processor's `input_ids` for the chat-templated prompt
(image placeholder tokens included), counted for every evaluated record. Prefill time is the
median wall time of `repeats` forward passes over the prompt (batch of one, after one
warm-up pass), measured on the first `samples` records. Savings are
100 · (1 − without / with).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from tqdm import tqdm

from trimpi.eval.generate import model_device
from trimpi.generation.prompts import Prompt, processor_inputs, to_model


def prompt_tokens(processor, prompt: Prompt) -> int:
    """Number of input tokens the processor makes of one prompt (images expanded)."""
    return int(processor_inputs(processor, [prompt], padding_side="left")["input_ids"].shape[1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def prefill_seconds(model, processor, prompt: Prompt, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of a forward pass that fills the KV cache for one prompt."""
    device = model_device(model)
    inputs = to_model(processor_inputs(processor, [prompt], padding_side="left"), model)
    was_training = model.training
    model.eval()
    times = []
    try:
        for k in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            model(**inputs, use_cache=True)
            _sync(device)
            if k >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times)


def savings_pct(with_policy: float, without: float) -> float:
    """Percentage saved by dropping the policy: 100 · (1 − without / with)."""
    return 100.0 * (1.0 - without / with_policy) if with_policy > 0 else 0.0


def measure_rows(
    model, processor, pairs: list[tuple[str, Prompt, Prompt]], samples: int, repeats: int, progress: bool = True
) -> list[dict[str, Any]]:
    """Per record (id, prompt with policy, prompt without): token counts, and prefill times for the first `samples`."""
    rows = []
    for k, (rid, with_p, without_p) in enumerate(tqdm(pairs, desc="efficiency", disable=not progress)):
        row: dict[str, Any] = {
            "id": rid,
            "tokens_with_policy": prompt_tokens(processor, with_p),
            "tokens_without_policy": prompt_tokens(processor, without_p),
        }
        if k < samples:
            row["prefill_s_with_policy"] = prefill_seconds(model, processor, with_p, repeats)
            row["prefill_s_without_policy"] = prefill_seconds(model, processor, without_p, repeats)
        rows.append(row)
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize_efficiency(rows: list[dict[str, Any]], repeats: int, device: str) -> dict[str, Any]:
    """Mean tokens and prefill seconds with / without the policy, and the savings in percent."""
    tw = _mean([r["tokens_with_policy"] for r in rows])
    to = _mean([r["tokens_without_policy"] for r in rows])
    timed = [r for r in rows if "prefill_s_with_policy" in r]
    pw = _mean([r["prefill_s_with_policy"] for r in timed])
    po = _mean([r["prefill_s_without_policy"] for r in timed])
    return {
        "n": len(rows),
        "tokens_with_policy": tw,
        "tokens_without_policy": to,
        "token_savings_pct": savings_pct(tw, to),
        "prefill_n": len(timed),
        "prefill_repeats": repeats,
        "prefill_s_with_policy": pw,
        "prefill_s_without_policy": po,
        "prefill_savings_pct": savings_pct(pw, po) if timed else None,
        "device": device,
        "score": savings_pct(tw, to) / 100,
    }
