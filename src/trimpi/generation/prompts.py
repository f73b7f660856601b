"""Prompts: chat-templated text + images, as generation engines sample from them.

A `Prompt` is what an engine samples from and what the trainer scores against: the
chat-templated prompt text (with the model's image placeholders) and its PIL images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from trimpi.data.schema import Policy, Record, message_images, render_messages
from trimpi.models.processing import load_image, render_text, tokenizer_of


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
