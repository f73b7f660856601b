"""Tiny random VLMs built from config only (no downloads): Qwen2-VL, Qwen2.5-VL, Idefics3, LLaVA, FastVLM.

Used by tests and as the base of the `micro` presets. Each builder returns (model, processor)
with a BPE tokenizer trained on `texts`; 112 px images give 16 image tokens (64 for LLaVA); FastVLM
takes a convolutional eye (a native ResNet) at a non-square size, one token per cell of its last stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from trimpi.models.tokenizer import train_bpe_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "idefics3", "llava", "fast_vlm")
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


@dataclass(frozen=True)
class ConvEye:
    """A convolutional eye from transformers' own vision models, one block per stage by default.

    kind "convnext" (LayerNorm: an image's features never depend on the rest of its batch, so
    padded batches, micro-batch splits and RL's recomputed log-probs agree) or "resnet"
    (BatchNorm: train-mode outputs depend on the batch; kept for comparisons). The stem divides
    the input by 4, every stage after the first by 2: a width×height input gives
    (width/stride) × (height/stride) image tokens, stride = 2^(stages+1)."""

    width: int = 160
    height: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    kind: str = "convnext"

    @property
    def stride(self) -> int:
        return 2 ** (len(self.widths) + 1)

    @property
    def tokens(self) -> int:
        return (self.width // self.stride) * (self.height // self.stride)

    @property
    def grid(self) -> tuple[int, int]:
        """(columns, rows) of image tokens."""
        return self.width // self.stride, self.height // self.stride

    def check(self) -> None:
        if self.kind not in ("convnext", "resnet"):
            raise ValueError(f"eye kind {self.kind!r}: expected convnext or resnet")
        if len(self.depths) != len(self.widths):
            raise ValueError(f"eye: {len(self.widths)} widths but {len(self.depths)} depths")
        if self.width % self.stride or self.height % self.stride:
            raise ValueError(f"eye input {self.width}x{self.height}: both sides must be multiples of {self.stride} "
                             f"({len(self.widths)} stages)")

    def vision_config(self):
        from transformers import ConvNextConfig, ResNetConfig

        if self.kind == "convnext":
            config = ConvNextConfig(num_channels=3, patch_size=4, num_stages=len(self.widths),
                                    hidden_sizes=list(self.widths), depths=list(self.depths), hidden_act="gelu",
                                    layer_scale_init_value=0.0, drop_path_rate=0.0)
        else:
            config = ResNetConfig(num_channels=3, embedding_size=self.widths[0], hidden_sizes=list(self.widths),
                                  depths=list(self.depths), layer_type="basic", hidden_act="relu",
                                  downsample_in_first_stage=False)
        config.hidden_size = self.widths[-1]  # what FastVLM's projector reads
        return config


TINY_EYE = ConvEye(width=128, height=96, widths=(8, 16, 32, 64))


def _qwen2_text(tok, s: TinySize) -> dict:
    return dict(model_type="qwen2", vocab_size=len(tok), hidden_size=s.hidden, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate,
                max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=False, **_ids(tok))


def build_fastvlm(tok, s: TinySize, eye: ConvEye = TINY_EYE):
    """FastVLM (LLaVA-style: eye → MLP projector → Qwen2) with a native transformers CNN as its eye.

    The image processor resizes to exactly eye.width × eye.height (no centre crop: CLEVR-like scenes
    keep their sides) and the processor's patch size is the eye's stride, so it counts the same
    image tokens as the eye's feature map has cells."""
    from transformers import CLIPImageProcessorPil, FastVlmConfig, FastVlmForConditionalGeneration, LlavaProcessor

    eye.check()
    config = FastVlmConfig(vision_config=eye.vision_config(), text_config=_qwen2_text(tok, s),
                           image_token_id=tok.convert_tokens_to_ids("<image>"), image_seq_length=eye.tokens)
    shape = {"height": eye.height, "width": eye.width}
    improc = CLIPImageProcessorPil(size=shape, crop_size=shape, do_center_crop=False)
    processor = LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=eye.stride,
                               num_additional_image_tokens=0, vision_feature_select_strategy="full",
                               chat_template=tok.chat_template)
    return FastVlmForConditionalGeneration(config), processor


def build_tiny(family: str, texts: Iterable[str] = DEFAULT_TEXTS, size: TinySize | None = None, seed: int = 0):
    """(model, processor) of a tiny random `family` model, fp32, eval mode; deterministic for a seed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {FAMILIES}")
    size = size or TinySize()
    tok_family = "qwen" if family.startswith("qwen") else "llava" if family == "fast_vlm" else family
    tok = train_bpe_tokenizer(texts, tok_family, vocab_size=size.vocab)
    torch.manual_seed(seed)
    if family.startswith("qwen"):
        model, processor = build_qwen(family, tok, size)
    elif family == "idefics3":
        model, processor = build_idefics3(tok, size)
    elif family == "fast_vlm":
        model, processor = build_fastvlm(tok, size)
    else:
        model, processor = build_llava(tok, size)
    return model.float().eval(), processor
