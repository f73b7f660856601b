"""Models: load any HF VLM or an embedded preset; chat → model inputs; visual-token ids; LoRA."""

from trimpi.models.loading import PRESETS, load_model, load_processor, save_checkpoint
from trimpi.models.processing import (
    encode,
    load_image,
    load_message_images,
    render_text,
    tokenizer_of,
    visual_token_ids,
)

__all__ = [
    "PRESETS",
    "encode",
    "load_image",
    "load_message_images",
    "load_model",
    "load_processor",
    "render_text",
    "save_checkpoint",
    "tokenizer_of",
    "visual_token_ids",
]
