"""Scoring batches for RL: prompt + sampled completion ids, and their per-token log-probs.

Completions are kept as the token ids the engine sampled (never re-tokenized), so the
log-probs are of exactly the sampled tokens.

Scoring batches are right-padded: row i is [prompt_i tokens, completion_i tokens, padding].
With right padding every real token keeps its single-example position ids and the causal
mask hides the padding, so a padded batch gives the same log-probs as single examples,
whatever the architecture (Llama / Qwen M-RoPE) — the processor batches the pixel values.
"""

from __future__ import annotations

import torch

from trimpi.generation.prompts import Prompt, processor_inputs
from trimpi.train.logprobs import token_logprobs
from trimpi.train.rl.core_algos import entropy_from_logits


def scoring_batch(
    processor, prompts: list[Prompt], completions: list[list[int]], pad_token_id: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Model inputs for prompt_i + completion_i, plus where the completion tokens sit.

    Returns (inputs, positions, completion_ids): inputs for model(**inputs) with input_ids and
    attention_mask of shape (N, L); positions (N, T) index of the logit that predicts each
    completion token (clamped to 0 on padding); completion_ids (N, T) right-padded with
    pad_token_id. T = longest completion.
    """
    enc = processor_inputs(processor, prompts, padding_side="right")
    prompt_lens = enc["attention_mask"].sum(-1).tolist()
    n = len(prompts)
    t = max((len(c) for c in completions), default=0)
    length = max(int(pl) + len(c) for pl, c in zip(prompt_lens, completions))
    input_ids = torch.full((n, length), pad_token_id, dtype=enc["input_ids"].dtype)
    attention = torch.zeros((n, length), dtype=enc["attention_mask"].dtype)
    positions = torch.zeros((n, t), dtype=torch.long)
    comp = torch.full((n, t), pad_token_id, dtype=torch.long)
    for i, (pl, c) in enumerate(zip(prompt_lens, completions)):
        pl = int(pl)
        input_ids[i, :pl] = enc["input_ids"][i, :pl]
        input_ids[i, pl : pl + len(c)] = torch.tensor(c, dtype=input_ids.dtype)
        attention[i, : pl + len(c)] = 1
        positions[i, : len(c)] = torch.arange(pl - 1, pl - 1 + len(c))
        comp[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    # per-token side inputs aligned with input_ids (e.g. Qwen's mm_token_type_ids): completion tokens get 0
    for key, value in list(enc.items()):
        if key in ("input_ids", "attention_mask") or not torch.is_tensor(value):
            continue
        if value.dim() == 2 and value.shape == enc["input_ids"].shape:
            wide = torch.zeros((n, length), dtype=value.dtype)
            for i, pl in enumerate(prompt_lens):
                wide[i, : int(pl)] = value[i, : int(pl)]
            enc[key] = wide
    enc["input_ids"], enc["attention_mask"] = input_ids, attention
    return enc, positions, comp


def completion_mask(completions: list[list[int]]) -> torch.Tensor:
    """(N, T) float mask: 1 on each completion's tokens, 0 on right padding."""
    t = max((len(c) for c in completions), default=0)
    mask = torch.zeros(len(completions), t)
    for i, c in enumerate(completions):
        mask[i, : len(c)] = 1.0
    return mask


def completion_logps(
    model, inputs: dict[str, torch.Tensor], positions: torch.Tensor, completion_ids: torch.Tensor,
    temperature: float = 1.0, with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (N, T) of completion_ids under the model (logits / temperature),
    and optionally the per-token entropy (N, T), computed without gradient."""
    logits = model(**inputs, use_cache=False).logits  # (N, L, V)
    idx = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    picked = logits.gather(1, idx)  # (N, T, V)
    logps = token_logprobs(picked, completion_ids, temperature)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(picked.detach().float() / temperature)
    return logps, entropy
