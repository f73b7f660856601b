"""Model loading: tiny families round-trip through save_pretrained / Auto classes, presets, errors."""

import pytest
import torch

from trimpi.errors import DataError, ModelError
from trimpi.models import encode, load_image, load_model, save_checkpoint, visual_token_ids
from trimpi.models.tiny import FAMILIES, build_tiny


def _conv(train_data, i=0):
    return [{"role": "user", "content": [{"type": "image", "path": str(train_data / "images" / f"img_{i}.png")},
                                         {"type": "text", "text": "what is there?"}]}]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_round_trip(family, train_data, tmp_path):
    model, processor = build_tiny(family)
    save_checkpoint(model, processor, tmp_path / "ck")
    model2, processor2 = load_model(tmp_path / "ck")
    assert next(model2.parameters()).dtype == torch.float32
    b1, b2 = encode(processor, [_conv(train_data)], True), encode(processor2, [_conv(train_data)], True)
    assert torch.equal(b1["input_ids"], b2["input_ids"])
    with torch.no_grad():
        assert torch.allclose(model(**b1).logits, model2(**b2).logits, atol=1e-6)
    assert visual_token_ids(processor2, model2.config) == visual_token_ids(processor, model.config)


@pytest.mark.parametrize("family", ["idefics3", "llava"])
def test_auto_classes_load_stock_families(family, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = build_tiny(family)
    save_checkpoint(model, processor, tmp_path / "ck")
    assert type(AutoModelForImageTextToText.from_pretrained(tmp_path / "ck")) is type(model)
    assert type(AutoProcessor.from_pretrained(tmp_path / "ck")) is type(processor)


def test_visual_token_ids_per_family():
    expect = {"qwen2_vl": {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"},
              "idefics3": {"<image>", "<fake_token_around_image>", "<global-img>"}, "llava": {"<image>"}}
    for family, names in expect.items():
        model, processor = build_tiny(family)
        ids = visual_token_ids(processor, model.config)
        assert set(processor.tokenizer.convert_ids_to_tokens(ids)) == names


def test_micro_preset(train_data, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = load_model("micro", data=train_data)
    n = sum(p.numel() for p in model.parameters())
    assert 3e6 < n < 8e6
    batch = encode(processor, [_conv(train_data)], add_generation_prompt=True)
    assert (batch["input_ids"] == processor.image_token_id).sum() == 16
    assert processor.tokenizer.encode("Case 1") and "L2-Surinu" in processor.tokenizer.decode(
        processor.tokenizer.encode("L2-Surinu"))
    save_checkpoint(model, processor, tmp_path / "micro")
    AutoModelForImageTextToText.from_pretrained(tmp_path / "micro")
    assert AutoProcessor.from_pretrained(tmp_path / "micro").image_seq_len == 16


def test_load_errors_are_one_line(tmp_path, train_data):
    for name in ("no-such-org/no-such-model", str(tmp_path)):
        with pytest.raises(ModelError) as e:
            load_model(name)
        assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="--data"):
        load_model("micro")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot decode image"):
        load_image(bad)
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "missing.png")


@pytest.mark.slow
def test_smol_preset_round_trip(train_data, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = load_model("smol")
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 145e6
    batch = encode(processor, [_conv(train_data)], add_generation_prompt=True)
    assert (batch["input_ids"] == processor.image_token_id).sum() == 16
    save_checkpoint(model, processor, tmp_path / "smol")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "smol")
    proc2 = AutoProcessor.from_pretrained(tmp_path / "smol")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reloaded(**encode(proc2, [_conv(train_data)], True)).logits, atol=1e-4)


def test_fast_vlm_asked_to_run_on_vllm_is_one_line():
    from trimpi.errors import ConfigError
    from trimpi.generation.registry import build_engine

    model, processor = build_tiny("fast_vlm")
    with pytest.raises(ConfigError, match="vLLM does not run FastVLM") as e:
        build_engine("vllm", model, processor)
    assert "\n" not in str(e.value)
