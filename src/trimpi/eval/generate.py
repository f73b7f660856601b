"""Batched greedy generation for evaluation, on top of the RL generation engines.

`GenerationEngine.generate` samples; greedy decoding is sampling with top_k = 1 (only the
arg-max token survives), so any engine serves evaluation unchanged (`HFGenerateEngine` moves
the processor's tensors to the model's device and dtype itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from trimpi.data.schema import Policy, PolicyStore, Record
from trimpi.generation.engine import Completion, GenerationEngine, HFGenerateEngine, SamplingParams
from trimpi.generation.prompts import Prompt, PromptBuilder


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def make_engine(model, processor, batch_size: int) -> HFGenerateEngine:
    """An HF generate engine on `model` (its inputs follow the model's device and dtype)."""
    return HFGenerateEngine(model, processor, batch_size=batch_size)


# Generation-config fields that would bend greedy decoding away from the arg-max, and their neutral values.
NEUTRAL_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0}


def neutralize_generation_config(model) -> dict[str, object]:
    """Reset the checkpoint's shaping defaults (e.g. repetition_penalty) so decoding is plain greedy.

    Returns the values that were changed (recorded with the results)."""
    config = getattr(model, "generation_config", None)
    changed: dict[str, object] = {}
    for key, neutral in NEUTRAL_GENERATION.items():
        value = getattr(config, key, None)
        if config is not None and value not in (None, neutral):
            changed[key] = value
            setattr(config, key, neutral)
    return changed


def greedy_params(max_new_tokens: int) -> SamplingParams:
    """Sampling parameters equivalent to greedy decoding."""
    return SamplingParams(max_completion_length=max_new_tokens, temperature=1.0, top_p=1.0, top_k=1)


def build_prompts(
    builder: PromptBuilder, records: Sequence[Record], store: PolicyStore | None, override: Policy | None = None
) -> list[Prompt]:
    """Prompts for records; with a store, each record carries its own policy (or `override`)."""
    if store is None:
        return [builder(r) for r in records]
    return [builder(r, override or store.get(r)) for r in records]


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
