"""Chat messages → model inputs: image loading, chat template + processor, visual-token ids.

Messages follow Hugging Face chat format with image blocks {"type": "image", "path": ...}
(see `trimpi.data.schema.render_messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trimpi.data.schema import message_images
from trimpi.errors import DataError, ModelError

Messages = list[dict[str, Any]]

# Processor attributes naming visual tokens (strings) or their ids, across families.
_TOKEN_ATTRS = ("image_token", "video_token", "fake_image_token", "global_image_tag", "boi_token", "eoi_token",
                "vision_start_token", "vision_end_token", "image_start_token", "image_end_token")
_ID_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "fake_image_token_id", "global_image_token_id",
             "vision_start_token_id", "vision_end_token_id", "boi_token_id", "eoi_token_id",
             "image_start_token_id", "image_end_token_id")


def load_image(path: str | Path):
    """Open an image as RGB; a missing or undecodable file raises a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__})") from None


def load_message_images(messages: Messages) -> list:
    """PIL images of the messages' image blocks, in order of appearance."""
    return [load_image(p) for p in message_images(messages)]


def tokenizer_of(processor):
    """The text tokenizer of a processor (or the processor itself if it is a tokenizer)."""
    return getattr(processor, "tokenizer", processor)


def render_text(processor, messages: Messages, add_generation_prompt: bool = False) -> str:
    """Chat-template text of one conversation; without a generation prompt, trailing whitespace is dropped."""
    try:
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja errors, missing template
        raise ModelError(f"chat template failed: {type(e).__name__}: {e}".splitlines()[0]) from None
    return text if add_generation_prompt else text.rstrip()


def encode(
    processor,
    messages_batch: Sequence[Messages],
    add_generation_prompt: bool = False,
    padding_side: str | None = None,
    texts: Sequence[str] | None = None,
):
    """Apply the chat template and the processor to a batch of conversations.

    Returns the processor's BatchFeature (input_ids, attention_mask, pixel_values and the
    family's image metadata), padded on `padding_side` (default: the tokenizer's).
    `texts` may pass pre-rendered template texts for the same conversations.
    """
    if texts is None:
        texts = [render_text(processor, m, add_generation_prompt) for m in messages_batch]
    images = [load_message_images(m) for m in messages_batch]
    tok = tokenizer_of(processor)
    old_side = tok.padding_side
    if padding_side is not None:
        tok.padding_side = padding_side
    try:
        kwargs: dict[str, Any] = {"text": list(texts), "return_tensors": "pt", "padding": True}
        if any(images):
            kwargs["images"] = images
        return processor(**kwargs)
    except DataError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        raise ModelError(f"processor failed: {e}".splitlines()[0]) from None
    finally:
        tok.padding_side = old_side


def _as_id(tok, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        tid = tok.convert_tokens_to_ids(value)
        return tid if isinstance(tid, int) and tid != tok.unk_token_id else None
    return None


def visual_token_ids(processor, config=None) -> list[int]:
    """Ids of image placeholder and vision boundary tokens, read from the processor and model config.

    Covers Qwen-VL (<|image_pad|>, <|vision_start|>, <|vision_end|>), Idefics3/SmolVLM (<image>,
    <fake_token_around_image>, <global-img>, <row_i_col_j>), LLaVA (<image>) and families that
    name boi/eoi tokens. Text specials (bos/eos/pad) are never included.
    """
    tok = tokenizer_of(processor)
    found: set[int] = set()
    for attr in _TOKEN_ATTRS:
        found.add(_as_id(tok, getattr(processor, attr, None)))
    for source in (processor, config):
        for attr in _ID_ATTRS:
            found.add(_as_id(tok, getattr(source, attr, None)) if source is not None else None)
    for tid in getattr(processor, "row_col_ids", None) or []:
        found.add(_as_id(tok, tid))
    text_specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    vocab = len(tok)
    return sorted(i for i in found if i is not None and 0 <= i < vocab and i not in text_specials)
