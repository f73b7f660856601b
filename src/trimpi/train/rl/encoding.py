"""Prompts for RL: chat-templated text + images, and scoring batches (prompt + completion ids).

A `Prompt` is what a generation engine samples from and what the trainer scores against:
the chat-templated prompt text (with the model's image placeholders) and its PIL images.
Completions are kept as the token ids the engine sampled (never re-tokenized), so the
log-probs are of exactly the sampled tokens.

Scoring batches are right-padded: row i is [prompt_i tokens, completion_i tokens, padding].
With right padding every real token keeps its single-example position ids and the causal
mask hides the padding, so a padded batch gives the same log-probs as single examples,
whatever the architecture (Llama / Qwen M-RoPE) — the processor batches the pixel values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trimpi.data.schema import Policy, Record, message_images, render_messages
from trimpi.models.processing import load_image, render_text, tokenizer_of
from trimpi.train.logprobs import token_logprobs
from trimpi.train.rl.core_algos import entropy_from_logits


def to_model(inputs: dict[str, Any], model) -> dict[str, Any]:
    """Move tensors to the model's device; floating ones (pixel values) also to its dtype."""
    param = next(model.parameters())
    return {
        k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
        if isinstance(v, torch.Tensor) else v
        for k, v in inputs.items()
    }


@dataclass
class Prompt:
    """A chat-templated prompt ready for the processor."""

    text: str
    images: list[Image.Image] = field(default_factory=list)


class PromptBuilder:
    """Renders records (with or without their policy) into `Prompt`s; images are loaded once."""

    def __init__(self, processor, root: str | Path, placement: str = "system"):
        self.processor = processor
        self.root = Path(root)
        self.placement = placement
        self._images: dict[str, Image.Image] = {}

    def _image(self, path: str) -> Image.Image:
        if path not in self._images:
            self._images[path] = load_image(path)
        return self._images[path]

    def __call__(self, record: Record, policy: Policy | None = None) -> Prompt:
        messages = render_messages(record, self.root, policy=policy, placement=self.placement)
        text = render_text(self.processor, messages, add_generation_prompt=True)
        return Prompt(text=text, images=[self._image(p) for p in message_images(messages)])


def processor_inputs(processor, prompts: list[Prompt], padding_side: str) -> dict[str, torch.Tensor]:
    """Processor output (input_ids, attention_mask, pixel tensors ...) for a batch of prompts."""
    kwargs: dict[str, Any] = dict(text=[p.text for p in prompts], padding=True, return_tensors="pt")
    if any(p.images for p in prompts):
        kwargs["images"] = [p.images for p in prompts]
    tok = tokenizer_of(processor)
    old_side, tok.padding_side = tok.padding_side, padding_side
    try:
        out = dict(processor(**kwargs))
    finally:
        tok.padding_side = old_side
    out.pop("token_type_ids", None)
    return out


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
