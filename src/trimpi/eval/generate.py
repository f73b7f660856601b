"""Generation for evaluation: the engine, plain-greedy generation configs, prompts with or without policy.

The batched greedy decoding itself is `trimpi.generation.greedy.generate_texts` (shared with the
local chat client); `HFGenerateEngine` moves the processor's tensors to the model's device and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trimpi.data.schema import Policy, PolicyStore, Record
from trimpi.generation.engine import GenerationEngine
from trimpi.generation.prompts import Prompt, PromptBuilder
from trimpi.generation.registry import build_engine


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def make_engine(model, processor, batch_size: int, engine: str = "hf", max_images: int | None = None,
                vllm_options=None) -> GenerationEngine:
    """A generation engine on `model`: HF generate (its inputs follow the model's device and dtype) or vLLM
    (`vllm_options`: its `VLLMOptions`, with room for `max_images` images per prompt)."""
    return build_engine(engine, model, processor, batch_size, vllm_options, max_images=max_images)


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


def build_prompts(
    builder: PromptBuilder, records: Sequence[Record], store: PolicyStore | None, override: Policy | None = None
) -> list[Prompt]:
    """Prompts for records; with a store, each record carries its own policy (or `override`)."""
    if store is None:
        return [builder(r) for r in records]
    return [builder(r, override or store.get(r)) for r in records]
