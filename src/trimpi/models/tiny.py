"""Tiny random VLMs built from config only (no downloads): Qwen2-VL, Qwen2.5-VL, Idefics3, LLaVA.

Used by tests and as the base of the `micro` preset. Each builder returns (model, processor)
with a BPE tokenizer trained on `texts`; 112 px images give 16 image tokens (64 for LLaVA).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from trimpi.models.tokenizer import train_bpe_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "idefics3", "llava")
DEFAULT_TEXTS = ("a small red metal cube", "Policy: L2-Surinu. Case 1. Condition 1.1", "what should be the response?")


@dataclass(frozen=True)
class TinySize:
    """Widths and depths of a tiny model (text tower and vision tower)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vocab: int = 1024
    image_size: int = 112


# Tiny tokenizers are trained on a few texts and split most words into characters: a depth-6 policy
# in context runs to about 4,600 tokens.
MAX_POSITIONS = 8192


def _ids(tok) -> dict[str, int]:
    return {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def _llama_text(tok, s: TinySize) -> dict:
    return dict(
        model_type="llama", vocab_size=len(tok), hidden_size=s.hidden, num_hidden_layers=s.layers,
        num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=False, **_ids(tok),
    )


def _qwen_text(tok, s: TinySize) -> dict:
    head_dim = s.hidden // s.heads
    quarter = head_dim // 2
    section = [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]
    return dict(
        vocab_size=len(tok), hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate, max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
        tie_word_embeddings=False, **_ids(tok),
    )


def build_qwen(family: str, tok, s: TinySize):
    """Qwen2-VL or Qwen2.5-VL: patch 14, merge 2 → 16 tokens for a 112 px image."""
    from transformers import Qwen2VLImageProcessorPil

    from trimpi.models.processors import NO_VIDEO_PROCESSORS

    pixels = s.image_size * s.image_size
    improc = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, min_pixels=pixels, max_pixels=pixels)
    vision = dict(depth=s.vision_layers, num_heads=s.vision_heads, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_chans=3)
    ids = dict(
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config, Qwen2VLForConditionalGeneration as Model

        vision.update(embed_dim=s.vision_hidden, hidden_size=s.hidden, mlp_ratio=2)
    else:
        from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model

        vision.update(hidden_size=s.vision_hidden, out_hidden_size=s.hidden, intermediate_size=2 * s.vision_hidden,
                      window_size=56, fullatt_block_indexes=[s.vision_layers - 1])
    config = Config(text_config=_qwen_text(tok, s), vision_config=vision, **ids)
    processor = NO_VIDEO_PROCESSORS[family]()(image_processor=improc, tokenizer=tok, chat_template=tok.chat_template)
    return Model(config), processor


def build_idefics3(tok, s: TinySize, vision_patch: int = 14, scale_factor: int = 2):
    """Idefics3 (SmolVLM architecture): pixel shuffle ×2 → (112/14/2)² = 16 tokens per image."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    edge = {"longest_edge": s.image_size}
    improc = Idefics3ImageProcessorPil(size=edge, max_image_size=edge, do_image_splitting=False)
    vision = dict(hidden_size=s.vision_hidden, num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
                  intermediate_size=2 * s.vision_hidden, image_size=s.image_size, patch_size=vision_patch)
    config = Idefics3Config(
        text_config=_llama_text(tok, s), vision_config=vision, scale_factor=scale_factor,
        image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
    )
    seq_len = (s.image_size // vision_patch // scale_factor) ** 2
    processor = Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=seq_len,
                                  chat_template=tok.chat_template)
    return Idefics3ForConditionalGeneration(config), processor


def build_llava(tok, s: TinySize):
    """LLaVA with a CLIP vision tower: (112/14)² = 64 tokens per image."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaImageProcessorPil, LlavaProcessor

    improc = LlavaImageProcessorPil(size={"shortest_edge": s.image_size},
                                    crop_size={"height": s.image_size, "width": s.image_size})
    vision = dict(model_type="clip_vision_model", hidden_size=s.vision_hidden, num_hidden_layers=s.vision_layers,
                  num_attention_heads=s.vision_heads, intermediate_size=2 * s.vision_hidden,
                  image_size=s.image_size, patch_size=14, projection_dim=s.vision_hidden)
    config = LlavaConfig(
        text_config=_llama_text(tok, s), vision_config=vision, image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=False,
    )
    processor = LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=14, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=tok.chat_template)
    return LlavaForConditionalGeneration(config), processor


def build_tiny(family: str, texts: Iterable[str] = DEFAULT_TEXTS, size: TinySize | None = None, seed: int = 0):
    """(model, processor) of a tiny random `family` model, fp32, eval mode; deterministic for a seed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")
    size = size or TinySize()
    tok = train_bpe_tokenizer(texts, "qwen" if family.startswith("qwen") else family, vocab_size=size.vocab)
    torch.manual_seed(seed)
    if family.startswith("qwen"):
        model, processor = build_qwen(family, tok, size)
    elif family == "idefics3":
        model, processor = build_idefics3(tok, size)
    else:
        model, processor = build_llava(tok, size)
    return model.float().eval(), processor
