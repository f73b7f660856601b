"""One collator for every supervised stage: chat examples → padded tensors with a loss mask.

Mask modes:
  all_but_visual  VM-CPT: loss on every token except visual placeholders, vision boundary
                  tokens and padding (the policy text, query, reasoning and answer all count).
  completion      SFT: loss on the assistant target only (its text and end-of-turn token).
Direct SFT is `completion` on an answer-only target. In every mode the first attended token
of a row carries no label (nothing precedes it), so the labelled-token count equals the
number of predicted tokens — what Trainer's `num_items_in_batch` counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trimpi.errors import ModelError
from trimpi.models.processing import Messages, encode, render_text, tokenizer_of, visual_token_ids
from trimpi.train.logprobs import IGNORE_INDEX

MaskMode = Literal["all_but_visual", "completion"]
MASK_MODES = ("all_but_visual", "completion")


def split_completion(processor, messages: Messages) -> tuple[str, str]:
    """(full text, completion text) where the last message is the assistant target.

    The completion is what the template adds after the generation prompt: the target and
    its end-of-turn marker (trailing whitespace dropped).
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ModelError("completion mask needs conversations that end with an assistant message")
    full = render_text(processor, messages)
    prompt = render_text(processor, messages[:-1], add_generation_prompt=True)
    if not full.startswith(prompt):
        raise ModelError("chat template renders the prompt differently with and without the target")
    return full, full[len(prompt):]


def completion_length(tokenizer, row_ids: list[int], completion: str) -> int | None:
    """Number of trailing tokens of `row_ids` that encode `completion`, or None if they differ."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if ids and len(ids) <= len(row_ids) and row_ids[-len(ids):] == ids:
        return len(ids)
    return None


def mask_first_token(labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Set the label of each row's first attended token to IGNORE_INDEX (it is never predicted)."""
    first = attention_mask.long().argmax(dim=1)
    labels[torch.arange(labels.shape[0]), first] = IGNORE_INDEX
    return labels


def all_but_visual_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, visual_ids: Sequence[int]):
    """Labels = input ids, except visual / boundary tokens and padding (IGNORE_INDEX)."""
    labels = input_ids.clone()
    labels[attention_mask == 0] = IGNORE_INDEX
    if visual_ids:
        labels[torch.isin(input_ids, torch.tensor(list(visual_ids), dtype=input_ids.dtype))] = IGNORE_INDEX
    return mask_first_token(labels, attention_mask)


@dataclass
class Collator:
    """Callable for DataLoader / Trainer: features with a `messages` key → model inputs + labels.

    processor:    the model's processor (chat template, tokenizer, image processor).
    mode:         "all_but_visual" or "completion" (see module docstring).
    padding_side: "right" or "left"; results are the same either way.
    config:       the model config (more visual-token ids may be declared there).
    """

    processor: Any
    mode: MaskMode = "completion"
    padding_side: str = "right"
    config: Any = None
    visual_ids: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.mode not in MASK_MODES:
            raise ValueError(f"mode must be one of {MASK_MODES}, got {self.mode!r}")
        if not self.visual_ids:
            self.visual_ids = visual_token_ids(self.processor, self.config)

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        messages = [f["messages"] for f in features]
        if self.mode == "completion":
            pairs = [split_completion(self.processor, m) for m in messages]
            texts = [full for full, _ in pairs]
        else:
            texts = [render_text(self.processor, m) for m in messages]
        batch = dict(encode(self.processor, messages, texts=texts, padding_side=self.padding_side))
        ids, attn = batch["input_ids"], batch["attention_mask"]
        if self.mode == "all_but_visual":
            batch["labels"] = all_but_visual_labels(ids, attn, self.visual_ids)
        else:
            batch["labels"] = self._completion_labels(messages, texts, pairs, ids, attn)
        return batch

    def _completion_labels(self, messages, texts, pairs, ids, attn) -> torch.Tensor:
        labels = torch.full_like(ids, IGNORE_INDEX)
        tok = tokenizer_of(self.processor)
        for b, (_, completion) in enumerate(pairs):
            positions = attn[b].nonzero().squeeze(-1)
            row = ids[b, positions].tolist()
            n = completion_length(tok, row, completion)
            if n is None:  # tokens merge across the prompt/target boundary: measure the prompt instead
                prompt = render_text(self.processor, messages[b][:-1], add_generation_prompt=True)
                n = len(row) - int(encode(self.processor, [messages[b][:-1]], texts=[prompt])["input_ids"].shape[1])
            keep = positions[len(row) - n:]
            labels[b, keep] = ids[b, keep]
        return mask_first_token(labels, attn)
