"""Batched greedy generation on any engine.

`GenerationEngine.generate` samples; greedy decoding is sampling with top_k = 1 (only the
arg-max token survives), so any engine serves evaluation and local chat clients unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from trimpi.generation.engine import Completion, GenerationEngine, SamplingParams
from trimpi.generation.prompts import Prompt


def greedy_params(max_new_tokens: int) -> SamplingParams:
    """Sampling parameters equivalent to greedy decoding."""
    return SamplingParams(max_completion_length=max_new_tokens, temperature=1.0, top_p=1.0, top_k=1)


def generate_texts(
    engine: GenerationEngine,
    prompts: Sequence[Prompt],
    batch_size: int,
    max_new_tokens: int,
    desc: str = "generating",
    progress: bool = True,
) -> list[Completion]:
    """One greedy completion per prompt, in the prompts' order.

    Prompts are batched by similar length (less padding) and sent `batch_size` at a time.
    """
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i].text), i))
    params = greedy_params(max_new_tokens)
    out: list[Completion | None] = [None] * len(prompts)
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        groups = engine.generate([prompts[i] for i in batch], 1, params)
        for i, group in zip(batch, groups, strict=True):
            out[i] = group[0]
    return [c for c in out if c is not None]
