"""Processor subclasses for families whose stock processor needs a video processor.

torchvision is unusable here, so no video processor can be built; Qwen-VL processors refuse
`video_processor=None`. These subclasses keep an explicit `__init__` signature (from_pretrained
filters kwargs by it) without `video_processor`, which also drops it from the saved attributes.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor


class Qwen2VLImageProcessor(Qwen2VLProcessor):
    """Qwen2-VL processor without a video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):  # noqa: N801 (mirrors the transformers name)
    """Qwen2.5-VL processor without a video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def qwen3_vl_processor_class():
    """Qwen3-VL processor without a video processor (built lazily: older transformers lack it)."""
    from transformers import Qwen3VLProcessor

    class Qwen3VLImageProcessor(Qwen3VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return Qwen3VLImageProcessor


# model_type -> processor class usable without torchvision (None: the stock AutoProcessor works).
NO_VIDEO_PROCESSORS = {
    "qwen2_vl": lambda: Qwen2VLImageProcessor,
    "qwen2_5_vl": lambda: Qwen2_5_VLImageProcessor,
    "qwen3_vl": qwen3_vl_processor_class,
}
