"""Per-token log-probabilities of a batch under a model (the building block of every loss)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

IGNORE_INDEX = -100


def model_inputs(batch: Mapping) -> dict:
    """The batch without training-only keys (labels and bookkeeping)."""
    return {k: v for k, v in batch.items() if k not in ("labels", "num_items")}


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[target] per position; logits (B, T, V), targets (B, T) → (B, T)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def sequence_logprobs(model, batch: Mapping, labels: torch.Tensor | None = None, temperature: float = 1.0):
    """Per-token log-probs aligned with the input: out[b, t] = log p(input_ids[b, t] | tokens < t).

    batch: model inputs from `trimpi.models.encode` or the collator (a `labels` key is used
    when `labels` is not given). Returns (logprobs, mask), both (B, T); mask[b, t] is True where
    labels[b, t] != -100 and token t-1 is attended (without labels: every attended
    token after the first). Position 0 and
    masked positions hold 0.
    """
    if labels is None:
        labels = batch.get("labels")
    inputs = model_inputs(batch)
    ids = inputs["input_ids"]
    if labels is None:
        labels = ids.masked_fill(inputs.get("attention_mask", torch.ones_like(ids)) == 0, IGNORE_INDEX)
    out = model(**inputs, use_cache=False)
    lp = token_logprobs(out.logits[:, :-1], ids[:, 1:], temperature)
    mask = labels[:, 1:] != IGNORE_INDEX
    if "attention_mask" in inputs:  # a token with no attended predecessor (first after left pad) has no context
        mask = mask & (inputs["attention_mask"][:, :-1] != 0)
    lp = torch.cat([lp.new_zeros(lp.shape[0], 1), lp * mask], dim=1)
    mask = torch.cat([mask.new_zeros(mask.shape[0], 1), mask], dim=1)
    return lp, mask
